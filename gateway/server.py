"""Run the app until SIGTERM or SIGINT, then shut down inside the platform's 10 s grace period.

On a signal the listening socket closes at once (new connections are refused), in-flight
requests get at most DRAIN_TIMEOUT more seconds before they receive a 503, then the pool
and the S3 clients close. SHUTDOWN_BUDGET caps the whole sequence even when PostgreSQL hangs.
"""

import asyncio
import ctypes
import gc
import logging
import signal

from aiohttp import web

from .observability import DRAIN_TIMEOUT
from .protocol import GatewayRunner

log = logging.getLogger("gateway")

# The platform sends SIGKILL 10 s after SIGTERM; the rest is margin for the interpreter's exit.
SHUTDOWN_BUDGET = 8.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(app: web.Application, host: str, port: int, reuse_port: bool = False) -> None:
    # Handlers go in before start-up, which may take seconds while PostgreSQL is down, and stay until
    # the end, so a signal at any point starts (or repeats) a graceful stop rather than killing the process.
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _on_signal, received, signum)

    runner = GatewayRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=DRAIN_TIMEOUT + 1,
    )
    try:
        await runner.setup()
        try:
            # With SO_REUSEPORT, several worker processes listen on the same port.
            site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
            await site.start()
            settle_heap()
            log.info("listening", extra={"host": host, "port": port})

            stop_signal = await received
            log.info("stopping", extra={"signal": stop_signal.name})
        finally:
            await _shut_down(runner)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def settle_heap() -> None:
    """Collect start-up garbage, return free heap pages to the OS and exempt the survivors from the GC.

    gc.freeze() moves every object alive now into a permanent generation, so the full collections
    that run under load no longer walk the libraries' start-up objects and pause for less time.
    glibc's malloc_trim() releases the free pages left by parsing botocore's service models, about
    2 MB on CPython 3.11 with botocore 1.43. Other C libraries have no such call, so they skip it.
    """
    gc.collect()
    gc.freeze()
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    malloc_trim(0)


def _on_signal(received: asyncio.Future, signum: signal.Signals) -> None:
    if received.done():
        log.info("already stopping", extra={"signal": signum.name})
        return
    received.set_result(signum)


async def _shut_down(runner: web.AppRunner) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_BUDGET):
            await runner.cleanup()
    except TimeoutError:
        log.warning("shutdown did not finish in time; exiting anyway", extra={"budget_s": SHUTDOWN_BUDGET})
