"""The decision cache through real HTTP: hits are served, and every change is seen within 1 second."""

import asyncio
import datetime
import time

from gateway import state
from gateway.decisions import MISS, DecisionCache
from gateway.ownership import MediaObject

INVALIDATION_DEADLINE = 1.0
LISTENER_WAIT = 10.0


async def _start_cached(start_gateway):
    client = await start_gateway(DECISION_CACHE_SIZE="1000")
    cache = client.server.app[state.DECISIONS]
    await _wait_listening(cache)
    return client, cache


async def _wait_listening(cache: DecisionCache) -> None:
    deadline = time.monotonic() + LISTENER_WAIT
    while not cache.listening and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert cache.listening, "the invalidation listener did not connect"


async def _status_within(client, path: str, headers: dict[str, str], expected: int, seconds: float) -> int:
    """Request `path` until the status is `expected` or `seconds` pass; return the last status."""
    deadline = time.monotonic() + seconds
    while True:
        response = await client.get(path, headers=headers, allow_redirects=False)
        if response.status == expected or time.monotonic() >= deadline:
            return response.status
        await asyncio.sleep(0.02)


async def _add_object(db, key: str, owner: str, visibility: str = "private") -> None:
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, visibility) VALUES ($1, $2, $3)", key, owner, visibility
    )


def _bearer(token, user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user_id)}"}


async def test_cached_decision_served_without_query(start_gateway, db, token):
    await _add_object(db, "cached.png", "alice")
    await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ('cached.png', 'bob')")
    client, cache = await _start_cached(start_gateway)
    first = await client.get("/media/cached.png", headers=_bearer(token, "bob"), allow_redirects=False)

    # With triggers off for this session, only the cache can still allow bob.
    await db.execute("SET session_replication_role = replica")
    await db.execute("DELETE FROM media_grants WHERE key = 'cached.png'")
    await db.execute("RESET session_replication_role")
    second = await client.get("/media/cached.png", headers=_bearer(token, "bob"), allow_redirects=False)

    assert first.status == 302
    assert len(cache) == 1
    assert second.status == 302


async def test_revoke_seen_within_a_second(start_gateway, db, token):
    await _add_object(db, "shared.png", "alice")
    await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ('shared.png', 'bob')")
    client, cache = await _start_cached(start_gateway)
    before = await client.get("/media/shared.png", headers=_bearer(token, "bob"), allow_redirects=False)

    await db.execute("DELETE FROM media_grants WHERE key = 'shared.png' AND grantee_id = 'bob'")
    after = await _status_within(client, "/media/shared.png", _bearer(token, "bob"), 403, INVALIDATION_DEADLINE)

    assert before.status == 302
    assert after == 403


async def test_delete_seen_within_a_second(start_gateway, db, token):
    await _add_object(db, "owned.png", "alice")
    client, cache = await _start_cached(start_gateway)
    before = await client.get("/media/owned.png", headers=_bearer(token, "alice"), allow_redirects=False)

    await db.execute("DELETE FROM media_objects WHERE key = 'owned.png'")
    after = await _status_within(client, "/media/owned.png", _bearer(token, "alice"), 403, INVALIDATION_DEADLINE)

    assert before.status == 302
    assert after == 403


async def test_visibility_change_seen_within_a_second(start_gateway, db):
    await _add_object(db, "poster.png", "alice", visibility="public")
    client, cache = await _start_cached(start_gateway)
    before = await client.get("/media/poster.png", allow_redirects=False)

    await db.execute("UPDATE media_objects SET visibility = 'private' WHERE key = 'poster.png'")
    after = await _status_within(client, "/media/poster.png", {}, 401, INVALIDATION_DEADLINE)

    assert before.status == 302
    assert after == 401


async def test_new_grant_seen_within_a_second(start_gateway, db, token):
    await _add_object(db, "later.png", "alice")
    client, cache = await _start_cached(start_gateway)
    before = await client.get("/media/later.png", headers=_bearer(token, "bob"), allow_redirects=False)

    await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ('later.png', 'bob')")
    after = await _status_within(client, "/media/later.png", _bearer(token, "bob"), 302, INVALIDATION_DEADLINE)

    assert before.status == 403
    assert after == 302


