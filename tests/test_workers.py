"""`media-gateway serve` with WEB_CONCURRENCY worker processes sharing one port."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from .servers import free_port, wait_for_http

STOP_LIMIT = 10.0
REQUESTS = 200


def _start(env: dict[str, str], port: int, log_file) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )


def _wait_for_workers(log_file, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` workers have logged that they serve; the first can serve before the others bind."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # pread leaves the file offset alone: the server process shares it and is still writing.
        size = os.fstat(log_file.fileno()).st_size
        text = os.pread(log_file.fileno(), size, 0).decode(errors="replace")
        if len(set(re.findall(r"worker (\d+) serving on", text))) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} workers started within {timeout:.0f} s")


def _request_pids(log_text: str) -> set[str]:
    return set(re.findall(r"pid=(\d+) logger=gateway\.request msg=request method=GET path=/healthz", log_text))


def test_two_workers_serve_and_stop_on_sigterm(gateway_env):
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log_file:
        process = _start({**gateway_env, "WEB_CONCURRENCY": "2"}, port, log_file)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz")
            _wait_for_workers(log_file, 2)
            # Each urlopen is a new connection, which SO_REUSEPORT hashes to one of the workers.
            statuses = [
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status for _ in range(REQUESTS)
            ]

            stop_started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(STOP_LIMIT + 5)
            stop_seconds = time.monotonic() - stop_started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

        log_file.seek(0)
        output = log_file.read()

    pids = _request_pids(output)
    assert statuses == [200] * REQUESTS
    assert len(pids) == 2, output[-2000:]
    assert str(process.pid) not in pids
    assert code == 0, output[-2000:]
    assert stop_seconds < STOP_LIMIT
    assert "Traceback" not in output


def test_taken_port_fails_with_one_line(gateway_env):
    port = free_port()
    with tempfile.TemporaryFile(mode="w+") as log_file:
        first = _start({**gateway_env, "WEB_CONCURRENCY": "2"}, port, log_file)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz")
            _wait_for_workers(log_file, 2)
            second = subprocess.run(
                [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port)],
                env={**os.environ, **gateway_env, "WEB_CONCURRENCY": "2"},
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            first.send_signal(signal.SIGTERM)
            first.wait(STOP_LIMIT + 5)

    assert second.returncode == 1
    assert f"PORT: cannot bind 127.0.0.1:{port}" in second.stderr
    assert "Traceback" not in second.stderr


def test_invalid_web_concurrency_rejected(gateway_env):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", str(free_port())],
        env={**os.environ, **gateway_env, "WEB_CONCURRENCY": "0"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 1
    assert "WEB_CONCURRENCY: 0 is out of range" in result.stderr
