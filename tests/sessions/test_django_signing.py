"""Django's session data format, checked against data that Django itself signs."""

import base64
import json
import zlib

import pytest

from gateway.sessions.django_signing import (
    MAX_SESSION_DATA_BYTES,
    InvalidSessionData,
    auth_hash_matches,
    load_session_data,
    session_auth_hash,
)

from ..django_site.harness import OLD_SECRET_KEY, SECRET_KEY

SMALL = {"_auth_user_id": "42", "_auth_user_backend": "django.contrib.auth.backends.ModelBackend"}
LARGE = {**SMALL, "history": ["/videos/"] * 200}
UNICODE = {**SMALL, "name": "Zo\u00eb \u65e5\u672c \U0001f3ac"}


def _unsigned(payload: bytes, compressed: bool = False) -> str:
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return ("." if compressed else "") + encoded + ":1tWxyz:not-a-signature"


@pytest.mark.parametrize("values", [SMALL, LARGE, UNICODE], ids=["small", "compressed", "unicode"])
@pytest.mark.parametrize("keys", [(SECRET_KEY,), ()], ids=["verified", "unverified"])
async def test_loads_what_django_signs(django_site, values, keys):
    data = await django_site.encode(values)

    assert load_session_data(data, keys) == values


async def test_django_compresses_large_sessions(django_site):
    data = await django_site.encode(LARGE)

    assert data.startswith(".")


async def test_uncompressed_data_loads(django_site):
    data = await django_site.encode(SMALL, compress=False)

    assert load_session_data(data, (SECRET_KEY,)) == SMALL


async def test_fallback_key_verifies(django_site):
    data = await django_site.encode(SMALL, secret_key=OLD_SECRET_KEY)

    assert load_session_data(data, (SECRET_KEY, OLD_SECRET_KEY)) == SMALL


async def test_wrong_key_rejected(django_site):
    data = await django_site.encode(SMALL, secret_key=OLD_SECRET_KEY)

    with pytest.raises(InvalidSessionData, match="signature does not match"):
        load_session_data(data, (SECRET_KEY,))


async def test_tampered_payload_rejected(django_site):
    data = await django_site.encode(SMALL)
    payload, timestamp, signature = data.split(":")
    forged = base64.urlsafe_b64encode(json.dumps({"_auth_user_id": "1"}).encode()).rstrip(b"=").decode()

    with pytest.raises(InvalidSessionData, match="signature does not match"):
        load_session_data(f"{forged}:{timestamp}:{signature}", (SECRET_KEY,))


async def test_auth_hash_matches_django(django_site):
    user_id = await django_site.create_user("hash-check-user")
    password = await django_site.call(_password_hash, user_id)

    assert session_auth_hash(password, SECRET_KEY) == await django_site.auth_hash(user_id)


def _password_hash(user_id: str) -> str:
    from django.contrib.auth.models import User

    return User.objects.get(pk=int(user_id)).password


def test_auth_hash_accepts_fallback_key():
    session_hash = session_auth_hash("md5$salt$hash", OLD_SECRET_KEY)

    assert auth_hash_matches(session_hash, "md5$salt$hash", (SECRET_KEY, OLD_SECRET_KEY))


@pytest.mark.parametrize("session_hash", [None, "", 42, "0" * 64])
def test_auth_hash_rejects_unusable_values(session_hash):
    assert not auth_hash_matches(session_hash, "md5$salt$hash", (SECRET_KEY,))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("no separators", "no signature"),
        ("payload-only:signature", "no timestamp"),
        ("not base64!:1tWxyz:signature", "not URL-safe base64"),
        ("a:1tWxyz:signature", "not URL-safe base64"),
        (_unsigned(b"not json"), "not JSON"),
        (_unsigned(b"[1, 2]"), "not a JSON object"),
        (_unsigned(b"[" * 100_000), "not JSON"),
        (_unsigned(b"not zlib", compressed=True), "not zlib data"),
        (_unsigned(zlib.compress(b"{}")[:-3], compressed=True), "truncated"),
        (_unsigned(zlib.compress(b" " * (MAX_SESSION_DATA_BYTES + 1)), compressed=True), "decompresses to more"),
        ("x" * (MAX_SESSION_DATA_BYTES + 1), "longer than"),
    ],
    ids=[
        "no-separator",
        "no-timestamp",
        "bad-base64",
        "short-base64",
        "not-json",
        "json-list",
        "deep-nesting",
        "not-zlib",
        "truncated-zlib",
        "zip-bomb",
        "too-long",
    ],
)
def test_malformed_data_rejected(data, problem):
    with pytest.raises(InvalidSessionData, match=problem):
        load_session_data(data, ())
