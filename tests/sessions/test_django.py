"""The gateway in front of the test Django project: Django's own logins, uploads and sessions."""

import logging
import os
import subprocess
import sys
import uuid
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import asyncpg
import pytest

from gateway.errors import ConfigError, GatewayError

from ..conftest import BUCKET
from ..django_site.harness import SECRET_KEY
from ..servers import free_port

OWNERSHIP_QUERY = "SELECT user_id::text AS owner_id FROM videos_video WHERE video = $1"


@pytest.fixture
def start_django_gateway(start_gateway, django_site):
    async def start(**overrides: str):
        env = {"SESSION_BACKEND": "django", "DJANGO_SECRET_KEY": SECRET_KEY, "OWNERSHIP_QUERY": OWNERSHIP_QUERY}
        return await start_gateway(**{**env, **overrides})

    return start


@pytest.fixture
async def gateway(start_django_gateway):
    return await start_django_gateway()


@pytest.fixture
async def alice(django_site):
    return await _member(django_site, "alice")


@pytest.fixture
async def bob(django_site):
    return await _member(django_site, "bob")


class _Member:
    def __init__(self, user_id: str, username: str, video: str, content: bytes) -> None:
        self.user_id = user_id
        self.username = username
        self.video = video
        self.content = content


async def _member(django_site, name: str) -> _Member:
    username = f"{name}-{uuid.uuid4().hex[:8]}"
    user_id = await django_site.create_user(username)
    content = f"video bytes of {username}".encode()
    video = await django_site.upload_video(user_id, f"{name} holiday.mp4", content)
    return _Member(user_id, username, video, content)


def _media_path(name: str) -> str:
    return "/media/" + quote(name)


async def _get(client, name: str, session_key: str | None = None, cookie: str = "sessionid", **headers: str):
    if session_key is not None:
        headers["Cookie"] = f"{cookie}={session_key}"
    return await client.get(_media_path(name), headers=headers, allow_redirects=False)


async def test_owner_redirected_to_stored_object(gateway, django_site, alice, s3):
    session_key = await django_site.login(alice.username)

    response = await _get(gateway, alice.video, session_key)
    location = urlsplit(response.headers["Location"])

    assert response.status == 302
    assert unquote(location.path) == f"/{BUCKET}/media/{alice.video}"
    assert s3.head_object(Bucket=BUCKET, Key=f"media/{alice.video}")["ContentLength"] == len(alice.content)


async def test_owner_fetches_bytes_django_uploaded(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)

    response = await _get(gateway, alice.video, session_key)
    async with aiohttp.ClientSession() as http, http.get(response.headers["Location"]) as fetched:
        body = await fetched.read()

    assert fetched.status == 200
    assert body == alice.content


async def test_other_user_forbidden(gateway, django_site, alice, bob):
    session_key = await django_site.login(bob.username)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 403


async def test_unknown_file_forbidden(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)

    response = await _get(gateway, "user_videos/nobody-uploaded-this.mp4", session_key)

    assert response.status == 403


async def test_anonymous_unauthorized(gateway, alice):
    response = await _get(gateway, alice.video)

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_anonymous_browser_sent_to_login_url(start_django_gateway, alice):
    gateway = await start_django_gateway(LOGIN_URL="/accounts/login/")

    response = await _get(gateway, alice.video, Accept="text/html")

    assert response.status == 302
    assert response.headers["Location"] == "/accounts/login/?next=" + quote(_media_path(alice.video), safe="/")


async def test_anonymous_django_session_unauthorized(gateway, django_site, alice):
    session_key = await django_site.create_session({"cart": [1, 2]})

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_expired_session_unauthorized(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)
    await django_site.expire_session(session_key)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_logged_out_session_unauthorized(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)
    await django_site.logout(session_key)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_unknown_session_key_unauthorized(gateway, alice):
    response = await _get(gateway, alice.video, "a" * 32)

    assert response.status == 401


@pytest.mark.parametrize("cookie", ["not a key", "short", "x" * 41, "../../etc", "ab%00cdefgh"])
async def test_malformed_cookie_unauthorized(gateway, alice, cookie):
    response = await _get(gateway, alice.video, quote(cookie))

    assert response.status == 401


GARBAGE = [
    "",
    "garbage",
    "no-signature-here",
    "!!!!:aaaa:bbbb",
    ".bm90IHpsaWI:1abc:sig",
    "eyJhIjox:1abc:sig",
    "W10:1abc:sig",
    "\u00e9\u00e9\u00e9:\u00e9:\u00e9",
    ":::",
]


