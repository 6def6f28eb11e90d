"""Session tokens on /media, over real HTTP: cookie and bearer, expiry, tampering, rotation, interop."""

import asyncio
import base64
import json
import subprocess
import sys
import time

import aiohttp_session
import pytest
from aiohttp import web
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet, InvalidToken

from .conftest import SESSION_SECRET
from .processes import process_env

OWNER = "42"
KEY = "private/report.pdf"
PUBLIC_KEY = "public/logo.png"


@pytest.fixture
async def objects(db):
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, visibility) VALUES ($1, $2, 'private'), ($3, $2, 'public')",
        KEY,
        OWNER,
        PUBLIC_KEY,
    )


def encrypt(payload: object, secret: str = SESSION_SECRET) -> str:
    return Fernet(secret.encode()).encrypt(json.dumps(payload).encode()).decode()


def flip_one_byte(token: str, position: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[position] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


async def get_with_cookie(client, token: str, key: str = KEY, cookie_name: str = "gateway_session"):
    return await client.get(f"/media/{key}", headers={"Cookie": f"{cookie_name}={token}"}, allow_redirects=False)


async def get_with_bearer(client, token: str, key: str = KEY):
    return await client.get(f"/media/{key}", headers={"Authorization": f"Bearer {token}"}, allow_redirects=False)


async def test_valid_cookie_redirects(gateway, objects, token):
    response = await get_with_cookie(gateway, token(OWNER))
    assert response.status == 302


async def test_valid_bearer_redirects(gateway, objects, token):
    response = await get_with_bearer(gateway, token(OWNER))
    assert response.status == 302


async def test_bearer_scheme_is_case_insensitive(gateway, objects, token):
    response = await gateway.get(
        f"/media/{KEY}", headers={"Authorization": f"bearer {token(OWNER)}"}, allow_redirects=False
    )
    assert response.status == 302


async def test_no_credentials_is_unauthenticated(gateway, objects):
    response = await gateway.get(f"/media/{KEY}", allow_redirects=False)
    assert response.status == 401


async def test_other_user_is_forbidden(gateway, objects, token):
    response = await get_with_bearer(gateway, token("7"))
    assert response.status == 403


async def test_session_within_max_age_accepted(start_gateway, objects, token):
    client = await start_gateway(SESSION_MAX_AGE="600")
    created = int(time.time()) - 500

    response = await get_with_bearer(client, token(OWNER, created=created))
    assert response.status == 302


@pytest.mark.parametrize("send", [get_with_cookie, get_with_bearer], ids=["cookie", "bearer"])
async def test_session_past_max_age_rejected(start_gateway, objects, token, send):
    client = await start_gateway(SESSION_MAX_AGE="600")
    created = int(time.time()) - 700

    response = await send(client, token(OWNER, created=created))
    assert response.status == 401


async def test_default_max_age_is_two_weeks(gateway, objects, token):
    two_weeks = 14 * 24 * 3600

    fresh = await get_with_bearer(gateway, token(OWNER, created=int(time.time()) - two_weeks + 120))
    assert fresh.status == 302

    stale = await get_with_bearer(gateway, token(OWNER, created=int(time.time()) - two_weeks - 120))
    assert stale.status == 401


async def test_max_age_counts_from_created_not_fernet_time(start_gateway, objects):
    """The Fernet timestamp is fresh here, so only the payload's `created` can make it expire."""
    client = await start_gateway(SESSION_MAX_AGE="600")
    stale = encrypt({"created": int(time.time()) - 700, "session": {"user_id": OWNER}})

    response = await get_with_bearer(client, stale)
    assert response.status == 401


async def test_session_created_far_in_future_rejected(gateway, objects, token):
    response = await get_with_bearer(gateway, token(OWNER, created=int(time.time()) + 3600))
    assert response.status == 401


@pytest.mark.parametrize("position", [0, 5, 20, 40, -40, -1], ids=lambda p: f"byte{p}")
@pytest.mark.parametrize("send", [get_with_cookie, get_with_bearer], ids=["cookie", "bearer"])
async def test_tampered_token_rejected(gateway, objects, token, send, position):
    tampered = flip_one_byte(token(OWNER), position)

    response = await send(gateway, tampered)
    assert response.status == 401


async def test_tampered_token_does_not_decrypt():
    """The tampering helper really breaks the token, so the rejection above is not vacuous."""
    tampered = flip_one_byte(encrypt({"created": int(time.time()), "session": {"user_id": OWNER}}), 40)

    with pytest.raises(InvalidToken):
        Fernet(SESSION_SECRET.encode()).decrypt(tampered.encode())


@pytest.mark.parametrize("send", [get_with_cookie, get_with_bearer], ids=["cookie", "bearer"])
async def test_token_from_wrong_key_rejected(gateway, objects, token, send):
    other_key = Fernet.generate_key().decode()

    response = await send(gateway, token(OWNER, secret=other_key))
    assert response.status == 401


@pytest.mark.parametrize(
    "garbage",
    ["not-a-token", "gAAAAA", "%%%%", "a" * 4000, base64.urlsafe_b64encode(b"\x80" * 80).decode()],
    ids=["word", "fernet-prefix", "percent", "long", "version-byte-only"],
)
async def test_garbage_token_rejected(gateway, objects, garbage):
    response = await get_with_bearer(gateway, garbage)
    assert response.status == 401


async def test_non_ascii_bearer_rejected(gateway, objects):
    header = "Bearer t\u00f6ken".encode().decode("latin-1")

    response = await gateway.get(f"/media/{KEY}", headers={"Authorization": header}, allow_redirects=False)
    assert response.status == 401


@pytest.mark.parametrize(
    "session",
    [{}, {"user": OWNER}, {"user_id": ""}, {"user_id": "x" * 257}],
    ids=["empty", "other-field", "empty-id", "id-too-long"],
)
async def test_session_without_usable_user_id_rejected(gateway, objects, session):
    response = await get_with_bearer(gateway, encrypt({"created": int(time.time()), "session": session}))
    assert response.status == 401


@pytest.mark.parametrize(
    "user_id",
    [None, True, 42.0, [OWNER], {"id": OWNER}],
    ids=["null", "bool", "float", "list", "object"],
)
async def test_user_id_of_wrong_type_rejected(gateway, objects, user_id):
    response = await get_with_bearer(gateway, encrypt({"created": int(time.time()), "session": {"user_id": user_id}}))
    assert response.status == 401


async def test_integer_user_id_matches_text_owner(gateway, objects):
    """Backends often store the primary key as a number, and the owner column stores it as text."""
    payload = {"created": int(time.time()), "session": {"user_id": int(OWNER)}}

    response = await get_with_bearer(gateway, encrypt(payload))
    assert response.status == 302


@pytest.mark.parametrize(
    "payload",
    [
        [OWNER],
        "user_id",
        42,
        None,
        {"session": {"user_id": OWNER}},
        {"created": "yesterday", "session": {"user_id": OWNER}},
        {"created": True, "session": {"user_id": OWNER}},
        {"created": float("nan"), "session": {"user_id": OWNER}},
        {"created": float("-inf"), "session": {"user_id": OWNER}},
        {"created": int(time.time()), "session": [OWNER]},
        {"created": int(time.time()), "user_id": OWNER},
    ],
    ids=[
        "list",
        "string",
        "number",
        "null",
        "no-created",
        "created-text",
        "created-bool",
        "created-nan",
        "created-minus-infinity",
        "session-list",
        "user-id-at-top",
    ],
)
async def test_payload_of_wrong_shape_rejected(gateway, objects, payload):
    response = await get_with_bearer(gateway, encrypt(payload))
    assert response.status == 401


async def test_token_that_is_not_json_rejected(gateway, objects):
    not_json = Fernet(SESSION_SECRET.encode()).encrypt(b"\xff\xfe not json").decode()

    response = await get_with_bearer(gateway, not_json)
    assert response.status == 401


async def test_invalid_token_on_public_object_counts_as_anonymous(gateway, objects):
    response = await get_with_bearer(gateway, "not-a-token", key=PUBLIC_KEY)
    assert response.status == 302


async def test_invalid_bearer_challenge_names_invalid_token(gateway, objects):
    response = await get_with_bearer(gateway, "not-a-token")
    assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_custom_cookie_name_is_read(start_gateway, objects, token):
    client = await start_gateway(SESSION_COOKIE_NAME="sid")

    response = await get_with_cookie(client, token(OWNER), cookie_name="sid")
    assert response.status == 302


async def test_default_cookie_name_ignored_when_renamed(start_gateway, objects, token):
    client = await start_gateway(SESSION_COOKIE_NAME="sid")

    response = await get_with_cookie(client, token(OWNER), cookie_name="gateway_session")
    assert response.status == 401


class TestRotation:
    NEW = Fernet.generate_key().decode()
    OLD = Fernet.generate_key().decode()

    @pytest.mark.parametrize("send", [get_with_cookie, get_with_bearer], ids=["cookie", "bearer"])
    async def test_token_from_old_key_accepted(self, start_gateway, objects, token, send):
        client = await start_gateway(SESSION_SECRET=f"{self.NEW},{self.OLD}")

        response = await send(client, token(OWNER, secret=self.OLD))
        assert response.status == 302

    async def test_token_from_new_key_accepted(self, start_gateway, objects, token):
        client = await start_gateway(SESSION_SECRET=f"{self.NEW},{self.OLD}")

        response = await get_with_bearer(client, token(OWNER, secret=self.NEW))
        assert response.status == 302

    async def test_old_key_dropped_rejects_its_tokens(self, start_gateway, objects, token):
        client = await start_gateway(SESSION_SECRET=self.NEW)

        response = await get_with_bearer(client, token(OWNER, secret=self.OLD))
        assert response.status == 401

    async def test_spaces_around_keys_allowed(self, start_gateway, objects, token):
        client = await start_gateway(SESSION_SECRET=f" {self.NEW} , {self.OLD} ")

        response = await get_with_bearer(client, token(OWNER, secret=self.OLD))
        assert response.status == 302

    def test_issued_tokens_use_first_key(self, gateway_env, tmp_path):
        env = {**process_env(gateway_env, tmp_path), "SESSION_SECRET": f"{self.NEW},{self.OLD}"}
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "session", "issue", "--user", OWNER],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        issued = result.stdout.strip().encode()

        payload = json.loads(Fernet(self.NEW.encode()).decrypt(issued))
        assert payload["session"] == {"user_id": OWNER}
        with pytest.raises(InvalidToken):
            Fernet(self.OLD.encode()).decrypt(issued)


