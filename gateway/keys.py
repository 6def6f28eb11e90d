"""Turn the raw tail of a media URL into a validated object key."""

import re
from urllib.parse import unquote_to_bytes

from .errors import MalformedKey

MAX_KEY_BYTES = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_key(raw_tail: str) -> str:
    """Percent-decode `raw_tail` once and return it as a key, or raise MalformedKey.

    `raw_tail` is the request path after the media route and its slash, as sent
    on the wire (still percent-encoded), without the query string.
    """
    encoded = unquote_to_bytes(raw_tail)

    try:
        key = encoded.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedKey("the key is not valid UTF-8") from None

    validate_key(key)
    return key


def validate_key(key: str) -> None:
    """Raise MalformedKey unless `key` (already decoded) can name an object under MEDIA_PREFIX."""
    if not key:
        raise MalformedKey("the key is empty")

    size = len(key.encode("utf-8", "surrogatepass"))
    if size > MAX_KEY_BYTES:
        raise MalformedKey(f"the key is {size} bytes long; the limit is {MAX_KEY_BYTES}")
    if _CONTROL.search(key):
        raise MalformedKey("the key contains a control character")
    if _SURROGATE.search(key):
        raise MalformedKey("the key is not valid UTF-8")

    for segment in key.split("/"):
        if segment == "":
            raise MalformedKey("the key has an empty segment (a leading, trailing or doubled /)")
        if segment in (".", ".."):
            raise MalformedKey(f"the key has a {segment!r} segment")
