"""Decrypted session tokens kept for repeat requests: expiry is still checked on every use."""

from cryptography.fernet import Fernet

from gateway.sessions.cookie import CookieSessionBackend, issue_token

SECRET = Fernet.generate_key()
CREATED = 1_800_000_000
MAX_AGE = 3600


def test_cached_token_still_expires():
    backend = CookieSessionBackend([SECRET], "gateway_session", MAX_AGE, cache_size=10)
    token = issue_token(SECRET, "alice", created=CREATED)

    fresh = backend.user_id_from_token(token, now=CREATED + 10)
    expired = backend.user_id_from_token(token, now=CREATED + MAX_AGE + 1)

    assert fresh == "alice"
    assert expired is None


def test_cache_bounded_by_size():
    backend = CookieSessionBackend([SECRET], "gateway_session", MAX_AGE, cache_size=3)

    users = [
        backend.user_id_from_token(issue_token(SECRET, f"user-{n}", created=CREATED), now=CREATED) for n in range(8)
    ]

    assert users == [f"user-{n}" for n in range(8)]
    assert len(backend._decrypted) == 3


def test_invalid_token_not_cached():
    backend = CookieSessionBackend([SECRET], "gateway_session", MAX_AGE, cache_size=10)
    foreign = issue_token(Fernet.generate_key(), "mallory", created=CREATED)

    first = backend.user_id_from_token(foreign, now=CREATED)
    second = backend.user_id_from_token(foreign, now=CREATED)

    assert first is None
    assert second is None
    assert backend._decrypted == {}


def test_cache_off_keeps_nothing():
    backend = CookieSessionBackend([SECRET], "gateway_session", MAX_AGE, cache_size=0)

    user_id = backend.user_id_from_token(issue_token(SECRET, "alice", created=CREATED), now=CREATED)

    assert user_id == "alice"
    assert backend._decrypted == {}
