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

T = TypeVar("T")

# Raised when the server is down, hung, restarting or refuses the connection.
UNAVAILABLE_ERRORS = (
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


async def run(pool: asyncpg.Pool, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `query` on a pooled connection, turning outages into BackendUnavailable."""
    try:
        async with asyncio.timeout(ACQUIRE_TIMEOUT + QUERY_TIMEOUT):
            # pool.acquire(timeout=...) wraps each acquisition in a new task (asyncio.wait_for); this block does not.
            async with asyncio.timeout(ACQUIRE_TIMEOUT):
                await _turns(pool).acquire()
                try:
                    connection = await pool.acquire()
                except BaseException:
                    _turns(pool).release()
                    raise
            try:
                return await query(connection)
            finally:
                try:
                    await pool.release(connection)
                finally:
                    _turns(pool).release()
    except UNAVAILABLE_ERRORS as error:
        raise BackendUnavailable("postgres", _describe(error)) from error


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


async def close_pool(pool: asyncpg.Pool, timeout: float = 3.0) -> None:
    """Close the pool, terminating connections that do not close within `timeout` seconds."""
    _waiting_lines.pop(id(pool), None)
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except (TimeoutError, *UNAVAILABLE_ERRORS):
        log.warning("the PostgreSQL pool did not close in %.0f s; terminating its connections", timeout)
        pool.terminate()
