"""Turn the raw tail of a media URL into a validated object key."""

import re
from urllib.parse import unquote_to_bytes

from .errors import MalformedKey

# S3's limit on a whole object key, so MEDIA_PREFIX + key must fit in it.
MAX_OBJECT_KEY_BYTES = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_BAD_ESCAPE = re.compile("%(?![0-9A-Fa-f]{2})")


def parse_key(raw_tail: str, prefix: str) -> str:
    """Percent-decode `raw_tail` once and return it as a key under `prefix`, or raise MalformedKey.

    `raw_tail` is the request path after the media route and its slash, as sent
    on the wire (still percent-encoded), without the query string.
    """
    if "%" in raw_tail and _BAD_ESCAPE.search(raw_tail):
        # unquote would keep such a % as it is, so /media/a%zz and /media/a%25zz would name one key.
        raise MalformedKey("the key has a % not followed by two hex digits; encode a literal % as %25")
    encoded = unquote_to_bytes(raw_tail)

    try:
        key = encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedKey("the key is not valid UTF-8") from None

    validate_key(key, prefix)
    return key


def validate_key(key: str, prefix: str) -> None:
    """Raise MalformedKey unless `key` (already decoded) can name an object under `prefix`, such as MEDIA_PREFIX."""
    if not key:
        raise MalformedKey("the key is empty")

    size = len(key.encode("utf-8", "surrogatepass"))
    limit = max_key_bytes(prefix)
    if size > limit:
        raise MalformedKey(
            f"the key is {size} bytes long, over the limit of {limit} bytes, because S3 object keys are "
            f"at most {MAX_OBJECT_KEY_BYTES} UTF-8 bytes including the {MAX_OBJECT_KEY_BYTES - limit}-byte prefix"
        )
    if _CONTROL.search(key):
        raise MalformedKey("the key contains a control character")
    if _SURROGATE.search(key):
        raise MalformedKey("the key is not valid UTF-8")

    for segment in key.split("/"):
        if segment == "":
            raise MalformedKey("the key has an empty segment (a leading, trailing or doubled /)")
        if segment in (".", ".."):
            raise MalformedKey(f"the key has a {segment!r} segment")


def max_key_bytes(prefix: str) -> int:
    """Return the longest key, in UTF-8 bytes, that still fits in an S3 object key after `prefix`."""
    return MAX_OBJECT_KEY_BYTES - len(prefix.encode("utf-8"))