@pytest.mark.parametrize("secret", [SECRET_KEY, ""], ids=["signed", "unsigned"])
@pytest.mark.parametrize("data", GARBAGE)
async def test_garbage_session_data_unauthorized(start_django_gateway, django_site, alice, secret, data):
    gateway = await start_django_gateway(DJANGO_SECRET_KEY=secret)
    session_key = await django_site.login(alice.username)
    await django_site.set_session_data(session_key, data)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


@pytest.mark.parametrize(
    "values",
    [
        [1, 2],
        "a string",
        {"_auth_user_id": None},
        {"_auth_user_id": True},
        {"_auth_user_id": ""},
        {"_auth_user_id": "not-a-number"},
        {"_auth_user_id": "99999999999999999999"},
        {"_auth_user_id": "\u0661\u0662"},
        {"_auth_user_id": "987654321"},
    ],
    ids=["list", "string", "null-id", "bool-id", "empty-id", "text-id", "huge-id", "arabic-digits", "no-such-user"],
)
@pytest.mark.parametrize("secret", [SECRET_KEY, ""], ids=["signed", "unsigned"])
async def test_signed_unusable_session_unauthorized(start_django_gateway, django_site, alice, secret, values):
    gateway = await start_django_gateway(DJANGO_SECRET_KEY=secret)
    session_key = await django_site.login(alice.username)
    await django_site.set_session_data(session_key, await django_site.encode(values))

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_password_change_ends_session(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)
    await django_site.change_password(alice.user_id, "a new password")

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_new_login_after_password_change_works(gateway, django_site, alice):
    await django_site.login(alice.username)
    await django_site.change_password(alice.user_id, "a new password")
    session_key = await django_site.login(alice.username, "a new password")

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 302


async def test_password_change_unseen_without_secret(start_django_gateway, django_site, alice):
    # The documented trade-off of running without DJANGO_SECRET_KEY.
    gateway = await start_django_gateway(DJANGO_SECRET_KEY="")
    session_key = await django_site.login(alice.username)
    await django_site.change_password(alice.user_id, "a new password")

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 302


async def test_wrong_secret_key_unauthorized(start_django_gateway, django_site, alice):
    gateway = await start_django_gateway(DJANGO_SECRET_KEY="not-the-django-secret-key")
    session_key = await django_site.login(alice.username)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_fallback_secret_key_accepted(start_django_gateway, django_site, alice):
    gateway = await start_django_gateway(DJANGO_SECRET_KEY=f"a-newly-rotated-secret-key, {SECRET_KEY}")
    session_key = await django_site.login(alice.username)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 302


async def test_forged_user_id_unauthorized(gateway, django_site, alice, bob):
    session_key = await django_site.login(bob.username)
    forged = {"_auth_user_id": alice.user_id, "_auth_user_hash": await django_site.auth_hash(alice.user_id)}
    await django_site.set_session_data(session_key, await django_site.encode(forged, secret_key="an-attacker-key"))

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_missing_auth_hash_unauthorized(gateway, django_site, alice):
    session_key = await django_site.create_session({"_auth_user_id": alice.user_id})

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_inactive_user_unauthorized(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)
    await django_site.deactivate(alice.user_id)

    response = await _get(gateway, alice.video, session_key)

    assert response.status == 401


async def test_large_compressed_session_accepted(gateway, django_site, alice):
    session_key = await django_site.login(alice.username)
    await django_site.call(_add_to_session, session_key, {"history": ["/videos/"] * 500})
    data = await django_site.session_data(session_key)

    response = await _get(gateway, alice.video, session_key)

    assert data.startswith(".")
    assert response.status == 302


def _add_to_session(session_key: str, values: dict) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore(session_key=session_key)
    store.update(values)
    store.save()


async def test_cookie_name_configurable(start_django_gateway, django_site, alice):
    gateway = await start_django_gateway(DJANGO_SESSION_COOKIE_NAME="site_session")
    session_key = await django_site.login(alice.username)

    renamed = await _get(gateway, alice.video, session_key, cookie="site_session")
    default = await _get(gateway, alice.video, session_key, cookie="sessionid")

    assert renamed.status == 302
    assert default.status == 401


async def test_gateway_tokens_ignored(gateway, token, alice):
    response = await gateway.get(
        _media_path(alice.video), headers={"Authorization": f"Bearer {token(alice.user_id)}"}, allow_redirects=False
    )

    assert response.status == 401


