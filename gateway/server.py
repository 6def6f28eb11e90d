"""Run the app until SIGTERM or SIGINT, then shut down inside the platform's 10 s grace period.

On a signal the listening socket closes at once (new connections are refused), in-flight
requests get at most DRAIN_TIMEOUT more seconds before they receive a 503, then the pool
and the S3 clients close. SHUTDOWN_BUDGET caps the whole sequence even when PostgreSQL hangs.
"""

import asyncio
import logging
import signal

from aiohttp import web

from .observability import DRAIN_TIMEOUT

log = logging.getLogger("gateway")

# The platform sends SIGKILL 10 s after SIGTERM; the rest is margin for the interpreter's exit.
SHUTDOWN_BUDGET = 8.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# aiohttp's defaults (8190 bytes) reject a long URL or a large Cookie header in the parser, with a
# plain-text 400. These limits let such requests reach the handlers, which return a JSON 4xx.
# Anything larger still gets the parser's 400.
MAX_LINE_SIZE = 32 * 1024
MAX_FIELD_SIZE = 16 * 1024


async def serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=DRAIN_TIMEOUT + 1,
        max_line_size=MAX_LINE_SIZE,
        max_field_size=MAX_FIELD_SIZE,
    )
    await runner.setup()

    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("listening", extra={"host": host, "port": port})

        received = await _wait_for_signal()
        log.info("stopping", extra={"signal": received.name})
    finally:
        await _shut_down(runner)


async def _wait_for_signal() -> signal.Signals:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(signum: signal.Signals) -> None:
        if not received.done():
            received.set_result(signum)

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await received
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _shut_down(runner: web.AppRunner) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_BUDGET):
            await runner.cleanup()
    except TimeoutError:
        log.warning("shutdown did not finish in time; exiting anyway", extra={"budget_s": SHUTDOWN_BUDGET})
