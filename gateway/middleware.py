"""Request-wide concerns in one middleware: proxy headers, request ids, the request line, deadline, JSON errors."""

import asyncio
import functools
import ipaddress
import itertools
import logging
import os
import re
import secrets
import time

from aiohttp import web

from . import observability, state
from .errors import BackendUnavailable
from .logs import current_request_id
from .observability import record_error
from .responses import json_error, media_headers

log = logging.getLogger("gateway.request")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_FORWARDED_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


@web.middleware
async def gateway_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Handle every request-wide concern in one coroutine, since each layer costs CPU per request.

    In order: trusted X-Forwarded-* headers, the request id, the per-request deadline, JSON
    bodies for errors, the request line and metrics.
    """
    app = request.app
    settings = app[state.SETTINGS]
    headers = request.headers
    if "X-Forwarded-For" in headers or "X-Forwarded-Proto" in headers or "X-Forwarded-Host" in headers:
        request = forwarded_request(request, settings.forwarded_allow_ips)
    request_id = _request_id(headers.get("X-Request-ID"))
    request[state.REQUEST_ID] = request_id

    started = time.perf_counter()
    response: web.StreamResponse | None = None
    status = 500
    context = current_request_id.set(request_id)
    deadlines = app[observability.DEADLINES]
    deadline = deadlines.start(settings.request_timeout)
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        if not deadline.interrupted():
            raise
        response = observability.timed_out(request, settings.request_timeout)
    except web.HTTPException as error:
        if error.status < 400:
            # A raised redirect is sent by aiohttp itself, so it gets the header here.
            status = error.status
            error.headers["X-Request-ID"] = request_id
            raise
        response = _http_error(error)
    except BackendUnavailable as error:
        record_error(request, f"{error.backend}_unavailable", error.reason)
        retry_headers = {**media_headers(), "Retry-After": "2"}
        message = f"{error.backend} is not responding; try again in a few seconds."
        response = json_error(503, "unavailable", message, retry_headers)
    except Exception as error:
        record_error(request, "internal", f"{type(error).__name__}: {error}"[:200], level=logging.ERROR, exc_info=True)
        response = json_error(500, "internal_error", "The gateway failed to handle this request; it has been logged.")
    finally:
        deadlines.finish(deadline)
        if response is not None:
            status = response.status
        observability.log_request(request, status, time.perf_counter() - started)
        current_request_id.reset(context)

    response.headers["X-Request-ID"] = request_id
    return response


def forwarded_request(request: web.Request, trusted) -> web.Request:
    """Apply X-Forwarded-For/Proto/Host only when the direct peer is a trusted proxy."""
    if not _is_trusted(request.remote, trusted):
        return request

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

    return request.clone(**changes) if changes else request


def _request_id(sent: str | None) -> str:
    """Reuse a well-formed X-Request-ID (Heroku's router sets one) or make one."""
    if sent and _REQUEST_ID.match(sent):
        return sent
    return _request_ids.next()


class _RequestIds:
    """32 hex digits: 16 random ones chosen once per process, then a 16-digit counter.

    Ids only have to be unique, not secret, so one call to the random source per process
    replaces one per request. A forked worker draws its own prefix.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = _RequestIds()


def _http_error(error: web.HTTPException) -> web.Response:
    """Give a router error (404, 405, 413, ...) a JSON body, keeping the headers a client needs."""
    headers = {name: value for name, value in error.headers.items() if name in ("Allow", "WWW-Authenticate")}
    return json_error(error.status, _error_code(error.status), f"{error.reason}.", headers)


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
