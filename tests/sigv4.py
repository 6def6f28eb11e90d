"""An independent check of SigV4 query-string signatures on presigned S3 URLs.

moto's S3 server accepts any signature and ignores expiry, so the tests recompute
the signature themselves. This module follows the algorithm AWS publishes for
Signature Version 4 ("Authenticating requests: using query parameters"): a
canonical request, a string to sign, and a signing key derived through a chain of
HMAC-SHA256 steps. It deliberately uses neither botocore nor the gateway's code.
"""

import datetime
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES = 604800  # SigV4 presigned URLs live at most 7 days.
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
# RFC 3986 unreserved characters; quote() always keeps ASCII letters and digits as well.
UNRESERVED = "-_.~"


class SignatureError(AssertionError):
    """A presigned URL is not what a correct SigV4 signer would produce."""


@dataclass(frozen=True)
class PresignedRequest:
    """What a verified URL lets its holder do."""

    method: str
    host: str
    bucket: str
    key: str
    region: str
    signed_at: datetime.datetime
    expires_in: int
    overrides: dict[str, str]  # The decoded response-* parameters, such as response-content-disposition.

    @property
    def expires_at(self) -> datetime.datetime:
        return self.signed_at + datetime.timedelta(seconds=self.expires_in)


def verify_presigned_url(
    url: str,
    *,
    method: str,
    bucket: str,
    access_key: str,
    secret_key: str,
    region: str,
    max_expires: int = MAX_EXPIRES,
    now: datetime.datetime | None = None,
    # The gateway signs at the start of its stable-URL window (at most 300 s), plus 120 s of clock skew.
    max_clock_skew: int = 420,
) -> PresignedRequest:
    """Recompute the signature of `url` for `method` and raise SignatureError on any mismatch."""
    parts = urlsplit(url)
    pairs = _query_pairs(parts.query)
    params = dict(pairs)
    now = now or datetime.datetime.now(datetime.UTC)

    _expect(params.get("X-Amz-Algorithm") == ALGORITHM, f"X-Amz-Algorithm is {params.get('X-Amz-Algorithm')!r}")
    _expect(params.get("X-Amz-SignedHeaders") == "host", f"signed headers are {params.get('X-Amz-SignedHeaders')!r}")

    signed_at = _amz_date(params.get("X-Amz-Date", ""))
    day = signed_at.strftime("%Y%m%d")
    scope = f"{day}/{region}/{SERVICE}/{TERMINATOR}"
    credential = params.get("X-Amz-Credential")
    _expect(credential == f"{access_key}/{scope}", f"credential is {credential!r}, expected {access_key}/{scope}")

    expires_in = _expires(params.get("X-Amz-Expires", ""), max_expires)
    skew = abs((now - signed_at).total_seconds())
    _expect(skew <= max_clock_skew, f"X-Amz-Date {signed_at.isoformat()} is {skew:.0f} s away from now")
    _expect(now < signed_at + datetime.timedelta(seconds=expires_in), "the URL has expired")

    canonical_uri = _canonical_uri(parts.path)
    _expect(parts.path == canonical_uri, f"path {parts.path!r} is not encoded as S3 signs it ({canonical_uri!r})")

    canonical_request = "\n".join(
        [
            method,
            canonical_uri,
            _canonical_query(pairs),
            f"host:{_host(parts)}\n",
            "host",
            UNSIGNED_PAYLOAD,
        ]
    )
    string_to_sign = "\n".join(
        [ALGORITHM, params["X-Amz-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    expected = hmac.new(signing_key(secret_key, day, region), string_to_sign.encode(), hashlib.sha256).hexdigest()
    _expect(hmac.compare_digest(expected, params.get("X-Amz-Signature", "")), "the signature does not match")

    return PresignedRequest(
        method=method,
        host=_host(parts),
        bucket=bucket,
        key=_object_key(parts, bucket),
        region=region,
        signed_at=signed_at,
        expires_in=expires_in,
        overrides={name: value for name, value in pairs if name.startswith("response-")},
    )


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SignatureError(message)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    """Decode the query, insisting that each part is encoded exactly as SigV4 canonicalizes it."""
    pairs = []
    for part in query.split("&") if query else []:
        raw_name, _, raw_value = part.partition("=")
        name = unquote(raw_name, errors="strict")
        value = unquote(raw_value, errors="strict")
        _expect(_uri_encode(name) == raw_name, f"query name {raw_name!r} is not canonically encoded")
        _expect(_uri_encode(value) == raw_value, f"query value {raw_value!r} is not canonically encoded")
        pairs.append((name, value))

    names = [name for name, _ in pairs]
    _expect(len(names) == len(set(names)), f"the query repeats a parameter: {names}")
    return pairs


def _uri_encode(value: str, safe: str = "") -> str:
    return quote(value, safe=UNRESERVED + safe)


def _canonical_uri(path: str) -> str:
    """Encode each segment of the decoded path once; S3 does not normalize dot segments."""
    return quote(unquote_to_bytes(path or "/"), safe=UNRESERVED + "/")


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = sorted((_uri_encode(name), _uri_encode(value)) for name, value in pairs if name != "X-Amz-Signature")
    return "&".join(f"{name}={value}" for name, value in encoded)


def _host(parts) -> str:
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    if parts.port is None or parts.port == default_port:
        return parts.hostname
    return f"{parts.hostname}:{parts.port}"


def _amz_date(value: str) -> datetime.datetime:
    try:
        return datetime.datetime.strptime(value, AMZ_DATE_FORMAT).replace(tzinfo=datetime.UTC)
    except ValueError:
        raise SignatureError(f"X-Amz-Date {value!r} is not in the form 20260101T120000Z") from None


def _expires(value: str, max_expires: int) -> int:
    _expect(value.isdigit(), f"X-Amz-Expires {value!r} is not a whole number")
    seconds = int(value)
    _expect(1 <= seconds <= min(max_expires, MAX_EXPIRES), f"X-Amz-Expires {seconds} is not in 1..{max_expires}")
    return seconds


def signing_key(secret_key: str, day: str, region: str) -> bytes:
    """Derive the SigV4 signing key for S3 on `day` (YYYYMMDD) in `region`, for query strings and POST policies."""
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, SERVICE, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _object_key(parts, bucket: str) -> str:
    """Return the object key from a virtual-hosted (bucket.host/key) or path-style (host/bucket/key) URL."""
    path = unquote_to_bytes(parts.path).decode("utf-8")
    if parts.hostname.startswith(bucket + "."):
        return path[1:]

    _expect(path.startswith(f"/{bucket}/"), f"path {path!r} is not inside bucket {bucket!r}")
    return path[len(bucket) + 2 :]
