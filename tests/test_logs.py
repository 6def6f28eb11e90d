"""Logs: one request line per request, and never a token, secret or signature, in-process and from `serve`."""

import base64
import logging
import re
import sys
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from cryptography.fernet import Fernet

from .conftest import SECRET_KEY, SESSION_SECRET
from .logcheck import raw_record_text
from .processes import KILL_AFTER_SECONDS, ServeProcess, process_env

OWNER = "42"
OTHER = "7"
REQUEST_ID_PREFIX = "log-test-"
SIGNED_ANSWERS = 7
REQUEST_LINE = re.compile(
    r"method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d{3}) user=(?P<user>\S+)"
    r" duration_ms=(?P<duration>\d+(\.\d+)?) request_id=(?P<request_id>\S+)"
)


@dataclass
class Traffic:
    """What the client sent and received, so the logs can be searched for every credential in it."""

    secrets: set[str] = field(default_factory=set)
    signatures: list[str] = field(default_factory=list)
    expected_lines: list[dict[str, str]] = field(default_factory=list)


def flip_one_byte(token: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[30] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


def signature_from(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]


@pytest.fixture
async def objects(db, s3):
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, visibility, filename) VALUES "
        "('private/clip.mp4', $1, 'private', 'clip.mp4'), ('public/logo.png', $1, 'public', NULL)",
        OWNER,
    )


async def send_traffic(session: aiohttp.ClientSession, base_url: str, token) -> Traffic:
    """Send valid and invalid credentials, redirects, JSON responses and errors, each with its own request id."""
    traffic = Traffic()
    valid = token(OWNER)
    other = token(OTHER)
    tampered = flip_one_byte(valid)
    wrong_key = token(OWNER, secret=Fernet.generate_key().decode())
    traffic.secrets |= {valid, other, tampered, wrong_key}

    requests = [
        ("GET", "/media/private/clip.mp4", {"Authorization": f"Bearer {valid}"}, 302, OWNER),
        ("GET", "/media/private/clip.mp4", {"Cookie": f"gateway_session={valid}"}, 302, OWNER),
        ("HEAD", "/media/private/clip.mp4", {"Authorization": f"Bearer {valid}"}, 302, OWNER),
        ("GET", "/media/private/clip.mp4?download", {"Authorization": f"Bearer {valid}"}, 302, OWNER),
        ("GET", "/media/private/clip.mp4?format=json", {"Authorization": f"Bearer {valid}"}, 200, OWNER),
        (
            "GET",
            "/media/private/clip.mp4",
            {"Authorization": f"Bearer {valid}", "Accept": "application/json"},
            200,
            OWNER,
        ),
        ("GET", "/media/public/logo.png", {}, 302, "-"),
        ("GET", "/media/private/clip.mp4", {"Authorization": f"Bearer {tampered}"}, 401, "-"),
        ("GET", "/media/private/clip.mp4", {"Cookie": f"gateway_session={wrong_key}"}, 401, "-"),
        ("GET", "/media/private/clip.mp4", {"Authorization": "Bearer not-a-token"}, 401, "-"),
        ("GET", "/media/private/clip.mp4", {"Authorization": f"Bearer {other}"}, 403, OTHER),
        ("GET", "/media/a//b", {"Authorization": f"Bearer {valid}"}, 400, "-"),
        ("POST", "/media/private/clip.mp4", {"Authorization": f"Bearer {valid}"}, 405, "-"),
        ("GET", "/readyz", {}, 200, "-"),
        ("GET", "/healthz", {}, 200, "-"),
    ]

    for number, (method, path, headers, status, user) in enumerate(requests):
        request_id = f"{REQUEST_ID_PREFIX}{number}"
        headers = {**headers, "X-Request-ID": request_id}
        async with session.request(method, base_url + path, headers=headers, allow_redirects=False) as response:
            assert response.status == status, (method, path, await response.text())
            if response.status == 302 and "Location" in response.headers:
                location = response.headers["Location"]
                if "X-Amz-Signature=" in location:
                    traffic.signatures.append(signature_from(location))
            if response.status == 200 and path.startswith("/media/"):
                traffic.signatures.append(signature_from((await response.json())["url"]))

        traffic.expected_lines.append(
            {
                "method": method,
                "path": path.split("?", 1)[0],
                "status": str(status),
                "user": user,
                "request_id": request_id,
            }
        )
    return traffic


