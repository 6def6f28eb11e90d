"""PostgreSQL stopped, hung, behind PgBouncer or reached over SSL; SIGTERM with requests in flight.

Each test uses a PostgreSQL server of its module's own, so stopping it leaves the shared fixtures alone.
"""

import asyncio
import signal
import socket
import time

import aiohttp
import asyncpg
import pytest

from gateway.admin import schema_sql

from .faultservers import PgBouncer, PostgresServer, ServedGateway, gateway_environment
from .helpers import bearer, metric_value, scrape
from .logcheck import find_credentials

pytestmark = pytest.mark.faults

USERS = [f"user{number}" for number in range(5)]


async def _prepare(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(schema_sql())
        await connection.execute("TRUNCATE media_objects, media_grants")
        for number in range(20):
            await connection.execute(
                "INSERT INTO media_objects (key, owner_id) VALUES ($1, $2)",
                f"f/{number}.jpg",
                USERS[number % len(USERS)],
            )
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def own_postgres():
    server = PostgresServer()
    asyncio.run(_prepare(server.url))
    yield server
    server.destroy()


@pytest.fixture
def running_postgres(own_postgres):
    """The module's server, running and not paused whatever the previous test left."""
    own_postgres.resume()
    if not (own_postgres.data / "postmaster.pid").exists():
        own_postgres.start()
    yield own_postgres
    own_postgres.resume()
    if not (own_postgres.data / "postmaster.pid").exists():
        own_postgres.start()


async def _get(client, key: str, user: str | None = None):
    headers = bearer(client.test_token(user)) if user else {}
    return await client.get(f"/media/{key}", headers=headers, allow_redirects=False)


@pytest.fixture
def start_on(start_gateway, token):
    async def start(database_url: str, **overrides: str):
        client = await start_gateway(DATABASE_URL=database_url, **overrides)
        client.test_token = token
        return client

    return start


async def test_stopped_postgres_503_then_recovers(running_postgres, start_on):
    client = await start_on(running_postgres.url)
    warm = await _get(client, "f/0.jpg", "user0")
    stop_requested = asyncio.Event()
    answers: list[int] = []

    async def traffic():
        # Requests keep running while the server stops.
        while not stop_requested.is_set():
            answers.append((await _get(client, "f/1.jpg", "user1")).status)
            await asyncio.sleep(0.02)

    running = [asyncio.ensure_future(traffic()) for _ in range(4)]
    await asyncio.sleep(0.3)
    await asyncio.to_thread(running_postgres.stop)

    started = time.monotonic()
    during = await _get(client, "f/0.jpg", "user0")
    during_seconds = time.monotonic() - started
    during_body = await during.json()
    ready = await client.get("/readyz")
    ready_body = await ready.json()
    health = await client.get("/healthz")
    stop_requested.set()
    await asyncio.gather(*running)

    await asyncio.to_thread(running_postgres.start)
    after = await _get(client, "f/0.jpg", "user0")
    exposition = await scrape(client)

    assert warm.status == 302
    assert during.status == 503
    assert during_body["error"] == "unavailable"
    assert during_seconds < 5
    assert ready.status == 503
    assert ready_body["checks"]["postgres"]["status"] == "fail"
    assert health.status == 200
    assert set(answers) <= {302, 503}
    assert after.status == 302
    assert metric_value(exposition, "gateway_errors_total", kind="postgres_unavailable") >= 1


async def test_hung_postgres_503_within_deadline(running_postgres, start_on):
    client = await start_on(running_postgres.url)
    warm = await _get(client, "f/0.jpg", "user0")

    running_postgres.pause()
    try:
        started = time.monotonic()
        responses = await asyncio.gather(*(_get(client, f"f/{number}.jpg", "user0") for number in range(12)))
        slowest = time.monotonic() - started
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    finally:
        running_postgres.resume()
    after = await _get(client, "f/0.jpg", "user0")

    assert warm.status == 302
    assert {response.status for response in responses} == {503}
    assert slowest < 10
    assert health.status == 200
    assert ready.status == 503
    assert after.status == 302


async def test_hung_postgres_logs_rate_limited(running_postgres, start_on, caplog):
    caplog.set_level("INFO", logger="gateway")
    client = await start_on(running_postgres.url)
    await _get(client, "f/0.jpg", "user0")

    running_postgres.pause()
    try:
        responses = [await _get(client, "f/0.jpg", "user0") for _ in range(3)]
    finally:
        running_postgres.resume()
    errors = [record for record in caplog.records if record.name == "gateway.errors"]
    request_lines = [record for record in caplog.records if record.name == "gateway.request"]

    assert [response.status for response in responses] == [503, 503, 503]
    assert len(errors) == 1
    assert errors[0].kind == "postgres_unavailable"
    assert errors[0].request_id == responses[0].headers["X-Request-ID"]
    assert [getattr(record, "error", None) for record in request_lines[1:]] == ["postgres_unavailable"] * 3


async def test_pgbouncer_transaction_mode_concurrent(running_postgres, start_on):
    bouncer = PgBouncer(running_postgres.port, pool_mode="transaction", pool_size=2)
    try:
        client = await start_on(bouncer.url, DATABASE_STATEMENT_CACHE_SIZE="0")
        cases = [(f"f/{number % 20}.jpg", USERS[number % 3]) for number in range(300)]

        responses = await asyncio.gather(*(_get(client, key, user) for key, user in cases))
        statuses = [response.status for response in responses]
        expected = [302 if USERS[int(key[2:-4]) % len(USERS)] == user else 403 for key, user in cases]
        exposition = await scrape(client)
        log = bouncer.log()
    finally:
        bouncer.stop()

    assert statuses == expected
    assert metric_value(exposition, "gateway_errors_total", kind="postgres_unavailable") is None
    assert "prepared statement" not in log


async def test_pgbouncer_statement_cache_gives_503(running_postgres, start_on, caplog):
    caplog.set_level("INFO", logger="gateway")
    bouncer = PgBouncer(running_postgres.port, pool_mode="transaction", pool_size=2)
    holder = None
    try:
        # No decision cache, so no listening connection takes a server connection of its own.
        client = await start_on(bouncer.url, DECISION_CACHE_SIZE="0")
        # The first lookup prepares its named statement through one server connection.
        first = await _get(client, "f/0.jpg", "user0")
        # PgBouncer hands out idle server connections last in, first out, so this transaction takes
        # the one that has the prepared statement, and the gateway's next lookup runs on the other.
        holder = await asyncpg.connect(bouncer.url, statement_cache_size=0)
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1")
        second = await _get(client, "f/1.jpg", "user0")
    finally:
        if holder is not None:
            await holder.close()
        bouncer.stop()
    reasons = [record.getMessage() for record in caplog.records if record.name == "gateway.errors"]

    assert first.status == 302
    assert second.status == 503
    assert any("DATABASE_STATEMENT_CACHE_SIZE=0" in reason for reason in reasons)


async def _connection_ssl_states(url: str) -> list[bool]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.application_name = 'media-gateway'"
        )
    finally:
        await connection.close()
    return [row["ssl"] for row in rows]


