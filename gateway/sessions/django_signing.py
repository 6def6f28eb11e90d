"""Django's signed session data, read without importing Django.

Django 3.1 and later store a database session as `signing.dumps(session, salt=..., compress=True)`:
`<payload>:<timestamp>:<signature>`, where the payload is URL-safe base64 (no padding) of the
JSON text, zlib-compressed and marked with a leading "." when that is shorter. The signature
is the URL-safe base64 HMAC-SHA256 of `<payload>:<timestamp>` under a key derived from the
salt and SECRET_KEY (django/core/signing.py and django/utils/crypto.py, Django 4.2 to 5.2).
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import zlib
from collections.abc import Sequence

# The salt of django.contrib.sessions.backends.db.SessionStore (and cached_db's): its key_salt.
SESSION_SALT = "django.contrib.sessions.SessionStore"
AUTH_HASH_SALT = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"

MAX_SESSION_DATA_BYTES = 1024 * 1024

_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*$")


class InvalidSessionData(Exception):
    """Session data that is not signed with a known key or does not decode to a JSON object."""


def salted_hmac(key_salt: str, value: str, secret: str) -> hmac.HMAC:
    """Compute Django's salted_hmac with SHA-256: the HMAC key is sha256(key_salt + secret)."""
    key = hashlib.sha256(key_salt.encode() + secret.encode()).digest()
    return hmac.new(key, msg=value.encode(), digestmod=hashlib.sha256)


def session_auth_hash(password: str, secret: str) -> str:
    """Compute the `_auth_user_hash` Django stores in a session for a user's password hash."""
    return salted_hmac(AUTH_HASH_SALT, password, secret).hexdigest()


def auth_hash_matches(session_hash: object, password: str, secret_keys: Sequence[str]) -> bool:
    """Check `_auth_user_hash` against the current password hash under SECRET_KEY or a fallback key."""
    if not isinstance(session_hash, str) or not session_hash:
        return False
    return any(_same(session_hash, session_auth_hash(password, secret)) for secret in secret_keys)


def load_session_data(data: str, secret_keys: Sequence[str]) -> dict:
    """Decode session data; with secret keys, verify its signature with any of them first."""
    if len(data) > MAX_SESSION_DATA_BYTES:
        raise InvalidSessionData(f"the data is longer than {MAX_SESSION_DATA_BYTES} characters")

    signed_value, separator, signature = data.rpartition(":")
    if not separator:
        raise InvalidSessionData("the data has no signature")
    if secret_keys and not any(_same(signature, _signature(signed_value, key)) for key in secret_keys):
        raise InvalidSessionData("the signature does not match DJANGO_SECRET_KEY or its fallbacks")

    payload, separator, _timestamp = signed_value.rpartition(":")
    if not separator:
        raise InvalidSessionData("the data has no timestamp")

    text = _decode_payload(payload).decode("latin-1")  # Django's JSONSerializer reads latin-1.
    try:
        session = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidSessionData("the payload is not JSON") from None
    if not isinstance(session, dict):
        raise InvalidSessionData("the data is not a JSON object")
    return session


def _signature(value: str, secret: str) -> str:
    digest = salted_hmac(SESSION_SALT + "signer", value, secret).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _decode_payload(payload: str) -> bytes:
    compressed = payload.startswith(".")
    if compressed:
        payload = payload[1:]

    if not _BASE64URL.match(payload):
        raise InvalidSessionData("the payload is not URL-safe base64")
    try:
        data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        raise InvalidSessionData("the payload is not URL-safe base64") from None

    if compressed:
        data = _decompress(data)
    return data


def _decompress(data: bytes) -> bytes:
    decompressor = zlib.decompressobj()
    try:
        text = decompressor.decompress(data, MAX_SESSION_DATA_BYTES)
    except zlib.error:
        raise InvalidSessionData("the payload is marked compressed but is not zlib data") from None

    if decompressor.unconsumed_tail:
        raise InvalidSessionData(f"the payload decompresses to more than {MAX_SESSION_DATA_BYTES} bytes")
    if not decompressor.eof:
        raise InvalidSessionData("the compressed payload is truncated")
    return text


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))
