"""Liveness (/healthz) and readiness (/readyz) endpoints."""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import state
from ..logs import RateLimitedLog
from ..observability import ERROR_LOG_INTERVAL

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0

_failure_log = RateLimitedLog(ERROR_LOG_INTERVAL)


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def handle_readyz(request: web.Request) -> web.Response:
    pool = request.app[state.POOL]
    s3 = request.app[state.S3].service
    bucket = request.app[state.SETTINGS].s3_bucket

    postgres, s3_check = await asyncio.gather(
        _timed("postgres", lambda: pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)),
        _timed("s3", lambda: s3.head_bucket(Bucket=bucket)),
    )

    ready = postgres["status"] == "ok" and s3_check["status"] == "ok"
    body = {"status": "ok" if ready else "fail", "checks": {"postgres": postgres, "s3": s3_check}}
    return web.json_response(body, status=200 if ready else 503, headers={"Cache-Control": "no-store"})


async def _timed(name: str, check: Callable[[], Awaitable[object]]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await check()
    except Exception as error:  # Any failure means not ready; the reason goes to the log and the body.
        latency = round((time.perf_counter() - started) * 1000, 1)
        reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
        # A platform probes readiness every few seconds, so an outage would repeat this line each time.
        _failure_log.log(
            log,
            logging.WARNING,
            f"{name}:{reason}",
            "readiness check %s failed after %.1f ms: %s",
            name,
            latency,
            reason,
            extra={"check": name},
        )
        return {"status": "fail", "latency_ms": latency, "error": reason}

    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
