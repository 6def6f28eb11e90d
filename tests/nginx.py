"""A real nginx for the tests, configured from the shipped deploy/nginx.conf."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DEPLOY_CONF = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"
MODES = ("redirect", "accel", "auth_request")

# What the shipped file listens on and proxies to; the tests replace each exactly once.
SHIPPED_GATEWAY = "server 127.0.0.1:8080;"
SHIPPED_APP = "server 127.0.0.1:8000;"
SHIPPED_LISTEN = "listen 80;"
MEDIA_LOCATION = "    location /media/ {"


class NginxError(Exception):
    pass


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(path, os.X_OK)), None
    )


def render_site(mode: str, gateway_port: int, app_port: int, listen_port: int) -> str:
    """Return deploy/nginx.conf for `mode`, uncommented the way its comments tell an operator to."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")

    text = DEPLOY_CONF.read_text()
    text = _replace_once(text, SHIPPED_GATEWAY, f"server 127.0.0.1:{gateway_port};")
    text = _replace_once(text, SHIPPED_APP, f"server 127.0.0.1:{app_port};")
    text = _replace_once(text, SHIPPED_LISTEN, f"listen 127.0.0.1:{listen_port};")

    if mode in ("accel", "auth_request"):
        text = _uncomment_section(text, "accel mode")
    if mode == "auth_request":
        text = _delete_location(text, MEDIA_LOCATION)
        text = _uncomment_section(text, "auth_request mode")
    return text


def _replace_once(text: str, old: str, new: str) -> str:
    count = text.count(old)
    if count != 1:
        raise NginxError(f"deploy/nginx.conf has {count} copies of {old!r}; the tests expect exactly one")
    return text.replace(old, new)


def _uncomment_section(text: str, name: str) -> str:
    """Uncomment the directives between the section's markers; prose lines ('# ' and a word) stay comments."""
    lines = text.split("\n")
    start = _marker_line(lines, f"# --- {name}: uncomment from here")
    end = _marker_line(lines, f"# --- {name}: to here ---")

    for number in range(start + 1, end):
        match = re.match(r"^(\s*)#(?! \S)(.*)$", lines[number])
        if match:
            lines[number] = (match.group(1) + match.group(2)).rstrip()
    return "\n".join(lines)


def _delete_location(text: str, opening: str) -> str:
    lines = text.split("\n")
    start = _marker_line(lines, opening.strip())
    indent = opening[: len(opening) - len(opening.lstrip())]
    end = lines.index(indent + "}", start)
    return "\n".join(lines[:start] + lines[end + 1 :])


def _marker_line(lines: list[str], marker: str) -> int:
    matches = [number for number, line in enumerate(lines) if line.strip().startswith(marker)]
    if len(matches) != 1:
        raise NginxError(f"deploy/nginx.conf has {len(matches)} lines starting with {marker!r}; expected one")
    return matches[0]


def main_config(directory: Path, site: Path) -> str:
    """Wrap a site file in a main config whose pid, logs and temporary files all live in `directory`."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
daemon off;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} info;

events {{
    worker_connections 256;
}}

http {{
    log_format with_request_id '$request_id $status "$request"';
    access_log {directory / "access.log"} with_request_id;
{temp_paths}
    include {site};
}}
"""


class Nginx:
    """nginx in the foreground on 127.0.0.1:`port`, stopped with SIGQUIT (a graceful stop)."""

    def __init__(self, binary: str, directory: Path, site_text: str, port: int) -> None:
        self.port = port
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

        site = directory / "site.conf"
        site.write_text(site_text)
        self.config = directory / "nginx.conf"
        self.config.write_text(main_config(directory, site))

        self._command = [binary, "-p", str(directory), "-c", str(self.config), "-e", str(directory / "error.log")]
        self._process: subprocess.Popen | None = None

    def check(self) -> None:
        """Run `nginx -t` on the config; raise NginxError with nginx's output when it is rejected."""
        result = subprocess.run([*self._command, "-t"], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise NginxError(f"nginx -t rejected the config:\n{result.stderr}{self.error_log()}")

    def start(self, timeout: float = 10.0) -> None:
        self._process = subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _accepts_connections(self.port):
            if self._process.poll() is not None:
                raise NginxError(f"nginx exited with {self._process.returncode}:\n{self.error_log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise NginxError(f"nginx did not listen on port {self.port} within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGQUIT)
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)

    def access_log_lines(self, timeout: float = 5.0) -> list[str]:
        """Return the access log's lines, waiting for the first one: nginx writes it after the response."""
        path = self.directory / "access.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > 0:
                return path.read_text().splitlines()
            time.sleep(0.05)
        return []

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text() if path.exists() else ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
