"""Hostile requests, sent as raw bytes to `media-gateway serve`: never a 500, never a key outside MEDIA_PREFIX."""

import asyncio
import json
import posixpath
import socket
from urllib.parse import quote, unquote, urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.errors import MalformedKey
from gateway.keys import parse_key
from gateway.sessions.cookie import issue_token

from .conftest import BUCKET, SESSION_SECRET
from .faultservers import ServedGateway, gateway_environment
from .logcheck import find_credentials

OWNER = "alice"
PREFIX = "media/"


@pytest.fixture(scope="module")
def served(postgres, moto, tmp_path_factory):
    asyncio.run(_execute(postgres.url, "TRUNCATE media_objects, media_grants"))
    log_path = tmp_path_factory.mktemp("hostile") / "gateway.log"
    gateway = ServedGateway(gateway_environment(postgres.url, moto.endpoint_url), log_path)
    yield gateway
    gateway.stop()

    assert find_credentials(gateway.logs()) == []


async def _execute(url: str, statement: str, *args) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()


def send(
    gateway: ServedGateway, request_line_target: bytes, headers: list[tuple[bytes, bytes]], method: bytes = b"GET"
) -> Answer:
    """Send one request exactly as given and read the whole response. A reset or silence fails the test."""
    lines = [method + b" " + request_line_target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=15) as connection:
        connection.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    # aiohttp's parser responds to a request it cannot parse with an HTTP/1.0 status line.
    assert raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), f"no HTTP answer: {raw[:100]!r}"
    return Answer(raw)


def _assert_signed_key_inside_prefix(url: str) -> None:
    path = unquote(urlsplit(url).path)
    bucket_prefix = f"/{BUCKET}/{PREFIX}"

    assert path.startswith(bucket_prefix), path
    assert posixpath.normpath(path) == path, path
    assert "\x00" not in path


def _decoded_key(target: bytes) -> str | None:
    """Return the key the gateway would read from this target, or None when it is malformed."""
    path = target.split(b"?", 1)[0].decode("latin-1")
    if not path.startswith("/media/"):
        return None
    try:
        return parse_key(path[len("/media/") :], PREFIX)
    except MalformedKey:
        return None


_PIECES = st.sampled_from(
    [
        "a", "b.jpg", "..", ".", "%2e%2e", "%2E%2e", "%2f", "%2F", "%5c", "\\", "%00", "%ff", "%c0%ae",
        "%e2%80%ae", "%25", "%252e%252e", "~", "%20", "é", "%C3%A9", "//", "/", ";", "%3b", "%0a", "%0d",
        "..%2f", "%2e", "%7f", "%c2%85", "@", ":", "?x", "#",
    ]
)
# Harmless pieces, so a good share of the examples name a valid key and get signed.
_SAFE_PIECES = st.sampled_from(["a", "b.jpg", "photos", "x-1", "%C3%A9t%C3%A9", "%20", "~", "%25", "@", ":", "%3b"])
_RAW_BYTES = st.binary(min_size=1, max_size=8).filter(lambda data: not any(b in data for b in b" \r\n"))


@st.composite
def targets(draw) -> bytes:
    hostile = st.one_of(_PIECES.map(str.encode), _RAW_BYTES)
    pieces = draw(st.lists(st.one_of(_SAFE_PIECES.map(str.encode), hostile), min_size=1, max_size=6))
    separator = draw(st.sampled_from([b"/", b""]))
    target = b"/media/" + separator.join(piece.replace(b" ", b"%20") for piece in pieces)
    query = draw(
        st.sampled_from([b"", b"?download", b"?download=", b"?format=json", b"?format=xml", b"?a=%ff&b=%00"])
    )
    raw_extra = st.binary(max_size=30).filter(lambda data: not any(b in data for b in b" \r\n#"))
    encoded_extra = st.text(max_size=30).map(lambda text: quote(text, safe="").encode())
    extra = draw(st.one_of(st.just(b""), encoded_extra, raw_extra))
    return target + query + (b"&download=" + extra if query else b"")


_HEADER_VALUE = st.binary(max_size=200).filter(lambda data: not any(b in data for b in b"\r\n\x00"))


