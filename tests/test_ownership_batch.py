"""Batched ownership lookups: many concurrent lookups share queries, and each gets its own result."""

import asyncio
import datetime

import asyncpg

from gateway import state
from gateway.ownership import MAX_BATCH_SIZE, TableOwnership

PAST = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
FUTURE = datetime.datetime(2999, 1, 1, tzinfo=datetime.UTC)

# (key, user asking, owner expected or None for no object, granted expected)
CASES = [
    ("a/own.jpg", "alice", "alice", False),
    ("a/own.jpg", "bob", "alice", True),
    ("a/own.jpg", "carol", "alice", False),
    ("a/own.jpg", None, "alice", False),
    ("a/expired.jpg", "bob", "alice", False),
    ("a/expired.jpg", "alice", "alice", False),
    ("a/future.jpg", "bob", "alice", True),
    ("b/public.png", None, "bob", False),
    ("b/public.png", "carol", "bob", False),
    ("b/pending.mov", "bob", None, False),
    ("missing.jpg", "alice", None, False),
    ("a/own.jpg", "alice", "alice", False),
]


async def _seed(db) -> None:
    await db.execute(
        """
        INSERT INTO media_objects (key, owner_id, visibility, content_type, filename, status) VALUES
            ('a/own.jpg', 'alice', 'private', 'image/jpeg', 'own.jpg', 'ready'),
            ('a/expired.jpg', 'alice', 'private', NULL, NULL, 'ready'),
            ('a/future.jpg', 'alice', 'private', NULL, NULL, 'ready'),
            ('b/public.png', 'bob', 'public', 'image/png', NULL, 'ready'),
            ('b/pending.mov', 'bob', 'private', NULL, NULL, 'pending')
        """
    )
    await db.executemany(
        "INSERT INTO media_grants (key, grantee_id, expires_at) VALUES ($1, $2, $3)",
        [("a/own.jpg", "bob", None), ("a/expired.jpg", "bob", PAST), ("a/future.jpg", "bob", FUTURE)],
    )


async def test_concurrent_lookups_each_get_own_row(postgres, db):
    await _seed(db)
    pool = await asyncpg.create_pool(postgres.url, min_size=1, max_size=2)
    try:
        ownership = TableOwnership(pool)
        # Ten rounds of every case, shuffled by rotation, all in one loop turn.
        lookups = [CASES[(index * 7) % len(CASES)] for index in range(10 * len(CASES))]

        found = await asyncio.gather(*(ownership.find(key, user) for key, user, _, _ in lookups))
    finally:
        await pool.close()

    for (key, user, owner, granted), media in zip(lookups, found, strict=True):
        if owner is None:
            assert media is None, (key, user)
            continue
        assert media is not None, (key, user)
        assert media.key == key
        assert media.owner_id == owner, (key, user)
        assert media.granted is granted, (key, user)


async def test_lookup_columns_and_grant_expiry(postgres, db):
    await _seed(db)
    pool = await asyncpg.create_pool(postgres.url, min_size=1, max_size=1)
    try:
        ownership = TableOwnership(pool)
        own, shared, public = await asyncio.gather(
            ownership.find("a/own.jpg", "alice"),
            ownership.find("a/future.jpg", "bob"),
            ownership.find("b/public.png", None),
        )
    finally:
        await pool.close()

    assert (own.visibility, own.content_type, own.filename) == ("private", "image/jpeg", "own.jpg")
    assert own.grant_expires_at is None
    assert shared.grant_expires_at == FUTURE
    assert (public.visibility, public.content_type, public.filename) == ("public", "image/png", None)


async def test_more_lookups_than_batch_size(postgres, db):
    await db.executemany(
        "INSERT INTO media_objects (key, owner_id) VALUES ($1, $2)",
        [(f"bulk/{number}.jpg", f"user-{number}") for number in range(MAX_BATCH_SIZE + 50)],
    )
    pool = await asyncpg.create_pool(postgres.url, min_size=1, max_size=3)
    try:
        ownership = TableOwnership(pool)
        count = MAX_BATCH_SIZE + 50
        found = await asyncio.gather(*(ownership.find(f"bulk/{number}.jpg", None) for number in range(count)))
    finally:
        await pool.close()

    assert [media.owner_id for media in found] == [f"user-{number}" for number in range(MAX_BATCH_SIZE + 50)]


async def test_concurrent_requests_get_own_answers(start_gateway, db, token):
    await _seed(db)
    client = await start_gateway(DECISION_CACHE_SIZE="0")
    expected = {
        ("a/own.jpg", "alice"): 302,
        ("a/own.jpg", "bob"): 302,
        ("a/own.jpg", "carol"): 403,
        ("a/expired.jpg", "bob"): 403,
        ("a/future.jpg", "bob"): 302,
        ("b/public.png", "carol"): 302,
        ("b/pending.mov", "bob"): 403,
        ("missing.jpg", "alice"): 403,
    }
    requests = list(expected) * 8

    async def status(key: str, user: str) -> int:
        headers = {"Authorization": f"Bearer {token(user)}"}
        response = await client.get(f"/media/{key}", headers=headers, allow_redirects=False)
        return response.status

    statuses = await asyncio.gather(*(status(key, user) for key, user in requests))

    assert statuses == [expected[request] for request in requests]


async def test_blocked_batch_holds_one_connection(start_gateway, db, postgres, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")
    client = await start_gateway(DECISION_CACHE_SIZE="0")
    pool = client.server.app[state.POOL]
    locker = await asyncpg.connect(postgres.url)
    await locker.execute("BEGIN; LOCK TABLE media_objects IN ACCESS EXCLUSIVE MODE")
    try:
        requests = [
            asyncio.ensure_future(
                client.get("/media/a.jpg", headers={"Authorization": f"Bearer {token('alice')}"}, allow_redirects=False)
            )
            for _ in range(12)
        ]
        await asyncio.sleep(0.5)
        in_use = pool.get_size() - pool.get_idle_size()
    finally:
        await locker.close()
    responses = await asyncio.gather(*requests)

    # Twelve requests sent together wait on one blocked query, not on twelve.
    assert in_use < 12
    assert in_use <= 3
    assert [response.status for response in responses] == [302] * 12
