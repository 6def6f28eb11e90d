"""GET and HEAD on MEDIA_ROUTE/{key}: authenticate, look up, decide, sign, respond."""

import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

from aiohttp import web

from .. import state
from ..accel import accel_redirect_headers
from ..accept import accepts
from ..disposition import content_disposition
from ..errors import BackendUnavailable, MalformedKey
from ..keys import parse_key
from ..observability import record_decision, record_error
from ..ownership import MediaObject
from ..responses import MEDIA_VARY, json_error, media_headers, private_max_age
from ..s3 import SignedUrl
from ..sessions.cookie import bearer_token

log = logging.getLogger(__name__)

ALLOWED_METHODS = "GET, HEAD"
MAX_DOWNLOAD_NAME_BYTES = 1024
# The query parameters this handler reads.
OPTION_NAMES = ("download", "format")
# The browser may reuse a redirect until this many seconds before its URL expires.
MAX_AGE_MARGIN = 60


async def handle_media(request: web.Request) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request.method)

    settings = request.app[state.SETTINGS]
    accel_location = settings.accel_redirect_location
    outcome = await authorize(request, settings.media_route, same_origin=accel_location is not None)
    if isinstance(outcome, web.Response):
        return outcome

    if accel_location is not None:
        headers = {**signed_url_headers(outcome.signed), **accel_redirect_headers(outcome.signed, accel_location)}
        return web.Response(status=200, headers=headers)
    return _allowed(outcome.signed, outcome.as_json)


@dataclass(frozen=True)
class Allowed:
    signed: SignedUrl
    as_json: bool


async def authorize(
    request: web.Request, route: str, *, same_origin: bool, login_redirect: bool = True
) -> Allowed | web.Response:
    """Decide on the key after `route` and sign it, or return the error response to send.

    With `same_origin` the presigned URL never reaches the client, so `format=json` is
    rejected and the Accept header is not consulted. Without `login_redirect` an anonymous
    caller always gets 401, never a redirect to LOGIN_URL.
    """
    try:
        key = parse_key(_raw_key(request, route), request.app[state.SETTINGS].media_prefix)
        options = _read_options(request, same_origin)
    except MalformedKey as error:
        record_decision(request, "malformed")
        return json_error(400, "malformed_key", f"Invalid media key: {error}.", media_headers())
    except _BadOption as error:
        return json_error(400, "invalid_option", str(error), media_headers())

    try:
        user_id = await request.app[state.SESSIONS].user_id(request)
        request[state.USER_ID] = user_id
        media = await request.app[state.OWNERSHIP].find(key, user_id)
    except BackendUnavailable as error:
        record_error(request, "postgres_unavailable", error.reason)
        return _unavailable()

    if media is None or not media.readable_by(user_id):
        if user_id is None:
            record_decision(request, "anonymous")
            return _unauthenticated(request, login_redirect)
        record_decision(request, "denied")
        return json_error(
            403, "forbidden", "You may not read this object, or it does not exist.", media_headers()
        )

    record_decision(request, "allowed")
    try:
        signed = await request.app[state.PRESIGNER].presign(
            key,
            request.method,
            disposition=_disposition(media, options.download),
            content_type=media.content_type,
        )
    except BackendUnavailable as error:
        record_error(request, "s3_signing", error.reason)
        return _unavailable("The signing credentials are not available; try again in a few seconds.")
    return Allowed(signed=signed, as_json=options.json)


class _BadOption(Exception):
    pass


class _Options:
    def __init__(self, download: str | None, json: bool) -> None:
        self.download = download  # None: inline; "": attachment with the default name.
        self.json = json


def _raw_key(request: web.Request, route: str) -> str:
    """Return the still-encoded path after `route` + '/', so the key is decoded exactly once."""
    raw_path = request.raw_path
    if raw_path.startswith("/"):
        # The usual origin-form target: the path ends at the query (a fragment is never sent).
        path = raw_path.partition("?")[0]
    else:
        # An absolute-form target (http://host/path?query).
        path = urlsplit(raw_path).path

    if path == route:
        return ""
    if not path.startswith(route + "/"):
        raise MalformedKey(f"the path does not start with {route}/")
    return path[len(route) + 1 :]