@st.composite
def header_sets(draw) -> list[tuple[bytes, bytes]]:
    headers = []
    auth = draw(st.sampled_from(["none", "owner", "owner", "stranger", "garbage"]))
    if auth == "owner":
        headers.append((b"Authorization", b"Bearer " + issue_token(SESSION_SECRET.encode(), OWNER).encode()))
    elif auth == "stranger":
        headers.append((b"Cookie", b"gateway_session=" + issue_token(SESSION_SECRET.encode(), "mallory").encode()))
    elif auth == "garbage":
        headers.append((b"Authorization", b"Bearer " + draw(_HEADER_VALUE)))
    for name in draw(st.lists(st.sampled_from([b"Cookie", b"Accept", b"X-Forwarded-For", b"X-Request-ID"]))):
        headers.append((name, draw(_HEADER_VALUE).strip()))
    return headers


# Mostly GET, so most examples reach the signing path.
_METHODS = st.sampled_from([b"GET", b"GET", b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"BREW"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=targets(), headers=header_sets(), method=_METHODS)
def test_hostile_requests_never_500(served, postgres, target, headers, method):
    key = _decoded_key(target)
    if key is not None:
        asyncio.run(
            _execute(
                postgres.url,
                "INSERT INTO media_objects (key, owner_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                key,
                OWNER,
            )
        )

    answer = send(served, target, headers, method)

    event(f"status {answer.status}")
    assert answer.status < 500, (target, answer.status, answer.body[:200])
    if answer.status == 302 and "X-Amz" in answer.headers.get("location", ""):
        _assert_signed_key_inside_prefix(answer.headers["location"])
    if answer.status == 200:
        _assert_signed_key_inside_prefix(json.loads(answer.body)["url"])
    is_json = answer.headers.get("content-type", "").startswith("application/json")
    if 400 <= answer.status < 500 and is_json and method != b"HEAD":
        assert set(json.loads(answer.body)) == {"error", "message"}


def test_owner_signed_key_inside_prefix(served, postgres):
    asyncio.run(_execute(postgres.url, "INSERT INTO media_objects (key, owner_id) VALUES ('x/é.jpg', $1)", OWNER))
    token = issue_token(SESSION_SECRET.encode(), OWNER).encode()

    answer = send(served, b"/media/x/%C3%A9.jpg", [(b"Authorization", b"Bearer " + token)])

    assert answer.status == 302
    _assert_signed_key_inside_prefix(answer.headers["location"])


@pytest.mark.parametrize(
    "target",
    [b"/media/a/%2e%2e/%2e%2e/etc/passwd", b"/media/%2e%2e%2fsecret", b"/media/a%00b", b"/media/%ff%fe", b"/media//a"],
)
def test_traversal_and_bad_bytes_answer_400_json(served, target):
    answer = send(served, target, [])

    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "malformed_key"


def test_raw_dot_segments_never_signed(served, postgres):
    token = issue_token(SESSION_SECRET.encode(), OWNER).encode()

    answer = send(served, b"/media/a/../../secret.txt", [(b"Authorization", b"Bearer " + token)])

    assert answer.status == 400


def test_20kb_url_answers_json_4xx(served):
    answer = send(served, b"/media/" + b"a" * 20 * 1024, [])

    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "malformed_key"


def test_20kb_query_answers_json_4xx(served, postgres):
    asyncio.run(_execute(postgres.url, "INSERT INTO media_objects (key, owner_id) VALUES ('q.jpg', $1)", OWNER))
    token = issue_token(SESSION_SECRET.encode(), OWNER).encode()

    answer = send(served, b"/media/q.jpg?download=" + b"n" * 20 * 1024, [(b"Authorization", b"Bearer " + token)])

    assert answer.status == 400
    assert json.loads(answer.body)["error"] == "invalid_option"


def test_url_over_parser_limit_clean_4xx(served):
    answer = send(served, b"/media/" + b"a" * 40 * 1024, [])

    assert 400 <= answer.status < 500


def test_9kb_cookie_reaches_gateway(served):
    answer = send(served, b"/media/nothing.jpg", [(b"Cookie", b"gateway_session=" + b"g" * 9 * 1024)])

    assert answer.status == 401
    assert json.loads(answer.body)["error"] == "unauthenticated"


def test_oversized_header_clean_4xx(served):
    answer = send(served, b"/media/nothing.jpg", [(b"Cookie", b"c=" + b"g" * 40 * 1024)])

    assert 400 <= answer.status < 500
