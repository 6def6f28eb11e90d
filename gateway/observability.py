"""The per-request deadline, the request log line, metrics and rate-limited error logs."""

import asyncio
import logging
import time

from aiohttp import web

from . import state
from .deadlines import Deadlines
from .logs import RateLimitedLog, direct_handler
from .metrics import METRICS, Metrics, handle_metrics
from .responses import json_error, media_headers

log = logging.getLogger("gateway.request")
error_log = logging.getLogger("gateway.errors")

DECISION = web.RequestKey("decision", str)
ERROR_KIND = web.RequestKey("error_kind", str)
DEADLINES = web.AppKey("deadlines", Deadlines)
ERROR_LOG = web.AppKey("error_log", RateLimitedLog)

MAX_LOGGED_PATH = 300
# The same error (kind and reason) is logged at most once per this many seconds. The request
# lines still show every occurrence, and the next error line counts the ones left out.
ERROR_LOG_INTERVAL = 10.0
# On SIGTERM every request still running gets at most this long before it receives a 503,
# so draining ends well inside the 10 s the platform allows before SIGKILL.
DRAIN_TIMEOUT = 4.0

# Used by apps built without setup(), such as a bare app in a test.
_fallback_error_log = RateLimitedLog(ERROR_LOG_INTERVAL)


def setup(app: web.Application) -> None:
    """Register the metrics, the /metrics route and the shutdown hook on `app`."""
    app[METRICS] = Metrics()
    app[DEADLINES] = Deadlines()
    app[ERROR_LOG] = RateLimitedLog(ERROR_LOG_INTERVAL)
    app.on_startup.append(_watch_pool)
    app.on_shutdown.append(_shorten_deadlines)
    app.router.add_get("/metrics", handle_metrics)


def record_decision(request: web.Request, decision: str) -> None:
    request[DECISION] = decision
    if METRICS in request.app:
        request.app[METRICS].count_decision(decision)


def record_error(
    request: web.Request, kind: str, reason: str, level: int = logging.WARNING, exc_info: bool = False
) -> None:
    """Count a handled error, tag the request line with it and log it, rate-limited per kind and reason."""
    request[ERROR_KIND] = kind
    if METRICS in request.app:
        request.app[METRICS].count_error(kind)

    request.app.get(ERROR_LOG, _fallback_error_log).log(
        error_log,
        level,
        f"{kind}:{reason}",
        "%s: %s",
        kind,
        reason,
        extra={"kind": kind, "request_id": request.get(state.REQUEST_ID), "user": request.get(state.USER_ID)},
        exc_info=exc_info,
    )


def log_request(request: web.Request, status: int, duration: float) -> None:
    """Count the request by route and status and write its line."""
    metrics: Metrics | None = request.app.get(METRICS)
    if metrics is not None:
        metrics.count(_route_label(request), request.method, status, duration)
    if not log.isEnabledFor(logging.INFO):
        return

    fields = _request_fields(request, status, duration)
    handler = direct_handler(log)
    if handler is None:
        log.info("request", extra=fields)
    else:
        handler.write_line(handler.formatter.format_line(time.time(), "INFO", log.name, "request", fields))


def timed_out(request: web.Request, seconds: float) -> web.Response:
    """Return the 503 for a request that ran past REQUEST_TIMEOUT, well before the router's 30 s cut-off."""
    record_error(request, "deadline", f"no answer within {seconds} s")
    headers = {**media_headers(), "Retry-After": "2"}
    return json_error(503, "timeout", "The gateway could not answer in time; try again in a few seconds.", headers)


async def _shorten_deadlines(app: web.Application) -> None:
    deadlines = app[DEADLINES]
    logging.getLogger("gateway").info(
        "draining in-flight requests", extra={"in_flight": len(deadlines), "drain_timeout_s": DRAIN_TIMEOUT}
    )
    deadlines.shorten(asyncio.get_running_loop().time() + DRAIN_TIMEOUT)


async def _watch_pool(app: web.Application) -> None:
    if state.POOL in app:
        app[METRICS].watch_pool(app[state.POOL])


def _route_label(request: web.Request) -> str:
    """Return the route's pattern (bounded in number), never the raw path."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


def _request_fields(request: web.Request, status: int, duration: float) -> dict[str, object]:
    path = request.raw_path.split("?", 1)[0]
    if len(path) > MAX_LOGGED_PATH:
        path = path[:MAX_LOGGED_PATH] + "..."

    fields: dict[str, object] = {
        "method": request.method[:16],
        "path": path,
        "status": status,
        "user": request.get(state.USER_ID),
        "duration_ms": round(duration * 1000, 1),
        "request_id": request.get(state.REQUEST_ID),
        "remote": request.remote,
    }
    if DECISION in request:
        fields["decision"] = request[DECISION]
    if ERROR_KIND in request:
        fields["error"] = request[ERROR_KIND]
    return fields