def _read_options(request: web.Request, same_origin: bool) -> _Options:
    if "?" not in request.raw_path and not same_origin:
        # No query string, so only the Accept header can ask for JSON.
        return _Options(download=None, json=_accepts_json_only(request.headers.get("Accept", "")))

    _require_utf8_options(urlsplit(request.raw_path).query)
    query = request.query

    download = query.get("download")
    if download is not None and len(download.encode("utf-8", "surrogatepass")) > MAX_DOWNLOAD_NAME_BYTES:
        raise _BadOption(f"The download name is longer than {MAX_DOWNLOAD_NAME_BYTES} bytes; send a shorter name.")

    output_format = query.get("format")
    if output_format not in (None, "json"):
        raise _BadOption(f"Unknown format {output_format[:50]!r}; use format=json or leave it out.")
    if same_origin and output_format == "json":
        raise _BadOption("format=json is not available here: this server sends the file itself; leave format out.")
    if same_origin:
        return _Options(download=download, json=False)

    wants_json = output_format == "json" or _accepts_json_only(request.headers.get("Accept", ""))
    return _Options(download=download, json=wants_json)


def _accepts_json_only(accept: str) -> bool:
    return accepts(accept, "application/json") and not accepts(accept, "text/html")


def _require_utf8_options(raw_query: str) -> None:
    """Raise _BadOption when an option's value is not valid UTF-8 once percent-decoded.

    request.query (yarl) replaces such bytes with U+FFFD, which would then be signed into
    Content-Disposition. So this reads the raw query string with yarl's rules: fields are
    split on "&", "+" is a space, and a field without "=" has an empty value.
    """
    for field in raw_query.split("&"):
        raw_name, _, raw_value = field.partition("=")
        name = _decode_query_part(raw_name)
        if name in OPTION_NAMES and _decode_query_part(raw_value) is None:
            raise _BadOption(
                f"The value of {name} is not valid UTF-8 once percent-decoded; "
                "send it as percent-encoded UTF-8, such as %C3%A9 for é."
            )


def _decode_query_part(raw: str) -> str | None:
    """Return a query field's name or value decoded as yarl does it, or None when it is not valid UTF-8."""
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeError:
        return None


def _disposition(media: MediaObject, download: str | None) -> str | None:
    if download is None:
        return content_disposition("inline", media.filename) if media.filename else None

    name = download or media.filename or media.key.rsplit("/", 1)[-1]
    return content_disposition("attachment", name)


def signed_url_headers(signed: SignedUrl) -> dict[str, str]:
    """Return the cache headers for a response that is valid only as long as `signed` is."""
    remaining = signed.expires - math.ceil(time.time())
    margin = max(1, min(MAX_AGE_MARGIN, remaining // 10))
    headers = media_headers(private_max_age(remaining - margin))
    # The Accept header picks JSON or the redirect, so a browser cache must not reuse one for the other.
    headers["Vary"] = f"{MEDIA_VARY}, Accept"
    return headers


def _allowed(signed: SignedUrl, as_json: bool) -> web.Response:
    headers = signed_url_headers(signed)

    if as_json:
        expires_at = signed.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"url": signed.url, "expires_at": expires_at}, headers=headers)

    headers["Location"] = signed.url
    return web.Response(status=302, headers=headers)


def _unauthenticated(request: web.Request, login_redirect: bool) -> web.Response:
    login_url = request.app[state.SETTINGS].login_url
    if login_redirect and login_url and accepts(request.headers.get("Accept", ""), "text/html"):
        separator = "&" if "?" in login_url else "?"
        location = f"{login_url}{separator}next={quote(_next_path(request), safe='/')}"
        return web.Response(status=302, headers={**media_headers(), "Location": location})

    challenge = 'Bearer error="invalid_token"' if bearer_token(request) else "Bearer"
    return json_error(
        401,
        "unauthenticated",
        "Sign in to read this object: send the session cookie or an Authorization: Bearer token.",
        {**media_headers(), "WWW-Authenticate": challenge},
    )


def _next_path(request: web.Request) -> str:
    """Return the request's path and query as a relative URL with exactly one leading slash."""
    target = urlsplit(request.raw_path)
    path = "/" + target.path.lstrip("/")
    return f"{path}?{target.query}" if target.query else path


def method_not_allowed(method: str) -> web.Response:
    headers = {**media_headers(), "Allow": ALLOWED_METHODS}
    return json_error(405, "method_not_allowed", f"{method[:20]} is not allowed here; use GET or HEAD.", headers)


def _unavailable(message: str = "The media database is not answering; try again in a few seconds.") -> web.Response:
    headers = {**media_headers(), "Retry-After": "2"}
    return json_error(503, "unavailable", message, headers)