def assert_no_credentials(text: str, traffic: Traffic) -> None:
    for secret in traffic.secrets:
        assert secret not in text
    for signature in traffic.signatures:
        assert signature not in text
    assert SESSION_SECRET not in text
    assert SECRET_KEY not in text


def request_lines(text: str) -> list[dict[str, str]]:
    """Return the request lines of the traffic above, leaving out the start-up probes of /healthz."""
    lines = [match.groupdict() for match in REQUEST_LINE.finditer(text)]
    return [line for line in lines if line["request_id"].startswith(REQUEST_ID_PREFIX)]


@dataclass
class Captured:
    text: str
    messages: list[str]
    traffic: Traffic


class TestInProcess:
    @pytest.fixture
    async def captured(self, caplog, start_gateway, objects, token) -> Captured:
        """Run the traffic with every logger at DEBUG, and return what caplog recorded meanwhile."""
        caplog.set_level(logging.DEBUG)
        logging.getLogger("gateway").debug("capture started")
        client = await start_gateway()
        base_url = str(client.make_url("")).rstrip("/")

        async with aiohttp.ClientSession() as session:
            traffic = await send_traffic(session, base_url, token)

        # This fixture runs in the setup phase, and caplog.text only shows the current phase.
        records = caplog.get_records("setup")
        # The request line keeps its fields on the record, so each line is shown with them.
        text = "\n".join(f"{caplog.handler.format(record)} {raw_record_text(record)}" for record in records)
        messages = [raw_record_text(record) for record in records if record.name == "gateway.request"]
        return Captured(text, messages, traffic)

    async def test_signatures_were_collected(self, captured):
        """Guards the checks below: they only mean something if there were signatures to leak."""
        assert len(captured.traffic.signatures) == SIGNED_ANSWERS

    async def test_debug_records_were_captured(self, captured):
        """Guards the checks below: they only mean something if DEBUG records reached caplog."""
        assert "DEBUG    gateway:" in captured.text

    async def test_no_token_in_log(self, captured):
        for secret in captured.traffic.secrets:
            assert secret not in captured.text

    async def test_no_signature_in_log(self, captured):
        for signature in captured.traffic.signatures:
            assert signature not in captured.text

    async def test_no_session_secret_in_log(self, captured):
        assert SESSION_SECRET not in captured.text

    async def test_no_aws_secret_in_log(self, captured):
        assert SECRET_KEY not in captured.text

    async def test_no_signature_of_any_kind(self, captured):
        """The gateway's own S3 calls (the readiness check) are signed too."""
        assert re.search(r"Signature[=:]\s*[0-9a-f]{64}", captured.text) is None

    async def test_one_request_line_per_request(self, captured):
        assert len(captured.messages) == len(captured.traffic.expected_lines)

    async def test_request_lines_match_requests(self, captured):
        lines = request_lines("\n".join(captured.messages))

        for line, expected in zip(lines, captured.traffic.expected_lines, strict=True):
            for name, value in expected.items():
                assert line[name] == value, (name, line, expected)

    async def test_request_line_has_duration(self, captured):
        for line in request_lines("\n".join(captured.messages)):
            assert float(line["duration"]) >= 0

    async def test_request_id_echoed(self, start_gateway, objects):
        client = await start_gateway()

        response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
        assert response.headers["X-Request-ID"] == "abc-123"

    async def test_request_id_made_when_absent(self, caplog, start_gateway, objects):
        caplog.set_level(logging.INFO)
        client = await start_gateway()

        response = await client.get("/healthz")
        text = "\n".join(raw_record_text(record) for record in caplog.records)
        line = REQUEST_LINE.search(text).groupdict()

        assert line["request_id"] == response.headers["X-Request-ID"]

    async def test_unsafe_request_id_replaced(self, caplog, start_gateway, objects):
        caplog.set_level(logging.INFO)
        client = await start_gateway()

        await client.get("/healthz", headers={"X-Request-ID": "evil id\tinjected=1"})
        text = "\n".join(raw_record_text(record) for record in caplog.records)

        assert "injected" not in text


