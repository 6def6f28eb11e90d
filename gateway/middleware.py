"""Request-wide concerns: request ids, trusted proxy headers, the request log line, JSON errors."""

import functools
import ipaddress
import logging
import re
import time
import uuid

from aiohttp import web

from . import state
from .responses import json_error

log = logging.getLogger("gateway.request")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FORWARDED_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
MAX_LOGGED_PATH = 300


@web.middleware
async def request_id_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Reuse a well-formed X-Request-ID (Heroku's router sets one) or make one; echo it back."""
    request_id = request.headers.get("X-Request-ID", "")
    if not _REQUEST_ID.match(request_id):
        request_id = uuid.uuid4().hex
    request[state.REQUEST_ID] = request_id

    response = await handler(request)
    response.headers["X-Request-ID"] = request_id
    return response


@web.middleware
async def forwarded_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Apply X-Forwarded-For/Proto/Host only when the direct peer is a trusted proxy."""
    trusted = request.app[state.SETTINGS].forwarded_allow_ips
    if not _is_trusted(request.remote, trusted):
        return await handler(request)

    changes = {}
    client = _forwarded_client(request.headers.get("X-Forwarded-For", ""), trusted)
    if client is not None:
        changes["remote"] = client

    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if proto in ("http", "https"):
        changes["scheme"] = proto

    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if host and _FORWARDED_HOST.fullmatch(host):
        changes["host"] = host

    return await handler(request.clone(**changes) if changes else request)


@web.middleware
async def access_log_middleware(request: web.Request, handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        if log.isEnabledFor(logging.INFO):
            _log_request(request, status, (time.perf_counter() - started) * 1000)


def _log_request(request: web.Request, status: int, duration_ms: float) -> None:
    path = request.raw_path.split("?", 1)[0]
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "..."
    log.info(
        "method=%s path=%s status=%d user=%s duration_ms=%.1f request_id=%s remote=%s",
        request.method[:16],
        _quote(path),
        status,
        _quote(request.get(state.USER_ID) or "-"),
        duration_ms,
        request.get(state.REQUEST_ID, "-"),
        request.remote or "-",
    )


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Give router errors a JSON body, and turn an unexpected exception into a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {name: value for name, value in error.headers.items() if name in ("Allow", "WWW-Authenticate")}
        return json_error(error.status, _error_code(error.status), f"{error.reason}.", headers)
    except Exception:
        log.exception("unhandled error in request %s", request.get(state.REQUEST_ID))
        return json_error(500, "internal_error", "The gateway failed to handle this request; it has been logged.")


# Peers are few (the platform's routers), so the result is kept per address instead of parsing it per request.
@functools.lru_cache(maxsize=1024)
def _is_trusted(address: str | None, trusted) -> bool:
    if trusted is None:
        return True
    ip = _ip(address)
    return ip is not None and any(ip in network for network in trusted)


def _forwarded_client(header: str, trusted) -> str | None:
    """Walk X-Forwarded-For from the right and return the first address that is not a trusted proxy."""
    addresses = [part.strip() for part in header.split(",") if part.strip()]
    for address in reversed(addresses):
        if _ip(address) is None:
            return None
        if not _is_trusted(address, trusted):
            return address
    return addresses[0] if addresses else None


def _ip(address: str | None):
    if not address:
        return None
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _error_code(status: int) -> str:
    return {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "bad_request")


def _quote(value: str) -> str:
    if _PRINTABLE.fullmatch(value) and '"' not in value:
        return value
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