async def test_database_outage_unavailable(start_django_gateway, alice, django_site):
    session_key = await django_site.login(alice.username)
    gateway = await start_django_gateway(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/postgres")

    response = await _get(gateway, alice.video, session_key)
    body = await response.json()

    assert response.status == 503
    assert body["error"] == "unavailable"


@pytest.fixture
def django_startup_error(startup_error, django_site):
    async def start(**overrides: str) -> GatewayError:
        env = {"SESSION_BACKEND": "django", "DJANGO_SECRET_KEY": SECRET_KEY, "OWNERSHIP_QUERY": OWNERSHIP_QUERY}
        return await startup_error(**{**env, **overrides})

    return start


async def test_missing_user_table_stops_start(django_startup_error):
    error = await django_startup_error(DJANGO_USER_TABLE="accounts_user")

    assert isinstance(error, ConfigError)
    assert str(error).startswith("DJANGO_USER_TABLE: table accounts_user not found")


async def test_user_table_without_password_stops_start(django_startup_error):
    error = await django_startup_error(DJANGO_USER_TABLE="django_content_type")

    assert str(error).startswith("DJANGO_USER_TABLE: table django_content_type has no password column")


@pytest.fixture
async def empty_database_url(postgres):
    """A database on the test server without Django's tables, dropped afterwards."""
    name = f"gateway_empty_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(postgres.url)
    await connection.execute(f'CREATE DATABASE "{name}"')

    yield urlsplit(postgres.url)._replace(path="/" + name).geturl()

    await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await connection.close()


async def test_missing_session_table_stops_start(django_startup_error, empty_database_url):
    error = await django_startup_error(DATABASE_URL=empty_database_url, OWNERSHIP_QUERY="")

    assert str(error).startswith("SESSION_BACKEND: table django_session not found")


def _check(gateway_env, **overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **gateway_env, "SESSION_BACKEND": "django", "OWNERSHIP_QUERY": OWNERSHIP_QUERY, **overrides}
    env.pop("SESSION_SECRET")
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check"], env=env, capture_output=True, text=True, timeout=60
    )


def test_check_command_accepts_django_site(gateway_env, django_site):
    result = _check(gateway_env)

    assert result.returncode == 0
    assert result.stderr == ""


def test_check_command_reports_bad_user_table(gateway_env, django_site):
    result = _check(gateway_env, DJANGO_USER_TABLE="accounts_user")

    assert result.returncode == 1
    assert result.stderr.startswith("DJANGO_USER_TABLE: table accounts_user not found")


def test_check_command_reports_bad_query(gateway_env, django_site):
    result = _check(gateway_env, OWNERSHIP_QUERY="SELECT user_id AS owner FROM videos_video WHERE video = $1")

    assert result.returncode == 1
    assert result.stderr.startswith("OWNERSHIP_QUERY: the query returns no owner_id column")


async def test_session_key_and_secret_not_logged(start_django_gateway, django_site, alice, caplog):
    caplog.set_level(logging.DEBUG)
    gateway = await start_django_gateway(DJANGO_SECRET_KEY=f"not-the-key,{SECRET_KEY}")
    session_key = await django_site.login(alice.username)
    data = await django_site.session_data(session_key)

    allowed = await _get(gateway, alice.video, session_key)
    await django_site.set_session_data(session_key, data + "tampered")
    rejected = await _get(gateway, alice.video, session_key)

    assert allowed.status == 302
    assert rejected.status == 401
    assert "django session rejected" in caplog.text
    assert session_key not in caplog.text
    assert SECRET_KEY not in caplog.text
    assert data.rsplit(":", 1)[-1] not in caplog.text


@pytest.mark.parametrize("ownership_query", [OWNERSHIP_QUERY, None])
async def test_start_leaves_no_table_locked(start_gateway, django_site, postgres, ownership_query):
    env = {"SESSION_BACKEND": "django", "DJANGO_SECRET_KEY": SECRET_KEY}
    if ownership_query:
        env["OWNERSHIP_QUERY"] = ownership_query
    await start_gateway(**env)

    connection = await asyncpg.connect(postgres.url)
    try:
        await connection.execute("SET lock_timeout = '2s'")
        for table in ("auth_user", "django_session", "videos_video"):
            # A migration in the backend takes this lock; the gateway's idle connections must not make it wait.
            async with connection.transaction():
                await connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    finally:
        await connection.close()
