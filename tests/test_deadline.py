"""A query blocked by a lock that another connection holds: the gateway returns 503 in time."""

import asyncio
import time

import asyncpg

from .helpers import bearer, metric_value, scrape


async def _lock_media_table(url: str) -> asyncpg.Connection:
    locker = await asyncpg.connect(url)
    await locker.execute("BEGIN")
    await locker.execute("LOCK TABLE media_objects IN ACCESS EXCLUSIVE MODE")
    return locker


async def test_locked_table_answers_503_within_deadline(gateway, db, postgres, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")
    locker = await _lock_media_table(postgres.url)
    try:
        started = time.monotonic()
        response = await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
        elapsed = time.monotonic() - started
        body = await response.json()
    finally:
        await locker.close()

    assert response.status == 503
    assert body["error"] == "unavailable"
    assert response.headers["Retry-After"] == "2"
    assert elapsed < 10


async def test_request_timeout_answers_503_timeout(start_gateway, db, postgres, token):
    client = await start_gateway(REQUEST_TIMEOUT="1")
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")
    locker = await _lock_media_table(postgres.url)
    try:
        response = await client.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
        body = await response.json()
    finally:
        await locker.close()
    exposition = await scrape(client)

    assert response.status == 503
    assert body["error"] == "timeout"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert metric_value(exposition, "gateway_errors_total", kind="deadline") == 1


async def test_locked_table_recovers_after_release(gateway, db, postgres, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")
    locker = await _lock_media_table(postgres.url)
    try:
        blocked = await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    finally:
        await locker.close()

    after = await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)

    assert blocked.status == 503
    assert after.status == 302


async def test_pool_waiting_visible_in_metrics(start_gateway, db, postgres, token):
    # Lookups in the gateway's own tables that arrive together share one query and one connection,
    # so the requests go through OWNERSHIP_QUERY, which runs a query per request.
    gateway = await start_gateway(OWNERSHIP_QUERY="SELECT owner_id FROM media_objects WHERE key = $1")
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")
    locker = await _lock_media_table(postgres.url)
    try:
        # Twelve blocked requests: ten hold every pool connection, two wait for one.
        requests = [
            asyncio.ensure_future(
                gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
            )
            for _ in range(12)
        ]
        # Poll rather than sleep once: on a loaded machine the ten connections take a while to open.
        # The blocked queries time out after about 3 s, so the polling stops well before that.
        deadline = time.monotonic() + 2.5
        while True:
            await asyncio.sleep(0.1)
            exposition = await scrape(gateway)
            settled = metric_value(exposition, "gateway_db_pool_in_use") == 10
            if settled or time.monotonic() > deadline:
                break
    finally:
        await locker.close()
    responses = await asyncio.gather(*requests)

    assert metric_value(exposition, "gateway_db_pool_in_use") == 10
    assert metric_value(exposition, "gateway_db_pool_waiting") == 2
    assert {response.status for response in responses} <= {302, 503}


async def test_sleeping_ownership_query_answers_503(start_gateway, db, token):
    client = await start_gateway(
        OWNERSHIP_QUERY="SELECT owner_id FROM media_objects, pg_sleep(30) AS nap WHERE key = $1"
    )
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")

    started = time.monotonic()
    response = await client.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    elapsed = time.monotonic() - started
    body = await response.json()
    exposition = await scrape(client)

    assert response.status == 503
    assert body["error"] == "unavailable"
    assert elapsed < 10
    assert metric_value(exposition, "gateway_errors_total", kind="postgres_unavailable") == 1