class TestServeProcess:
    @pytest.fixture
    async def captured(self, gateway_env, tmp_path, objects, token):
        env = {**process_env(gateway_env, tmp_path), "LOG_LEVEL": "DEBUG"}
        process = ServeProcess(env, tmp_path)
        try:
            async with aiohttp.ClientSession() as session:
                traffic = await send_traffic(session, process.url, token)
            process.terminate()
            await process.wait_for_exit(KILL_AFTER_SECONDS)
        finally:
            process.kill()
        return process.stdout + process.stderr, traffic

    async def test_log_was_written(self, captured):
        output, _ = captured
        assert "media-gateway stopped" in output

    async def test_no_credentials_in_output(self, captured):
        output, traffic = captured
        assert_no_credentials(output, traffic)

    async def test_no_signature_of_any_kind(self, captured):
        output, _ = captured
        assert re.search(r"Signature[=:]\s*[0-9a-f]{64}", output) is None

    async def test_one_request_line_per_request(self, captured):
        output, traffic = captured
        assert len(request_lines(output)) == len(traffic.expected_lines)

    async def test_request_lines_match_requests(self, captured):
        output, traffic = captured
        for line, expected in zip(request_lines(output), traffic.expected_lines, strict=True):
            for name, value in expected.items():
                assert line[name] == value, (name, line, expected)

    async def test_one_record_per_line(self, captured):
        """No record spills a multi-line value (a traceback, botocore's "Signature:" dump) over several lines."""
        output, _ = captured
        for line in output.splitlines():
            assert not line.startswith((" ", "\t", "Traceback")), line
            assert not re.fullmatch(r"[0-9a-f]{64}", line), line


def _parser_error_record() -> logging.LogRecord:
    from aiohttp.http_exceptions import LineTooLong

    try:
        raise LineTooLong("gateway_session=gAAAAAsecret-cookie-bytes", "16384")
    except LineTooLong:
        return logging.LogRecord(
            "aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (), sys.exc_info()
        )


def test_malformed_request_logged_as_one_warning():
    from gateway.logs import LogfmtFormatter, MalformedRequestFilter

    record = _parser_error_record()
    kept = MalformedRequestFilter().filter(record)
    line = LogfmtFormatter().format(record)

    assert kept
    assert record.levelname == "WARNING"
    assert "\n" not in line
    assert "reason=LineTooLong" in line
    assert "secret-cookie-bytes" not in line


def test_malformed_request_repeats_suppressed():
    from gateway.logs import MalformedRequestFilter

    now = [0.0]
    log_filter = MalformedRequestFilter(interval=10.0, clock=lambda: now[0])
    first = log_filter.filter(_parser_error_record())
    second = log_filter.filter(_parser_error_record())
    now[0] = 11.0
    third_record = _parser_error_record()
    third = log_filter.filter(third_record)

    assert first
    assert not second
    assert third
    assert third_record.suppressed == 1


def test_other_server_errors_keep_traceback():
    from gateway.logs import MalformedRequestFilter

    try:
        raise RuntimeError("handler bug")
    except RuntimeError:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error", (), sys.exc_info())

    assert MalformedRequestFilter().filter(record)
    assert record.exc_info is not None
