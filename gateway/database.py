"""The asyncpg pool and the errors that make PostgreSQL count as unavailable."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from .errors import BackendUnavailable
from .settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2.0
ACQUIRE_TIMEOUT = 2.0
QUERY_TIMEOUT = 3.0
POOL_MAX_SIZE = 10
# Part of the 10 s the platform allows between SIGTERM and SIGKILL.
CLOSE_TIMEOUT = 2.0
RELEASE_TIMEOUT = 1.0

T = TypeVar("T")

# Requests waiting in pool.acquire(), per pool; asyncpg does not expose this count.
_waiting: dict[asyncpg.Pool, int] = {}

# A pooled connection that the server dropped (restart, failover, idle kill) fails on its next use with
# one of these. A read-only query is safe to run again on a fresh connection. The tests saw asyncpg 0.32
# raise InternalClientError ("another operation is in progress") on a pooled connection while the
# server shut down.
LOST_CONNECTION_ERRORS = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.InternalClientError,
    ConnectionResetError,
)

# Raised when PgBouncer in transaction mode runs a statement on another server connection than
# the one it was prepared on, which happens unless DATABASE_STATEMENT_CACHE_SIZE is 0.
PREPARED_STATEMENT_ERRORS = (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError)

# Raised when the server is down, hung, restarting or refuses the connection.
UNAVAILABLE_ERRORS = (
    *LOST_CONNECTION_ERRORS,
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
    asyncpg.AdminShutdownError,
)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Create the pool without connecting, so the service boots while PostgreSQL is down."""
    options = {}
    if settings.database_statement_cache_size is not None:
        options["statement_cache_size"] = settings.database_statement_cache_size

    return await asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=POOL_MAX_SIZE,
        timeout=CONNECT_TIMEOUT,
        command_timeout=QUERY_TIMEOUT,
        server_settings={"application_name": "media-gateway"},
        reset=_skip_session_reset,
        **options,
    )


async def _skip_session_reset(connection: asyncpg.Connection) -> None:
    """Replace asyncpg's reset query (RESET ALL, UNLISTEN *, CLOSE ALL, ...), a round trip per release.

    Pooled connections only run single statements that change no session
    state; asyncpg still rolls back an open transaction before calling this.
    """


async def run(
    pool: asyncpg.Pool, query: Callable[[asyncpg.Connection], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Run `query` on a pooled connection, turning outages into BackendUnavailable.

    A `read_only` query that fails because its pooled connection was already dead is retried once.
    """
    try:
        async with asyncio.timeout(ACQUIRE_TIMEOUT + QUERY_TIMEOUT):
            try:
                return await _run_once(pool, query)
            except LOST_CONNECTION_ERRORS as error:
                if not read_only:
                    raise
                log.info("retrying a read on a new connection after a lost one", extra={"reason": _describe(error)})
                return await _run_once(pool, query)
    except UNAVAILABLE_ERRORS as error:
        raise BackendUnavailable("postgres", _describe(error)) from error
    except PREPARED_STATEMENT_ERRORS as error:
        raise BackendUnavailable(
            "postgres",
            f"{type(error).__name__}: named prepared statements fail behind a pooler in transaction mode; "
            "set DATABASE_STATEMENT_CACHE_SIZE=0",
        ) from error


async def _run_once(pool: asyncpg.Pool, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    _waiting[pool] = _waiting.get(pool, 0) + 1
    try:
        # pool.acquire(timeout=...) wraps each acquisition in a new task (asyncio.wait_for); this block does not.
        async with asyncio.timeout(ACQUIRE_TIMEOUT):
            await _turns(pool).acquire()
            try:
                connection = await pool.acquire()
            except BaseException:
                _turns(pool).release()
                raise
    finally:
        _waiting[pool] = _waiting.get(pool, 1) - 1

    try:
        return await query(connection)
    finally:
        try:
            await _release(pool, connection)
        finally:
            _turns(pool).release()


async def _release(pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
    """Return `connection` to the pool; one that fails to reset is closed there and only logged here.

    After a timed-out query the reset waits on the server, so a short budget bounds what a hung
    server costs the caller. A failed reset must not hide the query's own result or error.
    """
    try:
        await pool.release(connection, timeout=RELEASE_TIMEOUT)
    except UNAVAILABLE_ERRORS as error:
        log.info("closed a pooled connection that failed to reset", extra={"reason": _describe(error)})


async def prepare(connection: asyncpg.Connection, query: str) -> asyncpg.prepared_stmt.PreparedStatement:
    """Prepare `query` to read its parameter and column types, holding no lock afterwards.

    asyncpg 0.32 ends a prepare with Flush rather than Sync, so PostgreSQL keeps the implicit
    transaction open, with an AccessShareLock on every table the query reads, until the
    connection's next statement. Pooled connections skip asyncpg's reset, so an idle one would
    keep those locks and block DDL on the backend's tables, such as a Django migration. The
    transaction's COMMIT ends that implicit transaction.
    """
    async with connection.transaction():
        return await connection.prepare(query)


def waiting(pool: asyncpg.Pool) -> int:
    """Return how many callers are waiting for a connection from `pool`."""
    return _waiting.get(pool, 0)


# Requests wait here in arrival order before they reach the pool: since Python 3.11.1 a Semaphore lets no
# newcomer pass a waiting task. asyncpg's pool has no such order: a waiter it wakes can lose the connection to
# a request that just arrived and queue again at the back. In bench/run.py's cold path at 64 connections, that
# put the 99th percentile near 350 ms while the median was 9 ms.
# asyncpg's Pool has __slots__ and no weak references, so the semaphores are keyed by id and keep their pool.
_waiting_lines: dict[int, tuple[asyncpg.Pool, asyncio.Semaphore]] = {}


def _turns(pool: asyncpg.Pool) -> asyncio.Semaphore:
    entry = _waiting_lines.get(id(pool))
    if entry is None or entry[0] is not pool:
        entry = _waiting_lines[id(pool)] = (pool, asyncio.Semaphore(POOL_MAX_SIZE))
    return entry[1]


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}".strip()[:200]


async def close_pool(pool: asyncpg.Pool, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close the pool, terminating connections that do not close within `timeout` seconds."""
    _waiting_lines.pop(id(pool), None)
    _waiting.pop(pool, None)
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, *UNAVAILABLE_ERRORS):
        log.warning("the PostgreSQL pool did not close in %.0f s; terminating its connections", timeout)
        pool.terminate()
