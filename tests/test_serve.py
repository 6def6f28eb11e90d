"""`media-gateway serve` as a subprocess: ports, SIGTERM with a request in flight, clean exit."""

import asyncio
import gc
import signal
import time

import aiohttp
import asyncpg
import pytest

from gateway.server import settle_heap

from .processes import KILL_AFTER_SECONDS, ServeProcess, process_env

OWNER = "42"


@pytest.fixture
def serve(gateway_env, tmp_path, db):
    started: list[ServeProcess] = []

    def start(**overrides) -> ServeProcess:
        use_port_variable = overrides.pop("use_port_variable", False)
        env = {**process_env(gateway_env, tmp_path), **overrides}
        process = ServeProcess(env, tmp_path, use_port_variable=use_port_variable)
        started.append(process)
        return process

    yield start

    for process in started:
        process.kill()


@pytest.fixture
async def slow_object(db):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('slow.bin', $1)", OWNER)


async def fetch_status(url: str, token_value: str) -> int:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token_value}"}
        async with session.get(url, headers=headers, allow_redirects=False) as response:
            return response.status


async def wait_until_blocked_on_lock(db, timeout: float = 10.0) -> bool:
    """Wait until a gateway query waits for a table lock, which proves the request is in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'media-gateway' AND wait_event_type = 'Lock'"
        )
        if waiting:
            return True
        await asyncio.sleep(0.05)
    return False


async def wait_until_refused(port: int, timeout: float = 1.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # The connection sat in the backlog while the listening socket closed; try again.
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        await asyncio.sleep(0.02)
    return False


class TableLock:
    """An open transaction on its own connection that keeps an exclusive lock on media_objects."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection
        self._transaction = connection.transaction()
        self._held = False

    async def acquire(self) -> None:
        await self._transaction.start()
        await self._connection.execute("LOCK TABLE media_objects IN ACCESS EXCLUSIVE MODE")
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            await self._transaction.rollback()


@pytest.fixture
async def table_lock(postgres):
    connection = await asyncpg.connect(postgres.url)
    lock = TableLock(connection)
    await lock.acquire()

    yield lock

    await lock.release()
    await connection.close()


async def test_serves_on_port_option(serve):
    process = serve()

    async with aiohttp.ClientSession() as session, session.get(process.url + "/healthz") as response:
        assert response.status == 200


async def test_port_variable_used_without_option(serve):
    process = serve(use_port_variable=True)

    async with aiohttp.ClientSession() as session, session.get(process.url + "/healthz") as response:
        assert response.status == 200


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_idle_server_exits_zero(serve, signal_number):
    process = serve()

    process.process.send_signal(signal_number)

    assert await process.wait_for_exit(KILL_AFTER_SECONDS) == 0


async def test_stop_is_logged(serve):
    process = serve()

    process.terminate()
    await process.wait_for_exit(KILL_AFTER_SECONDS)

    assert "media-gateway stopped" in process.stdout


async def test_nothing_on_stderr_across_lifecycle(serve):
    process = serve()

    process.terminate()
    await process.wait_for_exit(KILL_AFTER_SECONDS)

    assert process.stderr == ""


class TestSigtermWithRequestInFlight:
    """A request waits on a real table lock while the process receives SIGTERM."""

    @pytest.fixture
    async def scenario(self, serve, slow_object, table_lock, db, token):
        process = serve()
        request = asyncio.create_task(fetch_status(f"{process.url}/media/slow.bin", token(OWNER)))
        blocked = await wait_until_blocked_on_lock(db)

        process.terminate()
        terminated_at = time.monotonic()
        refused = await wait_until_refused(process.port)

        await asyncio.sleep(max(0.0, terminated_at + 1.0 - time.monotonic()))
        await table_lock.release()

        status = await asyncio.wait_for(request, KILL_AFTER_SECONDS)
        code = await process.wait_for_exit(KILL_AFTER_SECONDS - (time.monotonic() - terminated_at))
        return {"blocked": blocked, "refused": refused, "status": status, "code": code}

    async def test_request_was_in_flight(self, scenario):
        assert scenario["blocked"] is True

    async def test_in_flight_request_completes(self, scenario):
        assert scenario["status"] == 302

    async def test_new_connections_refused(self, scenario):
        assert scenario["refused"] is True

    async def test_exits_zero_before_kill(self, scenario):
        assert scenario["code"] == 0


async def test_stuck_database_still_exits_before_kill(serve, slow_object, table_lock, db, token):
    """The lock is never released, so the request can only end by the gateway's own timeouts."""
    process = serve()
    request = asyncio.create_task(fetch_status(f"{process.url}/media/slow.bin", token(OWNER)))
    await wait_until_blocked_on_lock(db)

    process.terminate()
    code = await process.wait_for_exit(KILL_AFTER_SECONDS)
    status = await asyncio.wait_for(request, KILL_AFTER_SECONDS)

    assert code == 0
    assert status == 503


def test_settle_heap_freezes_survivors():
    gc.unfreeze()
    survivor = ["kept after start-up"]

    settle_heap()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        # The objects alive at start-up sit in the permanent generation, out of every collection's reach.
        assert not any(one is survivor for one in gc.get_objects())
    finally:
        gc.unfreeze()
