"""The log stream of `media-gateway serve` as a log drain receives it: one parseable line per record."""

import asyncio
import json
import re
import time
import urllib.request

import asyncpg
import pytest

from gateway.sessions.cookie import issue_token

from .conftest import SESSION_SECRET
from .faultservers import ServedGateway, gateway_environment
from .logcheck import find_credentials

_VALUE = r'("([^"\\]|\\.)*"|\S+)'
LOGFMT_LINE = re.compile(rf"^time=\S+ level=[a-z]+ pid=\d+ logger=\S+ msg={_VALUE}( [a-z_]+={_VALUE})*$")


async def _register(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO media_objects (key, owner_id) VALUES ('logs.jpg', 'alice') ON CONFLICT DO NOTHING"
        )
    finally:
        await connection.close()


def _run_and_stop(postgres, moto, tmp_path, **env: str) -> list[str]:
    asyncio.run(_register(postgres.url))
    gateway = ServedGateway(gateway_environment(postgres.url, moto.endpoint_url, **env), tmp_path / "gateway.log")
    try:
        token = issue_token(SESSION_SECRET.encode(), "alice")
        request = urllib.request.Request(
            gateway.url + "/media/logs.jpg",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "drain-test-1", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        gateway.terminate()
        deadline = time.monotonic() + 10
        while gateway.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gateway.stop()
    return gateway.logs().splitlines()


@pytest.mark.faults
def test_json_logs_one_object_per_line(postgres, moto, tmp_path):
    lines = _run_and_stop(postgres, moto, tmp_path, LOG_FORMAT="json")
    documents = [json.loads(line) for line in lines]
    requests = [document for document in documents if document["msg"] == "request"]
    messages = [document["msg"] for document in documents]

    assert len(requests) == 2
    assert requests[1]["request_id"] == "drain-test-1"
    assert requests[1]["status"] == 200
    assert requests[1]["user"] == "alice"
    assert "listening" in messages
    assert "stopping" in messages
    assert "media-gateway stopped" in messages
    assert find_credentials("\n".join(lines)) == []


@pytest.mark.faults
def test_logfmt_logs_one_record_per_line(postgres, moto, tmp_path):
    lines = _run_and_stop(postgres, moto, tmp_path)
    request_lines = [line for line in lines if " msg=request " in line]

    assert [line for line in lines if not LOGFMT_LINE.match(line)] == []
    assert len(request_lines) == 2
    assert "request_id=drain-test-1" in request_lines[1]
    assert "user=alice" in request_lines[1]
    assert find_credentials("\n".join(lines)) == []