@pytest.fixture(scope="module")
def ssl_postgres():
    server = PostgresServer(ssl=True)
    asyncio.run(_prepare(server.url))
    yield server
    server.destroy()


async def test_sslmode_require_encrypts_without_verifying(ssl_postgres, start_on):
    url = f"postgres://postgres@127.0.0.1:{ssl_postgres.port}/postgres?sslmode=require"
    client = await start_on(url)

    response = await _get(client, "f/0.jpg", "user0")
    states = await _connection_ssl_states(ssl_postgres.url + "?sslmode=disable")

    assert response.status == 302
    assert states != []
    assert all(states)


async def test_sslmode_verify_full_rejects_self_signed(ssl_postgres, start_on):
    url = f"postgres://postgres@127.0.0.1:{ssl_postgres.port}/postgres?sslmode=verify-full"
    client = await start_on(url)

    response = await _get(client, "f/0.jpg", "user0")

    assert response.status == 503


async def test_sslmode_require_fails_without_server_ssl(running_postgres, start_on):
    client = await start_on(running_postgres.url + "?sslmode=require")

    response = await _get(client, "f/0.jpg", "user0")

    assert response.status == 503


def _served(postgres_server: PostgresServer, moto, tmp_path) -> ServedGateway:
    return ServedGateway(gateway_environment(postgres_server.url, moto.endpoint_url), tmp_path / "gateway.log")


def _refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


async def _wait_for_exit(gateway: ServedGateway, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while gateway.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return gateway.process.poll()


async def test_sigterm_finishes_slow_request(running_postgres, moto, tmp_path, token):
    gateway = _served(running_postgres, moto, tmp_path)
    locker = await asyncpg.connect(running_postgres.url)
    try:
        await locker.execute("BEGIN")
        await locker.execute("LOCK TABLE media_objects IN ACCESS EXCLUSIVE MODE")
        async with aiohttp.ClientSession() as session:
            slow = asyncio.ensure_future(
                session.get(gateway.url + "/media/f/0.jpg", headers=bearer(token("user0")), allow_redirects=False)
            )
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            gateway.terminate()
            await asyncio.sleep(0.3)
            refused = _refuses_connections(gateway.port)
            # A second SIGTERM must not cut the drain short.
            gateway.terminate()
            await asyncio.sleep(0.5)
            await locker.execute("ROLLBACK")
            response = await slow
            exit_code = await _wait_for_exit(gateway, 10)
            exit_seconds = time.monotonic() - signalled
    finally:
        await locker.close()
        gateway.stop()
    logs = gateway.logs()

    assert response.status == 302
    assert refused
    assert exit_code == 0
    assert exit_seconds < 10
    assert "msg=stopping signal=SIGTERM" in logs
    assert "msg=\"already stopping\" signal=SIGTERM" in logs
    assert "msg=\"closing the PostgreSQL pool\"" in logs
    assert "msg=\"closing the S3 clients\"" in logs
    assert find_credentials(logs) == []


async def test_sigterm_exits_while_postgres_hangs(running_postgres, moto, tmp_path, token):
    gateway = _served(running_postgres, moto, tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            warm = await session.get(
                gateway.url + "/media/f/0.jpg", headers=bearer(token("user0")), allow_redirects=False
            )
            running_postgres.pause()
            in_flight = [
                asyncio.ensure_future(
                    session.get(
                        gateway.url + f"/media/f/{number}.jpg", headers=bearer(token("user0")), allow_redirects=False
                    )
                )
                # Not the warmed key: its decision is cached and needs no database.
                for number in range(1, 6)
            ]
            await asyncio.sleep(0.5)
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            exit_code = await _wait_for_exit(gateway, 10)
            exit_seconds = time.monotonic() - signalled
            answers = await asyncio.gather(*in_flight, return_exceptions=True)
    finally:
        running_postgres.resume()
        gateway.stop()

    assert warm.status == 302
    assert exit_code == 0
    assert exit_seconds < 10
    assert [getattr(answer, "status", answer) for answer in answers] == [503] * 5