async def test_expired_grant_not_served_from_cache(start_gateway, db, token):
    await _add_object(db, "brief.png", "alice")
    # The grant is made after the start, so a slow start on a loaded machine cannot outlast it.
    client, cache = await _start_cached(start_gateway)
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    await db.execute(
        "INSERT INTO media_grants (key, grantee_id, expires_at) VALUES ('brief.png', 'bob', $1)", expires_at
    )
    # Let the insert's NOTIFY arrive first, so it cannot evict the entry the next request caches.
    await asyncio.sleep(0.5)
    before = await client.get("/media/brief.png", headers=_bearer(token, "bob"), allow_redirects=False)
    cached_entries = len(cache)

    await asyncio.sleep((expires_at - datetime.datetime.now(datetime.UTC)).total_seconds() + 0.1)
    after = await client.get("/media/brief.png", headers=_bearer(token, "bob"), allow_redirects=False)

    assert before.status == 302
    assert cached_entries == 1
    assert after.status == 403


async def test_cache_off_reads_database_each_time(start_gateway, db, token):
    await _add_object(db, "plain.png", "alice")
    await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ('plain.png', 'bob')")
    client = await start_gateway(DECISION_CACHE_SIZE="0")
    before = await client.get("/media/plain.png", headers=_bearer(token, "bob"), allow_redirects=False)

    await db.execute("DELETE FROM media_grants WHERE key = 'plain.png'")
    after = await client.get("/media/plain.png", headers=_bearer(token, "bob"), allow_redirects=False)

    assert client.server.app[state.DECISIONS] is None
    assert before.status == 302
    assert after.status == 403


async def test_killed_listener_still_correct(start_gateway, db, token):
    await _add_object(db, "guarded.png", "alice")
    await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ('guarded.png', 'bob')")
    client, cache = await _start_cached(start_gateway)
    before = await client.get("/media/guarded.png", headers=_bearer(token, "bob"), allow_redirects=False)

    killed = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'media-gateway-listener' AND datname = current_database()"
    )
    # Triggers off: no notification announces this revoke, so only a bypassed or emptied cache is correct.
    await db.execute("SET session_replication_role = replica")
    await db.execute("DELETE FROM media_grants WHERE key = 'guarded.png'")
    await db.execute("RESET session_replication_role")
    after = await _status_within(client, "/media/guarded.png", _bearer(token, "bob"), 403, INVALIDATION_DEADLINE)
    await _wait_listening(cache)
    reconnected_status = await client.get("/media/guarded.png", headers=_bearer(token, "bob"), allow_redirects=False)

    assert before.status == 302
    assert killed == 1
    assert after == 403
    assert reconnected_status.status == 403


def _media(key: str, granted: bool = False, grant_expires_at=None) -> MediaObject:
    return MediaObject(key, "alice", "private", None, None, granted, grant_expires_at)


def test_cache_bounded_by_size():
    cache = DecisionCache(max_entries=3, ttl=60)
    cache.listening = True

    for number in range(10):
        cache.put(f"key-{number}", "bob", _media(f"key-{number}"), cache.generation)

    assert len(cache) == 3
    assert cache.get("key-9", "bob") is not None
    assert cache.get("key-0", "bob") is MISS


def test_cache_evicts_every_user_of_a_key():
    cache = DecisionCache(max_entries=10, ttl=60)
    cache.listening = True
    for user_id in ("bob", "carol", None):
        cache.put("shared.png", user_id, _media("shared.png"), cache.generation)
    cache.put("other.png", "bob", _media("other.png"), cache.generation)

    cache.evict("shared.png")

    assert len(cache) == 1


def test_cache_skips_result_older_than_eviction():
    cache = DecisionCache(max_entries=10, ttl=60)
    cache.listening = True
    generation = cache.generation

    cache.evict("racy.png")
    cache.put("racy.png", "bob", _media("racy.png"), generation)

    assert len(cache) == 0


def test_cache_stores_nothing_while_not_listening():
    cache = DecisionCache(max_entries=10, ttl=60)

    cache.put("quiet.png", "bob", _media("quiet.png"), cache.generation)

    assert len(cache) == 0
