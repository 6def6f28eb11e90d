"""Encrypted-cookie sessions in aiohttp-session's EncryptedCookieStorage format.

A token is `Fernet(key).encrypt(json({"created": <unix seconds>, "session": {"user_id": "<id>"}}))`.
It arrives as the session cookie or as `Authorization: Bearer <token>`.
"""

import json
import logging
import math
import time
from collections.abc import Sequence

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

# Tokens minted on a host whose clock runs ahead are still accepted within this margin.
CLOCK_SKEW_SECONDS = 300
MAX_USER_ID_LENGTH = 256


class CookieSessionBackend:
    def __init__(self, secrets: Sequence[bytes], cookie_name: str, max_age: int) -> None:
        if not secrets:
            raise ValueError("at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(secret) for secret in secrets])
        self._cookie_name = cookie_name
        self._max_age = max_age

    async def user_id(self, request: web.Request) -> str | None:
        token = bearer_token(request) or request.cookies.get(self._cookie_name)
        if not token:
            return None
        return self.user_id_from_token(token)

    def user_id_from_token(self, token: str, now: float | None = None) -> str | None:
        payload = self._decrypt(token)
        if payload is None:
            return None

        created = payload.get("created")
        session = payload.get("session")
        if not _is_timestamp(created) or not isinstance(session, dict):
            log.info("session token rejected: no 'created' time or 'session' object")
            return None

        now = time.time() if now is None else now
        if created + self._max_age < now:
            log.info("session token rejected: expired %d seconds ago", now - created - self._max_age)
            return None
        if created > now + CLOCK_SKEW_SECONDS:
            log.info("session token rejected: created %d seconds in the future", created - now)
            return None

        return _user_id(session.get("user_id"))

    def _decrypt(self, token: str) -> dict | None:
        try:
            plaintext = self._fernet.decrypt(token.encode("ascii"))
            payload = json.loads(plaintext)
        except (InvalidToken, UnicodeError, ValueError):
            # Never log the token itself: it is a credential.
            log.info("session token rejected: it does not decrypt with any SESSION_SECRET key")
            return None

        if not isinstance(payload, dict):
            log.info("session token rejected: the payload is not a JSON object")
            return None
        return payload


def issue_token(secret: bytes, user_id: str, created: int | None = None) -> str:
    """Mint a session token the way EncryptedCookieStorage writes its cookie."""
    payload = {
        "created": int(time.time()) if created is None else created,
        "session": {"user_id": user_id},
    }
    return Fernet(secret).encrypt(json.dumps(payload).encode()).decode("ascii")


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _is_timestamp(value: object) -> bool:
    # json.loads accepts NaN, which compares false both ways and would make a token that never expires.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _user_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        log.info("session token rejected: no usable 'user_id'")
        return None

    user_id = str(value)
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        log.info("session token rejected: 'user_id' is empty or longer than %d characters", MAX_USER_ID_LENGTH)
        return None
    return user_id
