"""An S3 front that checks SigV4 query signatures, because moto's server accepts any signature.

It runs at the address that S3_PUBLIC_ENDPOINT_URL names. Like real S3, it returns
403 for a request whose URL or Host header was changed after signing, and 400 for
one that also carries an Authorization header. A valid request is forwarded to moto and
moto's response is sent back.
"""

import datetime
import hashlib
import hmac
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

FORWARDED_REQUEST_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")
RETURNED_HEADERS = (
    "Cache-Control",
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Content-Disposition",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)


class SignatureMismatch(Exception):
    pass


def verify_presigned(method: str, host: str, raw_target: str, secret_key: str, now: datetime.datetime) -> None:
    """Raise SignatureMismatch unless `raw_target` carries a valid, unexpired SigV4 signature for `host`."""
    parts = urlsplit(raw_target)
    params = parse_qsl(parts.query, keep_blank_values=True)
    values = dict(params)

    if values.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256":
        raise SignatureMismatch("not a SigV4 presigned URL")
    if values.get("X-Amz-SignedHeaders") != "host":
        raise SignatureMismatch(f"unexpected signed headers {values.get('X-Amz-SignedHeaders')!r}")

    amz_date = values["X-Amz-Date"]
    signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    if now > signed_at + datetime.timedelta(seconds=int(values["X-Amz-Expires"])):
        raise SignatureMismatch("the URL has expired")

    _, date, region, service, _ = values["X-Amz-Credential"].split("/")
    scope = f"{date}/{region}/{service}/aws4_request"

    canonical_query = "&".join(
        f"{_encode(name)}={_encode(value)}" for name, value in sorted(params) if name != "X-Amz-Signature"
    )
    canonical_path = quote(unquote(parts.path), safe="/-_.~")
    canonical_request = "\n".join(
        [method, canonical_path, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    if not hmac.compare_digest(expected, values.get("X-Amz-Signature", "")):
        raise SignatureMismatch("the signature does not match the request")


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def checking_s3_front(upstream_url: str, secret_key: str) -> web.Application:
    """Return an app that verifies each request's presigned signature, then forwards it to `upstream_url`."""

    async def forward(request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="InvalidArgument: Only one auth mechanism allowed")
        try:
            verify_presigned(
                request.method, request.host, request.raw_path, secret_key, datetime.datetime.now(datetime.UTC)
            )
        except (SignatureMismatch, KeyError, ValueError) as error:
            return web.Response(status=403, text=f"SignatureDoesNotMatch: {error}")

        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        url = upstream_url + request.raw_path
        async with aiohttp.ClientSession() as session:
            async with session.request(request.method, URL(url, encoded=True), headers=headers) as response:
                body = await response.read()
                returned = {name: response.headers[name] for name in RETURNED_HEADERS if name in response.headers}

        if request.method == "HEAD":
            return web.Response(status=response.status, headers=returned)
        returned.pop("Content-Length", None)
        return web.Response(status=response.status, headers=returned, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
