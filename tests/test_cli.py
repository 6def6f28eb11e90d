"""The command line, run as real subprocesses against the test PostgreSQL and moto, checked through /media."""

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import pytest
from cryptography.fernet import Fernet

from gateway.settings import load_settings

from .conftest import BUCKET
from .processes import SCRIPT, process_env
from .servers import _with_database, free_port

OWNER = "42"
FRIEND = "7"
ENTRY_POINTS = {"module": [sys.executable, "-m", "gateway"], "script": [str(SCRIPT)]}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(env: dict[str, str], *args: str, via: str = "module") -> Result:
    process = await asyncio.create_subprocess_exec(
        *ENTRY_POINTS[via],
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return Result(process.returncode, stdout.decode(), stderr.decode())


def assert_one_line_error(result: Result) -> str:
    """Check the shape every failing command must have, and return its single stderr line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr.strip()


@pytest.fixture
def cli_env(gateway_env, tmp_path) -> dict[str, str]:
    return process_env(gateway_env, tmp_path)


@pytest.fixture
async def empty_database(postgres) -> AsyncIterator[str]:
    """The URL of a new database on the test server that has no schema yet."""
    name = f"media_gateway_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(postgres.url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def closed_port_url() -> str:
    return f"postgres://postgres@127.0.0.1:{free_port()}/postgres"


async def status_of(client, key: str, user_id: str | None, token=None) -> int:
    headers = {"Authorization": f"Bearer {token(user_id)}"} if user_id else {}
    response = await client.get(f"/media/{key}", headers=headers, allow_redirects=False)
    return response.status


async def location_query(client, key: str, token_value: str) -> dict[str, list[str]]:
    response = await client.get(
        f"/media/{key}", headers={"Authorization": f"Bearer {token_value}"}, allow_redirects=False
    )
    assert response.status == 302
    return parse_qs(urlsplit(response.headers["Location"]).query)


CONFIG_ERRORS = [
    (["serve"], {"DATABASE_URL": None}, "DATABASE_URL"),
    (["serve"], {"S3_BUCKET": None}, "S3_BUCKET"),
    (["serve"], {"SESSION_SECRET": None}, "SESSION_SECRET"),
    (["serve"], {"MEDIA_URL_TTL": "0"}, "MEDIA_URL_TTL"),
    (["serve"], {"MEDIA_URL_TTL": "604801"}, "MEDIA_URL_TTL"),
    (["serve"], {"S3_ADDRESSING_STYLE": "dns"}, "S3_ADDRESSING_STYLE"),
    (["serve"], {"LOGIN_URL": "//evil.example"}, "LOGIN_URL"),
    (["serve"], {"PORT": "http"}, "PORT"),
    (["check"], {"DATABASE_URL": None}, "DATABASE_URL"),
    (["check"], {"S3_BUCKET": None}, "S3_BUCKET"),
    (["check"], {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    (["migrate"], {"DATABASE_URL": None}, "DATABASE_URL"),
    (["migrate"], {"DATABASE_URL": "mysql://u@127.0.0.1/db"}, "DATABASE_URL"),
    (["objects", "add", "a.txt", "--owner", OWNER], {"DATABASE_URL": None}, "DATABASE_URL"),
    (
        ["objects", "grant", "a.txt", "--to", FRIEND],
        {"DATABASE_STATEMENT_CACHE_SIZE": "-1"},
        "DATABASE_STATEMENT_CACHE_SIZE",
    ),
    (["objects", "revoke", "a.txt", "--to", FRIEND], {"DATABASE_URL": None}, "DATABASE_URL"),
    (["session", "issue", "--user", OWNER], {"SESSION_SECRET": None}, "SESSION_SECRET"),
    (["uploads", "prune"], {"DATABASE_URL": None}, "DATABASE_URL"),
    (["uploads", "prune"], {"S3_BUCKET": None}, "S3_BUCKET"),
    (["uploads", "prune"], {"MEDIA_URL_TTL": "0"}, "MEDIA_URL_TTL"),
]


def _apply(env: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    env = dict(env)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


class TestConfigurationErrors:
    @pytest.mark.parametrize(
        ("args", "changes", "variable"),
        CONFIG_ERRORS,
        ids=[f"{' '.join(args[:2])}-{variable}={changes[variable]}" for args, changes, variable in CONFIG_ERRORS],
    )
    async def test_one_line_naming_variable(self, cli_env, args, changes, variable):
        result = await run_cli(_apply(cli_env, changes), *args)

        line = assert_one_line_error(result)
        assert variable in line

    @pytest.mark.parametrize("command", ["serve", "check", "migrate"])
    async def test_console_script_same_error(self, cli_env, command):
        result = await run_cli(_apply(cli_env, {"DATABASE_URL": None}), command, via="script")

        line = assert_one_line_error(result)
        assert "DATABASE_URL" in line

    async def test_nothing_on_stdout(self, cli_env):
        result = await run_cli(_apply(cli_env, {"S3_BUCKET": None}), "serve")
        assert result.stdout == ""

    @pytest.mark.parametrize("via", ENTRY_POINTS)
    async def test_malformed_secret_not_echoed(self, cli_env, via):
        malformed = Fernet.generate_key().decode()[:-3] + "!!="
        result = await run_cli({**cli_env, "SESSION_SECRET": malformed}, "serve", via=via)

        line = assert_one_line_error(result)
        assert "SESSION_SECRET" in line
        assert malformed not in line

    async def test_serve_without_aws_credentials(self, cli_env):
        env = _apply(cli_env, {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
        result = await run_cli(env, "serve", "--port", str(free_port()))

        line = assert_one_line_error(result)
        assert "AWS_ACCESS_KEY_ID" in line


class TestServeListenErrors:
    async def test_port_in_use_one_line(self, cli_env):
        blocker = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
        port = blocker.sockets[0].getsockname()[1]
        try:
            result = await run_cli(cli_env, "serve", "--host", "127.0.0.1", "--port", str(port))
        finally:
            blocker.close()
            await blocker.wait_closed()

        line = assert_one_line_error(result)
        assert str(port) in line

    async def test_address_not_on_this_machine_one_line(self, cli_env):
        """192.0.2.1 is reserved for documentation, so no machine has it and binding fails without traffic."""
        result = await run_cli(cli_env, "serve", "--host", "192.0.2.1", "--port", str(free_port()))

        line = assert_one_line_error(result)
        assert "192.0.2.1" in line


class TestArguments:
    @pytest.mark.parametrize(
        "args",
        [
            [],
            ["frobnicate"],
            ["objects"],
            ["objects", "frob"],
            ["objects", "add", "a.txt"],
            ["objects", "grant", "a.txt"],
            ["session"],
            ["session", "issue"],
            ["serve", "--port", "http"],
            ["serve", "--port", "70000"],
            ["keygen", "--bits", "128"],
            ["uploads"],
            ["uploads", "frob"],
            ["uploads", "prune", "--older-than"],
            ["uploads", "prune", "--older-than", "soon"],
        ],
        ids=lambda args: " ".join(args) or "nothing",
    )
    async def test_usage_error_is_one_line(self, cli_env, args):
        result = await run_cli(cli_env, *args)

        assert_one_line_error(result)
        assert result.returncode == 2

    @pytest.mark.parametrize("via", ENTRY_POINTS)
    async def test_unknown_command_named(self, cli_env, via):
        result = await run_cli(cli_env, "frobnicate", via=via)

        line = assert_one_line_error(result)
        assert "frobnicate" in line

    async def test_help_exits_zero(self, cli_env):
        result = await run_cli(cli_env, "--help")

        assert result.returncode == 0
        assert "objects" in result.stdout


class TestKeygen:
    @pytest.mark.parametrize("via", ENTRY_POINTS)
    async def test_prints_valid_fernet_key(self, cli_env, via):
        result = await run_cli({}, "keygen", via=via)
        key = result.stdout.strip()

        assert result.returncode == 0
        assert len(result.stdout.splitlines()) == 1
        assert Fernet(key.encode()).decrypt(Fernet(key.encode()).encrypt(b"x")) == b"x"

    async def test_key_accepted_as_session_secret(self):
        key = (await run_cli({}, "keygen")).stdout.strip()

        assert load_settings({"SESSION_SECRET": key}).session_secrets == (key.encode(),)

    async def test_keys_differ(self):
        first = await run_cli({}, "keygen")
        second = await run_cli({}, "keygen")

        assert first.stdout != second.stdout


class TestSessionIssue:
    async def test_token_accepted_as_bearer(self, cli_env, start_gateway, db):
        await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.txt', $1)", OWNER)
        client = await start_gateway()

        result = await run_cli(cli_env, "session", "issue", "--user", OWNER)
        response = await client.get(
            "/media/a.txt", headers={"Authorization": f"Bearer {result.stdout.strip()}"}, allow_redirects=False
        )

        assert result.returncode == 0
        assert response.status == 302

    async def test_token_accepted_as_cookie(self, cli_env, start_gateway, db):
        await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.txt', $1)", OWNER)
        client = await start_gateway()

        result = await run_cli(cli_env, "session", "issue", "--user", OWNER, via="script")
        response = await client.get(
            "/media/a.txt", headers={"Cookie": f"gateway_session={result.stdout.strip()}"}, allow_redirects=False
        )

        assert response.status == 302

    async def test_token_is_for_that_user_only(self, cli_env, start_gateway, db):
        await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.txt', $1)", OWNER)
        client = await start_gateway()

        result = await run_cli(cli_env, "session", "issue", "--user", FRIEND)
        response = await client.get(
            "/media/a.txt", headers={"Authorization": f"Bearer {result.stdout.strip()}"}, allow_redirects=False
        )

        assert response.status == 403

    async def test_prints_only_the_token(self, cli_env):
        result = await run_cli(cli_env, "session", "issue", "--user", OWNER)
        assert len(result.stdout.splitlines()) == 1

    async def test_needs_no_database(self, cli_env):
        env = {**cli_env, "DATABASE_URL": closed_port_url()}

        result = await run_cli(env, "session", "issue", "--user", OWNER)
        assert result.returncode == 0

    @pytest.mark.parametrize("user_id", ["", "   ", "x" * 257, "a\tb"], ids=["empty", "blank", "too-long", "tab"])
    async def test_unusable_user_id_rejected(self, cli_env, user_id):
        """The gateway would reject such a token, so issuing one is an input error."""
        result = await run_cli(cli_env, "session", "issue", "--user", user_id)

        line = assert_one_line_error(result)
        assert "--user" in line


class TestObjectsAdd:
    async def test_private_object_readable_by_owner(self, cli_env, start_gateway, db, token):
        result = await run_cli(cli_env, "objects", "add", "videos/clip.mp4", "--owner", OWNER)
        client = await start_gateway()

        assert result.returncode == 0
        assert await status_of(client, "videos/clip.mp4", OWNER, token) == 302

    async def test_private_object_forbidden_to_others(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "videos/clip.mp4", "--owner", OWNER)
        client = await start_gateway()

        assert await status_of(client, "videos/clip.mp4", FRIEND, token) == 403

    async def test_private_object_needs_session(self, cli_env, start_gateway, db):
        await run_cli(cli_env, "objects", "add", "videos/clip.mp4", "--owner", OWNER)
        client = await start_gateway()

        assert await status_of(client, "videos/clip.mp4", None) == 401

    async def test_public_object_readable_anonymously(self, cli_env, start_gateway, db):
        result = await run_cli(cli_env, "objects", "add", "images/logo.png", "--owner", OWNER, "--public")
        client = await start_gateway()

        assert result.returncode == 0
        assert await status_of(client, "images/logo.png", None) == 302

    async def test_content_type_signed(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "videos/clip", "--owner", OWNER, "--content-type", "video/mp4")
        client = await start_gateway()

        query = await location_query(client, "videos/clip", token(OWNER))
        assert query["response-content-type"] == ["video/mp4"]

    async def test_filename_signed_inline(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "docs/x1", "--owner", OWNER, "--filename", "report.pdf")
        client = await start_gateway()

        query = await location_query(client, "docs/x1", token(OWNER))
        disposition = query["response-content-disposition"][0]

        assert disposition.startswith("inline;")
        assert 'filename="report.pdf"' in disposition

    async def test_bytes_reachable_end_to_end(self, cli_env, start_gateway, db, s3, token):
        s3.put_object(Bucket=BUCKET, Key="media/videos/end to end.mp4", Body=b"\x00\x01 video bytes")
        await run_cli(cli_env, "objects", "add", "videos/end to end.mp4", "--owner", OWNER)
        client = await start_gateway()

        response = await client.get(
            "/media/videos/end%20to%20end.mp4",
            headers={"Authorization": f"Bearer {token(OWNER)}"},
            allow_redirects=False,
        )
        async with aiohttp.ClientSession() as session:
            async with session.get(response.headers["Location"]) as fetched:
                body = await fetched.read()

        assert body == b"\x00\x01 video bytes"

    async def test_duplicate_key_rejected(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)

        result = await run_cli(cli_env, "objects", "add", "a.txt", "--owner", FRIEND, "--public")

        line = assert_one_line_error(result)
        assert "a.txt" in line

    async def test_duplicate_key_keeps_first_row(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", FRIEND, "--public")
        client = await start_gateway()

        assert await status_of(client, "a.txt", None) == 401
        assert await status_of(client, "a.txt", FRIEND, token) == 403
        assert await status_of(client, "a.txt", OWNER, token) == 302

    @pytest.mark.parametrize(
        "key",
        ["a//b", "/a", "a/", "a/../b", "./a", "a\x01b", "a\x7fb", "x" * 1025],
        ids=["double-slash", "leading-slash", "trailing-slash", "dot-dot", "dot", "control", "del", "too-long"],
    )
    async def test_malformed_key_rejected(self, cli_env, db, key):
        result = await run_cli(cli_env, "objects", "add", key, "--owner", OWNER)

        assert_one_line_error(result)
        assert await db.fetchval("SELECT count(*) FROM media_objects") == 0

    @pytest.mark.parametrize(
        "content_type",
        ["video", "text/plain\r\nSet-Cookie: a=b", "text/plain; charset", "video/ mp4", ""],
        ids=["no-subtype", "crlf", "parameter-without-value", "space", "empty"],
    )
    async def test_invalid_content_type_rejected(self, cli_env, db, content_type):
        result = await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER, "--content-type", content_type)

        line = assert_one_line_error(result)
        assert "--content-type" in line
        assert await db.fetchval("SELECT count(*) FROM media_objects") == 0

    async def test_content_type_with_parameter_accepted(self, cli_env, start_gateway, db, token):
        content_type = "text/plain; charset=utf-8"
        await run_cli(cli_env, "objects", "add", "notes.txt", "--owner", OWNER, "--content-type", content_type)
        client = await start_gateway()

        query = await location_query(client, "notes.txt", token(OWNER))
        assert query["response-content-type"] == [content_type]

    @pytest.mark.parametrize("owner", [" ", "a\tb", "x" * 257], ids=["blank", "tab", "too-long"])
    async def test_unusable_owner_rejected(self, cli_env, db, owner):
        """Ids that no session token can carry are rejected, as `session issue` rejects them."""
        result = await run_cli(cli_env, "objects", "add", "a.txt", "--owner", owner)

        line = assert_one_line_error(result)
        assert result.returncode == 2
        assert "--owner" in line
        assert "1 to 256 printable characters" in line
        assert await db.fetchval("SELECT count(*) FROM media_objects") == 0

    async def test_unreachable_database_one_line(self, cli_env):
        env = {**cli_env, "DATABASE_URL": closed_port_url()}

        result = await run_cli(env, "objects", "add", "a.txt", "--owner", OWNER)
        line = assert_one_line_error(result)
        assert "DATABASE_URL: PostgreSQL is not usable" in line


class TestObjectsGrant:
    async def test_grant_lets_grantee_read(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        result = await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        client = await start_gateway()

        assert result.returncode == 0
        assert await status_of(client, "a.txt", FRIEND, token) == 302

    async def test_grant_is_for_grantee_only(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        client = await start_gateway()

        assert await status_of(client, "a.txt", "8", token) == 403

    @pytest.mark.parametrize("expires", ["2999-01-31T12:00:00Z", "2999-01-31T12:00:00+02:00", "2999-01-31 12:00+00:00"])
    async def test_future_expiry_with_zone(self, cli_env, start_gateway, db, token, expires):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        result = await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND, "--expires", expires)
        client = await start_gateway()

        assert result.returncode == 0
        assert await status_of(client, "a.txt", FRIEND, token) == 302

    async def test_past_expiry_warns_and_denies(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        result = await run_cli(
            cli_env, "objects", "grant", "a.txt", "--to", FRIEND, "--expires", "2001-01-01T00:00:00Z"
        )
        client = await start_gateway()

        assert result.returncode == 0
        assert "already past" in result.stderr
        assert await status_of(client, "a.txt", FRIEND, token) == 403

    async def test_regrant_replaces_expiry(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND, "--expires", "2001-01-01T00:00:00Z")
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        client = await start_gateway()

        assert await status_of(client, "a.txt", FRIEND, token) == 302

    async def test_expiry_without_zone_rejected(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        result = await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND, "--expires", "2999-01-31T12:00:00")
        client = await start_gateway()

        line = assert_one_line_error(result)
        assert "--expires" in line
        assert await status_of(client, "a.txt", FRIEND, token) == 403

    @pytest.mark.parametrize("expires", ["tomorrow", "2999-13-01T00:00:00Z", ""])
    async def test_expiry_not_iso8601_rejected(self, cli_env, db, expires):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)

        result = await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND, "--expires", expires)

        line = assert_one_line_error(result)
        assert "--expires" in line

    async def test_unknown_key_rejected(self, cli_env, db):
        result = await run_cli(cli_env, "objects", "grant", "nothing/here.txt", "--to", FRIEND)

        line = assert_one_line_error(result)
        assert "nothing/here.txt" in line

    async def test_empty_grantee_rejected(self, cli_env, db):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)

        result = await run_cli(cli_env, "objects", "grant", "a.txt", "--to", "")

        line = assert_one_line_error(result)
        assert "--to" in line


class TestObjectsRevoke:
    async def test_revoke_stops_access(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        client = await start_gateway()
        assert await status_of(client, "a.txt", FRIEND, token) == 302

        result = await run_cli(cli_env, "objects", "revoke", "a.txt", "--to", FRIEND)

        assert result.returncode == 0
        assert await status_of(client, "a.txt", FRIEND, token) == 403

    async def test_revoke_keeps_owner_access(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        await run_cli(cli_env, "objects", "revoke", "a.txt", "--to", FRIEND)
        client = await start_gateway()

        assert await status_of(client, "a.txt", OWNER, token) == 302

    async def test_revoke_keeps_other_grants(self, cli_env, start_gateway, db, token):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", FRIEND)
        await run_cli(cli_env, "objects", "grant", "a.txt", "--to", "8")
        await run_cli(cli_env, "objects", "revoke", "a.txt", "--to", FRIEND)
        client = await start_gateway()

        assert await status_of(client, "a.txt", "8", token) == 302

    async def test_revoke_without_grant_says_so(self, cli_env, db):
        await run_cli(cli_env, "objects", "add", "a.txt", "--owner", OWNER)

        result = await run_cli(cli_env, "objects", "revoke", "a.txt", "--to", FRIEND)

        assert result.returncode == 0
        assert "nothing to revoke" in result.stdout


class TestObjectKeyLimit:
    """S3 object keys are at most 1024 UTF-8 bytes, MEDIA_PREFIX included. Each key here ends in a two-byte letter."""

    @pytest.mark.parametrize("prefix, key", [("media/", "k" * 1016 + "é"), ("tenants/é/", "k" * 1011 + "é")])
    async def test_add_full_key_of_1024_bytes(self, cli_env, db, prefix, key):
        result = await run_cli({**cli_env, "MEDIA_PREFIX": prefix}, "objects", "add", key, "--owner", OWNER)

        assert len((prefix + key).encode()) == 1024
        assert result.returncode == 0, result
        assert await db.fetchval("SELECT count(*) FROM media_objects WHERE key = $1", key) == 1

    @pytest.mark.parametrize(
        "prefix, key, limit", [("media/", "k" * 1017 + "é", 1018), ("tenants/é/", "k" * 1012 + "é", 1013)]
    )
    async def test_add_full_key_of_1025_bytes_rejected(self, cli_env, db, prefix, key, limit):
        result = await run_cli({**cli_env, "MEDIA_PREFIX": prefix}, "objects", "add", key, "--owner", OWNER)

        line = assert_one_line_error(result)
        assert len((prefix + key).encode()) == 1025
        assert "KEY 'kkkk" in line
        assert f"over the limit of {limit} bytes" in line
        assert await db.fetchval("SELECT count(*) FROM media_objects") == 0

    async def test_grant_over_limit_rejected(self, cli_env, db):
        key = "k" * 1017 + "é"
        await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ($1, $2)", key, OWNER)

        result = await run_cli(cli_env, "objects", "grant", key, "--to", FRIEND)

        line = assert_one_line_error(result)
        assert "over the limit of 1018 bytes" in line
        assert await db.fetchval("SELECT count(*) FROM media_grants") == 0

    async def test_revoke_over_limit_rejected(self, cli_env, db):
        key = "k" * 1017 + "é"
        await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ($1, $2)", key, OWNER)
        await db.execute("INSERT INTO media_grants (key, grantee_id) VALUES ($1, $2)", key, FRIEND)

        result = await run_cli(cli_env, "objects", "revoke", key, "--to", FRIEND)

        line = assert_one_line_error(result)
        assert "over the limit of 1018 bytes" in line
        assert await db.fetchval("SELECT count(*) FROM media_grants") == 1


class TestMigrate:
    async def test_fresh_database(self, cli_env, empty_database):
        result = await run_cli({**cli_env, "DATABASE_URL": empty_database}, "migrate")
        assert result.returncode == 0, result.stderr

    async def test_twice_succeeds(self, cli_env, empty_database):
        env = {**cli_env, "DATABASE_URL": empty_database}
        await run_cli(env, "migrate")

        result = await run_cli(env, "migrate", via="script")
        assert result.returncode == 0, result.stderr

    async def test_postgresql_scheme(self, cli_env, empty_database):
        url = "postgresql://" + empty_database.split("://", 1)[1]

        result = await run_cli({**cli_env, "DATABASE_URL": url}, "migrate")
        assert result.returncode == 0, result.stderr

    async def test_migrated_database_serves_objects(self, cli_env, empty_database, start_gateway, token):
        env = {**cli_env, "DATABASE_URL": empty_database}
        await run_cli(env, "migrate")
        await run_cli(env, "migrate")
        await run_cli(env, "objects", "add", "a.txt", "--owner", OWNER)
        client = await start_gateway(DATABASE_URL=empty_database)

        assert await status_of(client, "a.txt", OWNER, token) == 302

    async def test_unreachable_database_one_line(self, cli_env):
        result = await run_cli({**cli_env, "DATABASE_URL": closed_port_url()}, "migrate")
        assert_one_line_error(result)


class TestUnmigratedDatabase:
    @pytest.mark.parametrize(
        "args",
        [
            ["objects", "add", "a.txt", "--owner", OWNER],
            ["objects", "grant", "a.txt", "--to", FRIEND],
            ["objects", "revoke", "a.txt", "--to", FRIEND],
            ["check"],
            ["uploads", "prune"],
        ],
        ids=["add", "grant", "revoke", "check", "uploads-prune"],
    )
    async def test_hint_to_migrate(self, cli_env, empty_database, args):
        result = await run_cli({**cli_env, "DATABASE_URL": empty_database}, *args)

        line = assert_one_line_error(result)
        assert "media-gateway migrate" in line


class TestCheck:
    @pytest.mark.parametrize("via", ENTRY_POINTS)
    async def test_all_well_exits_zero(self, cli_env, via):
        result = await run_cli(cli_env, "check", via=via)

        assert result.returncode == 0, result.stderr
        assert result.stderr == ""

    async def test_database_unreachable(self, cli_env):
        result = await run_cli({**cli_env, "DATABASE_URL": closed_port_url()}, "check")

        line = assert_one_line_error(result)
        assert line.startswith("DATABASE_URL")

    async def test_bucket_missing(self, cli_env):
        result = await run_cli({**cli_env, "S3_BUCKET": "missing-bucket"}, "check")

        line = assert_one_line_error(result)
        assert line.startswith("S3_BUCKET")

    async def test_s3_unreachable(self, cli_env):
        result = await run_cli({**cli_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}, "check")

        line = assert_one_line_error(result)
        assert line.startswith("S3_BUCKET")

    async def test_one_line_per_problem(self, cli_env):
        env = {**cli_env, "DATABASE_URL": closed_port_url(), "S3_BUCKET": "missing-bucket"}
        result = await run_cli(env, "check")
        lines = result.stderr.splitlines()

        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(lines) == 2
        assert lines[0].startswith("DATABASE_URL")
        assert lines[1].startswith("S3_BUCKET")

    async def test_missing_secret_reported(self, cli_env):
        env = {name: value for name, value in cli_env.items() if name != "SESSION_SECRET"}

        line = assert_one_line_error(await run_cli(env, "check"))
        assert "SESSION_SECRET" in line
