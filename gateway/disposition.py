"""Content-Disposition values per RFC 6266, with RFC 5987 encoding for any name."""

from urllib.parse import quote

# RFC 5987 attr-char: these stay literal, every other byte is percent-encoded.
_ATTR_CHARS = "!#$&+-.^_`|~"


def content_disposition(kind: str, filename: str) -> str:
    """Build `kind; filename="fallback"; filename*=UTF-8''encoded`.

    The fallback keeps printable ASCII only, so no quote, backslash, percent
    sign or line break can end the parameter or inject a header. The encoded
    form carries the exact name and decodes back to it.
    """
    fallback = "".join(_fallback_char(char) for char in filename)
    encoded = quote(filename, safe=_ATTR_CHARS)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def _fallback_char(char: str) -> str:
    if " " <= char <= "~" and char not in '"\\%':
        return char
    return "_"
