"""/healthz and /readyz against real, missing, closed and hung dependencies."""

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from .servers import free_port

# Each readiness check times out after about 2 s. The bound leaves room for a slow CI machine and stays far
# below the platform's 30 s request limit.
ANSWER_WITHIN_SECONDS = 8


def closed_port_database_url() -> str:
    return f"postgres://postgres@127.0.0.1:{free_port()}/postgres"


@pytest.fixture
async def hung_server() -> AsyncIterator[int]:
    """Return the port of a TCP server that accepts connections and never sends a byte."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]

    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def get_json(client, path: str):
    started = time.monotonic()
    response = await client.get(path)
    body = await response.json()
    return response, body, time.monotonic() - started


class TestHealthz:
    async def test_status_200(self, gateway):
        response, _, _ = await get_json(gateway, "/healthz")
        assert response.status == 200

    async def test_body(self, gateway):
        _, body, _ = await get_json(gateway, "/healthz")
        assert body == {"status": "ok"}

    async def test_ok_while_database_unreachable(self, start_gateway):
        client = await start_gateway(DATABASE_URL=closed_port_database_url())

        response, _, _ = await get_json(client, "/healthz")
        assert response.status == 200

    async def test_ok_while_bucket_missing(self, start_gateway):
        client = await start_gateway(S3_BUCKET="missing-bucket")

        response, _, _ = await get_json(client, "/healthz")
        assert response.status == 200

    async def test_fast_while_database_hung(self, start_gateway, hung_server):
        """/healthz touches nothing else, so a hung database cannot slow it."""
        client = await start_gateway(DATABASE_URL=f"postgres://postgres@127.0.0.1:{hung_server}/postgres")

        response, _, elapsed = await get_json(client, "/healthz")

        assert response.status == 200
        assert elapsed < ANSWER_WITHIN_SECONDS


class TestReadyzAllWell:
    async def test_status_200(self, gateway):
        response, _, _ = await get_json(gateway, "/readyz")
        assert response.status == 200

    async def test_overall_ok(self, gateway):
        _, body, _ = await get_json(gateway, "/readyz")
        assert body["status"] == "ok"

    @pytest.mark.parametrize("check", ["postgres", "s3"])
    async def test_check_ok(self, gateway, check):
        _, body, _ = await get_json(gateway, "/readyz")
        assert body["checks"][check]["status"] == "ok"

    @pytest.mark.parametrize("check", ["postgres", "s3"])
    async def test_latency_is_a_number(self, gateway, check):
        _, body, _ = await get_json(gateway, "/readyz")
        latency = body["checks"][check]["latency_ms"]

        assert isinstance(latency, int | float)
        assert latency >= 0

    async def test_only_two_checks(self, gateway):
        _, body, _ = await get_json(gateway, "/readyz")
        assert set(body["checks"]) == {"postgres", "s3"}

    async def test_postgresql_scheme(self, start_gateway, postgres):
        url = "postgresql://" + postgres.url.split("://", 1)[1]
        client = await start_gateway(DATABASE_URL=url)

        response, _, _ = await get_json(client, "/readyz")
        assert response.status == 200

    async def test_postgres_scheme(self, start_gateway, postgres):
        url = "postgres://" + postgres.url.split("://", 1)[1]
        client = await start_gateway(DATABASE_URL=url)

        response, _, _ = await get_json(client, "/readyz")
        assert response.status == 200

    async def test_sslmode_disable_honoured(self, start_gateway, postgres):
        separator = "&" if "?" in postgres.url else "?"
        client = await start_gateway(DATABASE_URL=f"{postgres.url}{separator}sslmode=disable")

        response, _, _ = await get_json(client, "/readyz")
        assert response.status == 200

    async def test_sslmode_require_honoured(self, start_gateway, postgres, db):
        """The test server has no TLS, so a URL that requires it must fail the check."""
        if await db.fetchval("SHOW ssl") == "on":
            pytest.skip("the test PostgreSQL server offers TLS")
        if await db.fetchval("SELECT inet_server_addr()") is None:
            pytest.skip("the test PostgreSQL server is reached through a Unix socket, where sslmode does not apply")
        separator = "&" if "?" in postgres.url else "?"
        client = await start_gateway(DATABASE_URL=f"{postgres.url}{separator}sslmode=require")

        _, body, _ = await get_json(client, "/readyz")
        assert body["checks"]["postgres"]["status"] == "fail"


class TestReadyzBucketMissing:
    @pytest.fixture
    async def answer(self, start_gateway):
        client = await start_gateway(S3_BUCKET="missing-bucket")
        return await get_json(client, "/readyz")

    async def test_status_503(self, answer):
        response, _, _ = answer
        assert response.status == 503

    async def test_overall_fail(self, answer):
        _, body, _ = answer
        assert body["status"] == "fail"

    async def test_s3_check_fails(self, answer):
        _, body, _ = answer
        assert body["checks"]["s3"]["status"] == "fail"

    async def test_postgres_check_still_ok(self, answer):
        _, body, _ = answer
        assert body["checks"]["postgres"]["status"] == "ok"

    async def test_failed_check_has_latency(self, answer):
        _, body, _ = answer
        assert isinstance(body["checks"]["s3"]["latency_ms"], int | float)

    async def test_answers_quickly(self, answer):
        _, _, elapsed = answer
        assert elapsed < ANSWER_WITHIN_SECONDS


class TestReadyzDatabaseUnreachable:
    @pytest.fixture
    async def answer(self, start_gateway):
        client = await start_gateway(DATABASE_URL=closed_port_database_url())
        return await get_json(client, "/readyz")

    async def test_status_503(self, answer):
        response, _, _ = answer
        assert response.status == 503

    async def test_overall_fail(self, answer):
        _, body, _ = answer
        assert body["status"] == "fail"

    async def test_postgres_check_fails(self, answer):
        _, body, _ = answer
        assert body["checks"]["postgres"]["status"] == "fail"

    async def test_s3_check_still_ok(self, answer):
        _, body, _ = answer
        assert body["checks"]["s3"]["status"] == "ok"

    async def test_answers_quickly(self, answer):
        _, _, elapsed = answer
        assert elapsed < ANSWER_WITHIN_SECONDS


class TestReadyzHungDependencies:
    async def test_hung_database_fails_in_time(self, start_gateway, hung_server):
        client = await start_gateway(DATABASE_URL=f"postgres://postgres@127.0.0.1:{hung_server}/postgres")

        response, body, elapsed = await get_json(client, "/readyz")

        assert response.status == 503
        assert body["checks"]["postgres"]["status"] == "fail"
        assert elapsed < ANSWER_WITHIN_SECONDS

    async def test_hung_s3_fails_in_time(self, start_gateway, hung_server):
        client = await start_gateway(S3_ENDPOINT_URL=f"http://127.0.0.1:{hung_server}")

        response, body, elapsed = await get_json(client, "/readyz")

        assert response.status == 503
        assert body["checks"]["s3"]["status"] == "fail"
        assert elapsed < ANSWER_WITHIN_SECONDS
