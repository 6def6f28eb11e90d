"""JSON error responses and the cache headers every media response carries."""

from aiohttp import web

# A redirect depends on the caller, so no shared cache may reuse it for another caller.
MEDIA_VARY = "Cookie, Authorization"
NO_STORE = "private, no-store"


def json_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def media_headers(cache_control: str = NO_STORE) -> dict[str, str]:
    return {"Cache-Control": cache_control, "Vary": MEDIA_VARY}


def private_max_age(seconds: int) -> str:
    if seconds <= 0:
        return NO_STORE
    return f"private, max-age={seconds}"
