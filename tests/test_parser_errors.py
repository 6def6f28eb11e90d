"""Requests aiohttp's HTTP parser rejects: a JSON 400 that quotes none of the request, then a closed connection."""

import asyncio
import json
import socket
import time

import pytest

from .faultservers import ServedGateway, gateway_environment

# Each malformed request carries this marker, so a response or log line that quotes the request shows it.
MARKER = b"Zq7marker"
HOST = b"Host: 127.0.0.1\r\n"

MALFORMED_REQUESTS = {
    "bad method token": b"G@T /media/a.bin?" + MARKER + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "bad protocol": b"GET /media/a.bin?" + MARKER + b" HTXP/1.1\r\n" + HOST + b"\r\n",
    "raw byte in query": b"GET /media/a.bin?download=\xff" + MARKER + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "control byte in header name": b"GET /media/a.bin HTTP/1.1\r\n" + HOST + b"X-" + MARKER + b"\x01: a\r\n\r\n",
    "NUL in header value": b"GET /media/a.bin HTTP/1.1\r\n" + HOST + b"Cookie: s=" + MARKER + b"\x00\r\n\r\n",
    "request line over the limit": b"GET /media/" + MARKER * 5000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
    "header over the limit": b"GET /media/a.bin HTTP/1.1\r\n" + HOST + b"Cookie: s=" + MARKER * 5000 + b"\r\n\r\n",
    "TLS handshake": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + MARKER,
}


class RawAnswer:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()


def send_raw(port: int, request: bytes) -> RawAnswer:
    """Send `request` without Connection: close and read until the server closes. A timeout fails the test."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pytest.fail(f"the connection stayed open after {b''.join(chunks)[:200]!r}")
    return RawAnswer(b"".join(chunks))


async def send_raw_async(port: int, request: bytes) -> RawAnswer:
    """Do what send_raw does without blocking the event loop that runs an in-process test server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    except TimeoutError:
        pytest.fail("the connection stayed open after the response")
    finally:
        writer.close()
    return RawAnswer(raw)


# The requests over a size limit get a message that gives the limits.
TOO_LONG = ("request line over the limit", "header over the limit")


def assert_json_400(answer: RawAnswer, case: str) -> None:
    body = json.loads(answer.body)

    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert body == {"error": "bad_request", "message": body["message"]}
    if case in TOO_LONG:
        assert "is too long; the limits are 32 KiB for the request line and 16 KiB per header" in body["message"]
    else:
        assert "fix the request line and headers" in body["message"]
    assert MARKER not in answer.raw


@pytest.fixture(scope="module")
def served(postgres, moto, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("parser-errors") / "gateway.log"
    gateway = ServedGateway(gateway_environment(postgres.url, moto.endpoint_url), log_path)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def served_workers(postgres, moto, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("parser-errors-workers") / "gateway.log"
    gateway = ServedGateway(gateway_environment(postgres.url, moto.endpoint_url, WEB_CONCURRENCY="2"), log_path)
    yield gateway
    gateway.stop()


@pytest.fixture(params=["one process", "two workers"])
def served_port(request) -> int:
    """The port of `media-gateway serve`, in one process or with WEB_CONCURRENCY=2."""
    fixture = "served" if request.param == "one process" else "served_workers"
    return request.getfixturevalue(fixture).port


@pytest.mark.parametrize("case", MALFORMED_REQUESTS)
def test_malformed_request_json_400(served_port, case):
    assert_json_400(send_raw(served_port, MALFORMED_REQUESTS[case]), case)


@pytest.mark.parametrize("case", MALFORMED_REQUESTS)
async def test_in_process_server_json_400(gateway, case):
    assert_json_400(await send_raw_async(gateway.port, MALFORMED_REQUESTS[case]), case)


def test_valid_request_still_served(served_port):
    answer = send_raw(served_port, b"GET /healthz HTTP/1.1\r\n" + HOST + b"Connection: close\r\n\r\n")

    assert answer.status == 200
    assert json.loads(answer.body) == {"status": "ok"}


def test_malformed_requests_logged_once(postgres, moto, tmp_path):
    gateway = ServedGateway(gateway_environment(postgres.url, moto.endpoint_url), tmp_path / "gateway.log")
    try:
        for request_bytes in MALFORMED_REQUESTS.values():
            send_raw(gateway.port, request_bytes)
        # The last request's log line is written after its response, so give the process a moment.
        time.sleep(0.5)
    finally:
        gateway.stop()
    logs = gateway.logs()

    assert logs.count("rejected a malformed HTTP request") == 1
    assert "Traceback" not in logs
    assert MARKER.decode() not in logs
