"""Serve HTTP in one process, or in WEB_CONCURRENCY worker processes that share the port.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel
spreads new connections over the workers. The parent only supervises: it
forwards SIGTERM and SIGINT, restarts a worker that dies after running a
while, and gives up when one dies right after starting (a bad configuration
would otherwise restart forever).
"""

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import wait

from .errors import ConfigError
from .logs import flush_logs
from .settings import Settings

log = logging.getLogger("gateway")

STOP_DEADLINE = 9.5
# A worker that exits sooner than this after its start is not restarted: it would fail again.
MIN_WORKER_LIFETIME = 5.0


def serve(settings: Settings, host: str, port: int) -> int:
    if settings.web_concurrency == 1:
        run_worker(settings, host, port, reuse_port=False)
        return 0

    _require_free_port(host, port)
    return _Supervisor(settings, host, port).run()


def run_worker(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    """Run the app in this process until SIGTERM or SIGINT; uses uvloop when it is installed."""
    from .app import create_app
    from .server import serve as serve_app

    app = create_app(settings)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            loop_name = type(runner.get_loop()).__module__.split(".")[0]
            log.info("worker %d serving on %s:%d with %s", os.getpid(), host, port, loop_name)
            runner.run(serve_app(app, host, port, reuse_port=reuse_port))
        log.info("worker %d stopped", os.getpid())
    finally:
        # A forked worker ends with os._exit(), which skips logging's own flush at exit.
        flush_logs()


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _require_free_port(host: str, port: int) -> None:
    """Fail with one line when the port is taken, before any worker starts.

    A plain bind (without SO_REUSEPORT) also fails when another process
    listens there with SO_REUSEPORT, which the workers' own binds would not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError("PORT", f"cannot bind {host}:{port} ({error.strerror}); choose a free port") from None


class _Supervisor:
    def __init__(self, settings: Settings, host: str, port: int) -> None:
        self._settings = settings
        self._host = host
        self._port = port
        self._context = multiprocessing.get_context("fork")
        self._workers: dict[int, tuple[multiprocessing.Process, float]] = {}
        self._stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        log.info("starting %d workers on %s:%d", self._settings.web_concurrency, self._host, self._port)
        for slot in range(self._settings.web_concurrency):
            self._start(slot)

        code = 0
        while not self._stopping:
            wait([process.sentinel for process, _ in self._workers.values()], timeout=0.5)
            for slot, (process, started) in list(self._workers.items()):
                if process.is_alive() or self._stopping:
                    continue
                if time.monotonic() - started < MIN_WORKER_LIFETIME:
                    log.error("worker %d exited with code %s at start; stopping", process.pid, process.exitcode)
                    self._stopping = True
                    code = 1
                    break
                log.warning("worker %d exited with code %s; starting a new one", process.pid, process.exitcode)
                self._start(slot)

        self._stop_all()
        log.info("all workers stopped")
        return code

    def _start(self, slot: int) -> None:
        process = self._context.Process(target=self._worker_main, name=f"media-gateway-worker-{slot}", daemon=False)
        process.start()
        self._workers[slot] = (process, time.monotonic())

    def _worker_main(self) -> None:
        # The supervisor's handlers were inherited through fork; aiohttp installs the worker's own.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        run_worker(self._settings, self._host, self._port, reuse_port=True)

    def _request_stop(self, signum: int, _frame) -> None:
        if not self._stopping:
            log.info("received %s; stopping the workers", signal.Signals(signum).name)
        self._stopping = True

    def _stop_all(self) -> None:
        processes = [process for process, _ in self._workers.values()]
        for process in processes:
            if process.is_alive():
                process.terminate()

        deadline = time.monotonic() + STOP_DEADLINE
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                log.warning("worker %d did not stop in %.1f s; killing it", process.pid, STOP_DEADLINE)
                process.kill()
                process.join()