async def _save_session(request: web.Request) -> web.Response:
    session = await aiohttp_session.new_session(request)
    session["user_id"] = request.match_info["user"]
    return web.Response(text="saved")


async def _load_session(request: web.Request) -> web.Response:
    session = await aiohttp_session.get_session(request)
    return web.json_response({"user_id": session.get("user_id"), "new": session.new})


def backend_app(storage: EncryptedCookieStorage) -> web.Application:
    """A stand-in for a backend that keeps its sessions with aiohttp-session."""
    app = web.Application(middlewares=[aiohttp_session.session_middleware(storage)])
    app.router.add_get("/login/{user}", _save_session)
    app.router.add_get("/whoami", _load_session)
    return app


async def mint_with_aiohttp_session(aiohttp_client, storage: EncryptedCookieStorage, user_id: str) -> str:
    backend = await aiohttp_client(backend_app(storage))
    response = await backend.get(f"/login/{user_id}")
    assert response.status == 200

    cookie = response.cookies["gateway_session"]
    return cookie.value


# aiohttp-session 2.12 stores its state under plain string keys, which aiohttp 3.10+ warns about.
@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
class TestAiohttpSessionInterop:
    @pytest.mark.parametrize("send", [get_with_cookie, get_with_bearer], ids=["cookie", "bearer"])
    async def test_cookie_from_aiohttp_session_accepted(self, aiohttp_client, gateway, objects, send):
        storage = EncryptedCookieStorage(Fernet(SESSION_SECRET.encode()), cookie_name="gateway_session")
        minted = await mint_with_aiohttp_session(aiohttp_client, storage, OWNER)

        response = await send(gateway, minted)
        assert response.status == 302

    async def test_raw_key_bytes_form_accepted(self, aiohttp_client, gateway, objects):
        """aiohttp-session also takes the 32 raw key bytes and base64-encodes them itself."""
        raw_key = base64.urlsafe_b64decode(SESSION_SECRET)
        storage = EncryptedCookieStorage(raw_key, cookie_name="gateway_session")
        minted = await mint_with_aiohttp_session(aiohttp_client, storage, OWNER)

        response = await get_with_cookie(gateway, minted)
        assert response.status == 302

    async def test_other_users_cookie_forbidden(self, aiohttp_client, gateway, objects):
        storage = EncryptedCookieStorage(Fernet(SESSION_SECRET.encode()), cookie_name="gateway_session")
        minted = await mint_with_aiohttp_session(aiohttp_client, storage, "7")

        response = await get_with_cookie(gateway, minted)
        assert response.status == 403

    async def test_expired_by_gateway_max_age(self, aiohttp_client, start_gateway, objects):
        """aiohttp-session stamps `created` when the session is new, and the gateway's max age counts from it."""
        client = await start_gateway(SESSION_MAX_AGE="1")
        storage = EncryptedCookieStorage(Fernet(SESSION_SECRET.encode()), cookie_name="gateway_session")
        minted = await mint_with_aiohttp_session(aiohttp_client, storage, OWNER)
        created = json.loads(Fernet(SESSION_SECRET.encode()).decrypt(minted.encode()))["created"]

        while time.time() <= created + 1:
            await asyncio.sleep(0.2)

        response = await get_with_bearer(client, minted)
        assert response.status == 401

    async def test_gateway_token_readable_by_aiohttp_session(self, aiohttp_client, token):
        storage = EncryptedCookieStorage(Fernet(SESSION_SECRET.encode()), cookie_name="gateway_session")
        backend = await aiohttp_client(backend_app(storage))

        response = await backend.get("/whoami", headers={"Cookie": f"gateway_session={token(OWNER)}"})
        body = await response.json()

        assert body["user_id"] == OWNER
        assert body["new"] is False
