import asyncio
import os
from collections.abc import Callable, Iterator

import asyncpg
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet

from gateway.admin import schema_sql
from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.protocol import GatewayRunner
from gateway.sessions.cookie import issue_token
from gateway.settings import Settings, load_settings

from .servers import MotoServer, Postgres

# Credentials come from the environment, so botocore never contacts an instance-metadata address.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")

ACCESS_KEY = "AKIDTESTGATEWAY"
SECRET_KEY = "test-secret-key-for-sigv4-checks"
BUCKET = "media-gateway-test"
SESSION_SECRET = Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    asyncio.run(_apply_schema(server.url))
    yield server
    server.stop()


async def _apply_schema(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(schema_sql())
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def s3(moto: MotoServer):
    """A boto3 client for arranging objects in the test bucket."""
    return boto3.client(
        "s3",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def gateway_env(postgres: Postgres, moto: MotoServer, monkeypatch) -> dict[str, str]:
    """The environment a deployed gateway would get; tests change entries before building settings."""
    env = {
        "DATABASE_URL": postgres.url,
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": moto.endpoint_url,
        "S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SESSION_SECRET": SESSION_SECRET,
    }
    # aiobotocore reads credentials from os.environ, so the process environment must agree.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
async def db(postgres: Postgres):
    """A connection to the test database, with the media tables emptied first."""
    connection = await asyncpg.connect(postgres.url)
    await connection.execute("TRUNCATE media_objects, media_grants")
    yield connection
    await connection.close()


class GatewayTestServer(TestServer):
    """aiohttp's test server on the runner `media-gateway serve` uses, so parser errors get the same JSON body."""

    async def _make_runner(self, **kwargs) -> web.AppRunner:
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
def start_gateway(aiohttp_client, gateway_env) -> Callable:
    """Start the real app on a local port; returns an aiohttp test client bound to it."""

    async def start(**overrides: str):
        env = {**gateway_env, **overrides}
        settings: Settings = load_settings(env, require=("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET"))
        return await aiohttp_client(GatewayTestServer(create_app(settings)))

    return start


@pytest.fixture
def startup_error(gateway_env) -> Callable:
    """Run the app's startup, expecting it to fail; returns the error after closing what had started."""

    async def start(**overrides: str) -> GatewayError:
        app = create_app(load_settings({**gateway_env, **overrides}))
        app.on_startup.freeze()
        app.on_cleanup.freeze()
        try:
            await app.startup()
        except GatewayError as error:
            return error
        finally:
            await app.cleanup()
        raise AssertionError("the app started, but a startup error was expected")

    return start


@pytest.fixture
async def gateway(start_gateway, db):
    return await start_gateway()


@pytest.fixture
def token() -> Callable[..., str]:
    def make(user_id: str, created: int | None = None, secret: str = SESSION_SECRET) -> str:
        return issue_token(secret.encode(), user_id, created)

    return make


@pytest.fixture(scope="session")
def django_site(postgres: Postgres, moto: MotoServer):
    """The test Django project on the test database and S3 server, migrated once per test session."""
    from .django_site.harness import DjangoSite

    site = DjangoSite(postgres.url, moto.endpoint_url, BUCKET, ACCESS_KEY, SECRET_KEY)
    yield site
    site.stop()


# Checks every test's log records for credentials; imported last because it reads the secrets above.
from .logcheck import no_credentials_in_logs  # noqa: E402, F401
