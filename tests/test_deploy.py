"""The deployment files in deploy/ and the Procfile, and the stop behaviour they rely on."""

import configparser
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .servers import free_port, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "media-gateway.service"
SHIPPED_EXECUTABLE = "/opt/media-gateway/venv/bin/media-gateway"
SHIPPED_ENVIRONMENT_FILE = "/etc/media-gateway/environment"
STOP_LIMIT_SECONDS = 10  # The platform and the unit both send SIGKILL 10 s after SIGTERM.


def _unit_service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_systemd_unit_passes_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed; run apt-get install -y systemd (.ci/run does)")

    executable = Path(sys.executable).parent / "media-gateway"
    environment_file = tmp_path / "environment"
    environment_file.write_text("")
    text = UNIT.read_text()
    assert text.count(SHIPPED_EXECUTABLE) == 1
    assert text.count(f"EnvironmentFile={SHIPPED_ENVIRONMENT_FILE}") == 1

    unit = tmp_path / "media-gateway.service"
    unit.write_text(
        text.replace(SHIPPED_EXECUTABLE, str(executable)).replace(SHIPPED_ENVIRONMENT_FILE, str(environment_file))
    )
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_systemd_unit_stops_within_limit():
    service = _unit_service_section()

    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) <= STOP_LIMIT_SECONDS


def test_systemd_unit_serves_on_loopback():
    service = _unit_service_section()

    assert service["ExecStart"].split()[1:] == ["serve", "--host", "127.0.0.1", "--port", "8080"]


def test_procfile_migrates_on_release():
    lines = (ROOT / "Procfile").read_text().splitlines()

    assert "release: media-gateway migrate" in lines
    assert "web: media-gateway serve --port $PORT" in lines


def test_serve_exits_cleanly_on_sigterm(gateway_env):
    port = free_port()
    executable = Path(sys.executable).parent / "media-gateway"
    process = subprocess.Popen(
        [str(executable), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env={**gateway_env, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=STOP_LIMIT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)

    assert process.returncode == 0, output
    assert "media-gateway stopped" in output
