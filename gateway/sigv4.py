"""AWS Signature Version 4 query signing (presigned URLs) for S3 GET and HEAD.

The output is byte for byte the URL that botocore's S3SigV4QueryAuth produces
for the same inputs and time; the property tests compare the two. The URL's
scheme, host and bucket part are taken from one URL that botocore signs at
start-up, so endpoint resolution (regions, partitions, FIPS, dual-stack,
custom endpoints, addressing style) stays botocore's. That URL is then signed
again here and compared: on any difference the caller keeps botocore.
"""

import calendar
import hashlib
import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from botocore.credentials import Credentials, RefreshableCredentials

log = logging.getLogger(__name__)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
SERVICE = "s3"
METHODS = ("GET", "HEAD")
# Unreserved characters of RFC 3986: the only ones SigV4 leaves unencoded in query parameters.
_QUERY_SAFE = "-._~"
_PATH_SAFE = "/~"
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SIGNING_KEYS_KEPT = 4
_PROBE_KEY = "media-gateway-signing-probe"


class QuerySigner:
    """Signs S3 object URLs under one endpoint and bucket with static credentials."""

    def __init__(
        self,
        base_url: str,
        region: str,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
    ) -> None:
        """`base_url` is the URL up to the object key: `https://bucket.s3.amazonaws.com/` or `http://host:9000/bucket/`."""
        parts = urlsplit(base_url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or not parts.path.endswith("/"):
            raise ValueError(f"invalid base URL {base_url!r}; expected scheme://host[:port]/[bucket/]")

        self._base_url = base_url
        self._path_prefix = parts.path
        self._host = _host_header(base_url)
        self._region = region
        self._access_key = access_key
        self._secret_key = secret_key
        self._signing_keys: dict[tuple[str, str], bytes] = {}

        # The token goes into every URL and every canonical query, so encode it once.
        self._encoded_token = "" if session_token is None else _encode(session_token)
        self._token_param = "" if session_token is None else "&X-Amz-Security-Token=" + self._encoded_token
        # Stable URLs share a signing time, so most requests reuse the previous request's dated parts.
        self._last_dated: _Dated | None = None

    def presign(
        self,
        key: str,
        method: str,
        expires: int,
        signed_at: int,
        response_params: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Return the presigned URL for `method` on object `key`, dated `signed_at` (Unix seconds, UTC).

        `response_params` are S3 response overrides such as
        ("response-content-disposition", value), in the order botocore
        serializes them (cache-control, content-disposition, content-encoding,
        content-language, content-type, expires).
        """
        if method not in METHODS:
            raise ValueError(f"method {method!r} cannot be signed here; use GET or HEAD")

        dated = self._dated(signed_at, expires)
        path = self._path_prefix + quote(key, safe=_PATH_SAFE)

        encoded_params = [(_encode(name), _encode(value)) for name, value in response_params]
        operation_query = "".join(f"{name}={value}&" for name, value in encoded_params)
        query = operation_query + dated.auth_query

        # The canonical query sorts the (name, value) pairs. The response-* overrides sort after every
        # X-Amz-* name, so the sorted auth part, kept in _Dated, comes first without a merge.
        encoded_params.sort()
        if not encoded_params:
            canonical_query = dated.canonical_auth_query
        elif encoded_params[0] > dated.auth_pairs[-1]:
            canonical_query = dated.canonical_auth_query + "&" + _join_pairs(encoded_params)
        else:
            canonical_query = _join_pairs(sorted(dated.auth_pairs + encoded_params))

        canonical_request = f"{method}\n{path}\n{canonical_query}\nhost:{self._host}\n\nhost\n{UNSIGNED_PAYLOAD}"
        string_to_sign = dated.string_to_sign_head + hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
        signature = hmac.digest(dated.signing_key, string_to_sign.encode("utf-8"), "sha256").hex()
        return f"{self._base_url}{path[len(self._path_prefix) :]}?{query}&X-Amz-Signature={signature}"

    def _dated(self, signed_at: int, expires: int) -> "_Dated":
        """Return the parts that depend only on the signing time and lifetime; the last ones are kept."""
        dated = self._last_dated
        if dated is not None and dated.signed_at == signed_at and dated.expires == expires:
            return dated

        timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
        date = timestamp[:8]
        scope = f"{date}/{self._region}/{SERVICE}/aws4_request"
        auth_params = [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{_encode(self._access_key)}%2F{_encode(scope)}"),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", "host"),
        ]
        auth_query = "&".join(f"{name}={value}" for name, value in auth_params) + self._token_param
        if self._token_param:
            auth_params.append(("X-Amz-Security-Token", self._encoded_token))
        auth_params.sort()

        dated = _Dated(
            signed_at=signed_at,
            expires=expires,
            auth_query=auth_query,
            auth_pairs=auth_params,
            canonical_auth_query=_join_pairs(auth_params),
            string_to_sign_head=f"{ALGORITHM}\n{timestamp}\n{scope}\n",
            signing_key=self._signing_key(date),
        )
        self._last_dated = dated
        return dated

    def _signing_key(self, date: str) -> bytes:
        cache_key = (date, self._region)
        signing_key = self._signing_keys.get(cache_key)
        if signing_key is None:
            signing_key = _derive_signing_key(self._secret_key, date, self._region)
            if len(self._signing_keys) >= _SIGNING_KEYS_KEPT:
                self._signing_keys.clear()
            self._signing_keys[cache_key] = signing_key
        return signing_key


@dataclass(frozen=True)
class _Dated:
    """The parts of a presigned URL fixed by its signing time and lifetime."""

    signed_at: int
    expires: int
    auth_query: str  # The X-Amz-* parameters as the URL carries them.
    auth_pairs: list[tuple[str, str]]  # The same as encoded (name, value) pairs, sorted.
    canonical_auth_query: str  # The same, sorted by name for the canonical request.
    string_to_sign_head: str  # Algorithm, timestamp and scope lines.
    signing_key: bytes


async def signer_like_botocore(client, credentials, bucket: str, key_prefix: str, ttl: int) -> QuerySigner | None:
    """Build a QuerySigner that reproduces `client`'s presigned URLs, or return None to keep botocore.

    `client` is the aiobotocore S3 client that signs for browsers and
    `credentials` the credentials it uses. Refreshing credentials (IAM roles,
    SSO, credential processes) return None: their keys change while running.
    """
    if isinstance(credentials, RefreshableCredentials) or not isinstance(credentials, Credentials):
        log.info(
            "credentials of type %s refresh while running; presigning through botocore", type(credentials).__name__
        )
        return None

    probe_key = key_prefix + _PROBE_KEY
    plain = await client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": probe_key}, ExpiresIn=ttl
    )
    with_overrides = await client.generate_presigned_url(
        "head_object",
        Params={
            "Bucket": bucket,
            "Key": probe_key,
            "ResponseContentDisposition": 'attachment; filename="a b.txt"',
            "ResponseContentType": "text/plain; charset=utf-8",
        },
        ExpiresIn=ttl,
    )

    try:
        signer = _signer_from_probe(plain, probe_key, credentials)
    except ValueError as error:
        log.warning("botocore's presigned URL has an unexpected form (%s); presigning through botocore", error)
        return None

    checks = (
        (plain, "GET", ()),
        (
            with_overrides,
            "HEAD",
            (
                ("response-content-disposition", 'attachment; filename="a b.txt"'),
                ("response-content-type", "text/plain; charset=utf-8"),
            ),
        ),
    )
    for expected, method, response_params in checks:
        signed_at = _signed_at(expected)
        if signer.presign(probe_key, method, ttl, signed_at, response_params) != expected:
            log.warning("the fast signer differs from botocore for this endpoint; presigning through botocore")
            return None
    return signer


def _signer_from_probe(url: str, probe_key: str, credentials) -> QuerySigner:
    parts = urlsplit(url)
    quoted_key = quote(probe_key, safe=_PATH_SAFE)
    if not parts.path.endswith("/" + quoted_key):
        raise ValueError("the object key is not at the end of the path")

    query = dict(parse_qsl(parts.query))
    credential_scope = query.get("X-Amz-Credential", "").split("/")
    if len(credential_scope) < 5 or credential_scope[-2:] != [SERVICE, "aws4_request"]:
        raise ValueError("no S3 credential scope in the query")

    base_url = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(quoted_key)]}"
    return QuerySigner(
        base_url,
        region=credential_scope[-3],
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
    )


def _signed_at(url: str) -> int:
    timestamp = dict(parse_qsl(urlsplit(url).query))["X-Amz-Date"]
    return calendar.timegm(time.strptime(timestamp, "%Y%m%dT%H%M%SZ"))


def _derive_signing_key(secret_key: str, date: str, region: str) -> bytes:
    key = hmac.digest(("AWS4" + secret_key).encode("utf-8"), date.encode("utf-8"), "sha256")
    key = hmac.digest(key, region.encode("utf-8"), "sha256")
    key = hmac.digest(key, SERVICE.encode("utf-8"), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


def _encode(value: str) -> str:
    return quote(value, safe=_QUERY_SAFE)


def _join_pairs(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{name}={value}" for name, value in pairs)


def _host_header(url: str) -> str:
    """Return the Host value SigV4 signs: lowercase, IPv6 in brackets, no default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host
