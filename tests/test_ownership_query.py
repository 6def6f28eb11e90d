"""OWNERSHIP_QUERY: the backend's own table decides who may read a key."""

import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from gateway.errors import ConfigError

from .servers import free_port

SHARED_FILES_QUERY = """
SELECT owner::text AS owner_id,
       CASE WHEN public THEN 'public' ELSE 'private' END AS visibility,
       $2 = ANY (shared_with) AS granted,
       mime AS content_type,
       original_name AS filename
FROM shop_files
WHERE path = $1
"""


@pytest.fixture
async def shop_files(db):
    await db.execute("DROP TABLE IF EXISTS shop_files")
    await db.execute(
        """
        CREATE TABLE shop_files (
            path text NOT NULL, owner integer NOT NULL, public boolean NOT NULL DEFAULT false,
            shared_with text[] NOT NULL DEFAULT '{}', mime text, original_name text
        )
        """
    )
    yield db
    await db.execute("DROP TABLE shop_files")


@pytest.fixture
async def shop(start_gateway, shop_files):
    return await start_gateway(OWNERSHIP_QUERY=SHARED_FILES_QUERY)


async def _add(db, path: str, owner: int, **columns) -> None:
    await db.execute(
        """
        INSERT INTO shop_files (path, owner, public, shared_with, mime, original_name)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        path,
        owner,
        columns.get("public", False),
        columns.get("shared_with", []),
        columns.get("mime"),
        columns.get("original_name"),
    )


async def _get(client, key: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.get(f"/media/{key}", headers=headers, allow_redirects=False)


async def test_owner_allowed(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7)

    response = await _get(shop, "invoices/1.pdf", token("7"))

    assert response.status == 302


async def test_other_user_forbidden(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7)

    response = await _get(shop, "invoices/1.pdf", token("8"))

    assert response.status == 403


async def test_anonymous_unauthorized(shop, shop_files):
    await _add(shop_files, "invoices/1.pdf", 7)

    response = await _get(shop, "invoices/1.pdf")

    assert response.status == 401


async def test_granted_user_allowed(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7, shared_with=["8"])

    granted = await _get(shop, "invoices/1.pdf", token("8"))
    other = await _get(shop, "invoices/1.pdf", token("9"))

    assert granted.status == 302
    assert other.status == 403


async def test_public_object_open_to_anonymous(shop, shop_files):
    await _add(shop_files, "catalogue.pdf", 7, public=True)

    response = await _get(shop, "catalogue.pdf")

    assert response.status == 302


async def test_content_type_and_filename_signed(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7, mime="application/pdf", original_name="March.pdf")

    response = await _get(shop, "invoices/1.pdf", token("7"))
    query = parse_qs(urlsplit(response.headers["Location"]).query)

    assert query["response-content-type"] == ["application/pdf"]
    assert query["response-content-disposition"][0].startswith('inline; filename="March.pdf"')


async def test_duplicate_rows_forbidden(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7)
    await _add(shop_files, "invoices/1.pdf", 8)

    response = await _get(shop, "invoices/1.pdf", token("7"))

    assert response.status == 403


async def test_removed_row_stops_access(shop, shop_files, token):
    await _add(shop_files, "invoices/1.pdf", 7)
    before = await _get(shop, "invoices/1.pdf", token("7"))
    await shop_files.execute("DELETE FROM shop_files")

    after = await _get(shop, "invoices/1.pdf", token("7"))

    assert before.status == 302
    assert after.status == 403


async def test_query_without_user_parameter(start_gateway, shop_files, token):
    gateway = await start_gateway(OWNERSHIP_QUERY="SELECT owner AS owner_id FROM shop_files WHERE path = $1")
    await _add(shop_files, "invoices/1.pdf", 7)

    response = await _get(gateway, "invoices/1.pdf", token("7"))

    assert response.status == 302


async def test_media_objects_ignored(shop, shop_files, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id, visibility) VALUES ('x.txt', '7', 'public')")

    response = await _get(shop, "x.txt", token("7"))

    assert response.status == 403


BAD_QUERIES = [
    ("SELEC owner FROM shop_files", "the query does not prepare (syntax error"),
    ("SELECT owner_id FROM no_such_table WHERE path = $1", 'the query does not prepare (relation "no_such_table"'),
    ("SELECT owner::text AS owner_id FROM shop_files", "the query takes 0 parameters"),
    ("SELECT owner::text AS owner_id FROM shop_files WHERE path = $1 AND $2 = $3", "the query takes 3 parameters"),
    ("SELECT owner::text AS owner_id FROM shop_files WHERE owner = $1", "$1 is used as int4"),
    ("SELECT owner::text AS owner_id FROM shop_files WHERE path = $1 AND owner = $2", "$2 is used as int4"),
    ("SELECT owner AS user_id FROM shop_files WHERE path = $1", "the query returns no owner_id column"),
    ("SELECT shared_with AS owner_id FROM shop_files WHERE path = $1", "owner_id has type text[]"),
    ("SELECT owner AS owner_id, public AS visibility FROM shop_files WHERE path = $1", "column visibility has type"),
    ("SELECT owner AS owner_id, 1 AS granted FROM shop_files WHERE path = $1", "column granted has type int4"),
    ("SELECT 1 AS owner_id; SELECT 2 AS owner_id", "the query does not prepare"),
]


@pytest.mark.parametrize(("query", "problem"), BAD_QUERIES)
async def test_bad_query_stops_start(startup_error, shop_files, query, problem):
    error = await startup_error(OWNERSHIP_QUERY=query)

    assert isinstance(error, ConfigError)
    assert str(error).startswith(f"OWNERSHIP_QUERY: {problem}")
    assert "\n" not in str(error)


async def test_outage_at_start_defers_check(start_gateway, token):
    gateway = await start_gateway(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/postgres", OWNERSHIP_QUERY="SELEC nonsense"
    )

    response = await _get(gateway, "invoices/1.pdf", token("7"))

    assert response.status == 503


def test_serve_reports_bad_query_in_one_line(gateway_env):
    env = {**os.environ, **gateway_env, "OWNERSHIP_QUERY": "SELECT 'x' AS user_id WHERE $1 = 'key'"}

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.strip().splitlines()

    assert result.returncode == 1
    assert lines[-1].startswith("media-gateway: error: OWNERSHIP_QUERY: the query returns no owner_id column")
    assert "Traceback" not in result.stderr
    assert "Unclosed" not in result.stderr


async def test_start_leaves_media_table_unlocked(start_gateway, db, postgres):
    await start_gateway(OWNERSHIP_QUERY="SELECT owner_id FROM media_objects WHERE key = $1")
    connection = await asyncpg.connect(postgres.url)
    try:
        await connection.execute("SET lock_timeout = '2s'")
        async with connection.transaction():
            # A migration takes this lock; an idle pooled connection must not make it wait.
            await connection.execute("LOCK TABLE media_objects IN ACCESS EXCLUSIVE MODE")
    finally:
        await connection.close()
