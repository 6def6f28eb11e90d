"""`media-gateway serve` as a real subprocess, for tests of signals, ports and log output."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .servers import free_port, wait_for_http

SCRIPT = Path(sys.executable).with_name("media-gateway")
# The platform sends SIGKILL this many seconds after SIGTERM.
KILL_AFTER_SECONDS = 10


def process_env(gateway_env: dict[str, str], home: Path) -> dict[str, str]:
    """Return a clean environment, so nothing from the developer's shell (or ~/.aws) leaks into a command."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return {**base, **gateway_env}


class ServeProcess:
    """`media-gateway serve` on a free local port, with stdout and stderr captured to files."""

    def __init__(self, env: dict[str, str], log_dir: Path, use_port_variable: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = log_dir / "serve.stdout"
        self.stderr_path = log_dir / "serve.stderr"

        command = [str(SCRIPT), "serve", "--host", "127.0.0.1"]
        if use_port_variable:
            env = {**env, "PORT": str(self.port)}
        else:
            command += ["--port", str(self.port)]

        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        try:
            wait_for_http(self.url + "/healthz")
        except OSError:
            self.kill()
            raise

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait_for_exit(self, timeout: float) -> int | None:
        """Return the exit code, or None when the process still runs after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")
