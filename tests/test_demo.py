"""`media-gateway demo` as a user runs it: a subprocess with nothing configured, its printed links followed."""

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources

import pytest

from .servers import free_port


@pytest.fixture(scope="module")
def demo():
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AWS_", "S3_", "DATABASE_", "SESSION_", "MEDIA_", "LOGIN_"))
    }
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    port = free_port()

    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = _read_until(process, "Follow them with a cookie jar", timeout=60)
    yield process, output

    if process.poll() is None:
        process.kill()
        process.wait()
    process.stdout.close()


def _read_until(process: subprocess.Popen, marker: str, timeout: float) -> str:
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if marker in line:
            # The banner goes out just before the server binds.
            time.sleep(1)
            return "".join(lines)
    raise AssertionError("the demo did not print its links:\n" + "".join(lines))


def _link(output: str, description: str) -> str:
    match = re.search(r"(http://\S+)\s+\(" + re.escape(description), output)
    assert match, f"no link for {description!r} in:\n{output}"
    return match.group(1)


def _login_link(output: str, user: str) -> str:
    match = re.search(rf"^\s+{user}\s+(http://\S+)$", output, re.MULTILINE)
    assert match, f"no login link for {user} in:\n{output}"
    return match.group(1)


def _browser() -> urllib.request.OpenerDirector:
    """An opener with a cookie jar that follows redirects, as curl -L -b -c does."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _sign_in(browser, output: str, user: str) -> None:
    with browser.open(_login_link(output, user)) as response:
        assert response.status == 200


def _status(browser, url: str) -> int:
    try:
        with browser.open(url) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_demo_prints_links(demo):
    _, output = demo
    assert "/demo/login/alice" in output
    assert "/media/" in output


def test_demo_owner_gets_video_bytes(demo):
    _, output = demo
    browser = _browser()
    _sign_in(browser, output, "alice")

    with browser.open(_link(output, "private video")) as response:
        body = response.read()

    assert body == resources.files("gateway").joinpath("demo_assets/intro.mp4").read_bytes()


def test_demo_other_user_gets_403(demo):
    _, output = demo
    browser = _browser()
    _sign_in(browser, output, "bob")

    assert _status(browser, _link(output, "private video")) == 403


def test_demo_shared_document_reaches_bob(demo):
    _, output = demo
    browser = _browser()
    _sign_in(browser, output, "bob")

    with browser.open(_link(output, "document")) as response:
        body = response.read()

    assert body.startswith(b"%PDF-1.4")


def test_demo_public_image_needs_no_login(demo):
    _, output = demo

    with _browser().open(_link(output, "public image")) as response:
        body = response.read()

    assert body.startswith(b"\x89PNG")


def test_demo_anonymous_video_is_401(demo):
    _, output = demo

    assert _status(_browser(), _link(output, "private video")) == 401


def test_demo_login_redirects_to_next(demo):
    _, output = demo
    browser = _browser()
    video = _link(output, "private video")
    path = video.split("/", 3)[3]

    with browser.open(_login_link(output, "alice") + "?next=/" + path) as response:
        body = response.read()

    assert body[4:8] == b"ftyp"


def test_demo_unknown_user_is_404(demo):
    _, output = demo

    assert _status(_browser(), _login_link(output, "alice").replace("alice", "mallory")) == 404


def test_demo_login_redirect_has_request_id(demo):
    _, output = demo

    request = urllib.request.Request(_login_link(output, "alice"))
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.build_opener(_NoRedirect).open(request)

    raised.value.close()
    assert raised.value.code == 302
    assert re.fullmatch(r"[0-9a-f]{32}", raised.value.headers["X-Request-ID"])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_demo_malformed_request_gets_json_400(demo):
    _, output = demo
    origin = urllib.parse.urlsplit(_login_link(output, "alice"))

    with socket.create_connection((origin.hostname, origin.port), timeout=5) as connection:
        connection.sendall(b"GARBAGE / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk

    head, _, body = answer.partition(b"\r\n\r\n")
    # aiohttp responds with HTTP/1.0 when it could not read the request's version.
    assert head.split(b"\r\n")[0].split(b" ")[1] == b"400"
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"] == "bad_request"
    assert b"GARBAGE" not in body


def test_demo_long_url_reaches_handler(demo):
    _, output = demo
    origin = _login_link(output, "alice").split("/demo/")[0]

    # Over aiohttp's default limit of 8190 bytes for the request line, which `serve` raises.
    with pytest.raises(urllib.error.HTTPError) as raised:
        _browser().open(f"{origin}/media/{'a' * 10_000}")

    body = raised.value.read()
    raised.value.close()
    assert raised.value.code == 400
    assert json.loads(body)["error"] == "malformed_key"


def test_demo_stops_on_sigterm(demo):
    process, _ = demo
    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=10) == 0
