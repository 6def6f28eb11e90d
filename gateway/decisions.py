"""A bounded cache of recent (key, user) lookups, evicted by PostgreSQL notifications.

schema.sql's triggers send the key of every changed object or grant on
CHANNEL. A dedicated connection LISTENs and evicts that key, so a delete or a
revoke takes effect as soon as the notification arrives. The cache serves
entries only while that connection listens. When it drops, the cache is
emptied and bypassed until the listener is back.
"""

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from . import database
from .ownership import MediaObject, OwnershipSource
from .settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "media_gateway_changes"
# A dead connection that sent no FIN is noticed by this ping; until then the entries' TTL bounds staleness.
PING_INTERVAL = 5.0
PING_TIMEOUT = 2.0
RECONNECT_DELAY_MIN = 0.1
RECONNECT_DELAY_MAX = 10.0

MISS = object()
CacheKey = tuple[str, str | None]


class DecisionCache:
    """LRU of lookup results with a per-entry deadline; serves nothing while `listening` is False."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self._max_entries = max_entries
        self._ttl = ttl
        self._entries: OrderedDict[CacheKey, tuple[float, MediaObject | None]] = OrderedDict()
        self._users_by_key: dict[str, set[str | None]] = {}
        # Bumped by every eviction: a lookup that started before one must not store its result.
        self.generation = 0
        self.listening = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, user_id: str | None):
        """Return the cached MediaObject or None, or MISS when there is no live entry."""
        entry = self._entries.get((key, user_id))
        if entry is None:
            return MISS

        deadline, media = entry
        if deadline <= time.monotonic():
            self._remove((key, user_id))
            return MISS

        self._entries.move_to_end((key, user_id))
        return media

    def put(self, key: str, user_id: str | None, media: MediaObject | None, generation: int) -> None:
        if generation != self.generation or not self.listening:
            return

        deadline = time.monotonic() + self._ttl
        if media is not None and media.granted and media.grant_expires_at is not None:
            # A grant's expiry is wall-clock time: convert it to the monotonic clock the deadlines use.
            grant_left = media.grant_expires_at.timestamp() - time.time()
            deadline = min(deadline, time.monotonic() + grant_left)

        cache_key = (key, user_id)
        self._entries[cache_key] = (deadline, media)
        self._entries.move_to_end(cache_key)
        self._users_by_key.setdefault(key, set()).add(user_id)
        while len(self._entries) > self._max_entries:
            self._remove(next(iter(self._entries)))

    def evict(self, key: str) -> None:
        self.generation += 1
        for user_id in self._users_by_key.pop(key, ()):
            self._entries.pop((key, user_id), None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._users_by_key.clear()

    def _remove(self, cache_key: CacheKey) -> None:
        self._entries.pop(cache_key, None)
        users = self._users_by_key.get(cache_key[0])
        if users is not None:
            users.discard(cache_key[1])
            if not users:
                del self._users_by_key[cache_key[0]]


class CachedOwnership:
    """An OwnershipSource that serves repeated lookups from a DecisionCache."""

    def __init__(self, source: OwnershipSource, cache: DecisionCache) -> None:
        self._source = source
        self._cache = cache

    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        cache = self._cache
        if not cache.listening:
            return await self._source.find(key, user_id)

        media = cache.get(key, user_id)
        if media is not MISS:
            return media

        generation = cache.generation
        media = await self._source.find(key, user_id)
        cache.put(key, user_id, media, generation)
        return media


class InvalidationListener:
    """Keeps one connection LISTENing on CHANNEL and evicts each notified key; reconnects with backoff."""

    def __init__(self, database_url: str, cache: DecisionCache) -> None:
        self._database_url = database_url
        self._cache = cache

    async def run(self) -> None:
        delay = RECONNECT_DELAY_MIN
        while True:
            try:
                await self._listen()
                delay = RECONNECT_DELAY_MIN
            except (*database.UNAVAILABLE_ERRORS, asyncpg.PostgresError) as error:
                log.warning(
                    "invalidation listener is down (%s: %s); decision cache bypassed, reconnecting in %.1f s",
                    type(error).__name__,
                    str(error)[:200],
                    delay,
                )
            except Exception:  # A bug here must not end the loop: the cache stays bypassed meanwhile.
                log.exception("invalidation listener failed; decision cache bypassed, restarting in %.1f s", delay)
            finally:
                self._stop_serving()

            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(
            self._database_url,
            timeout=database.CONNECT_TIMEOUT,
            server_settings={"application_name": "media-gateway-listener"},
        )
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        try:
            await connection.add_listener(CHANNEL, self._on_notification)
            # Changes made while no connection listened were missed, so start empty.
            self._cache.clear()
            self._cache.listening = True
            log.info("invalidation listener connected; decision cache enabled")

            while not lost.is_set():
                try:
                    await asyncio.wait_for(lost.wait(), PING_INTERVAL)
                except TimeoutError:
                    await connection.fetchval("SELECT 1", timeout=PING_TIMEOUT)
            raise asyncpg.InterfaceError("the connection was closed")
        finally:
            self._stop_serving()
            connection.terminate()

    def _on_notification(self, _connection, _pid: int, _channel: str, key: str) -> None:
        if key:
            self._cache.evict(key)
        else:
            self._cache.clear()

    def _stop_serving(self) -> None:
        self._cache.listening = False
        self._cache.clear()


@asynccontextmanager
async def open_decision_cache(settings: Settings) -> AsyncIterator[DecisionCache | None]:
    """Yield the cache with its listener running, or None when DECISION_CACHE_SIZE is 0."""
    if settings.decision_cache_size == 0:
        yield None
        return

    cache = DecisionCache(settings.decision_cache_size, settings.decision_cache_ttl)
    listener = InvalidationListener(settings.database_url, cache)
    task = asyncio.create_task(listener.run(), name="invalidation-listener")
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def with_cache(source: OwnershipSource, cache: DecisionCache | None) -> OwnershipSource:
    return source if cache is None else CachedOwnership(source, cache)
