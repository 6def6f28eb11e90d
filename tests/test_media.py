"""GET and HEAD on the media route: one group of tests per kind of response."""

import logging
from urllib.parse import parse_qs, urlsplit

import pytest

from .logcheck import raw_record_text
from .media_support import add_grant, add_object, media_path, send, send_until_status, verify
from .sigv4 import SignatureError

# These OPTIONS requests carry no Origin header, so they are not CORS preflights.
OTHER_METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


# Readable: a public object, the owner, or an unexpired grant.


async def test_public_object_anonymous(gateway, db):
    await add_object(db, "pub.png", public=True)
    response = await send(gateway, "/media/pub.png")
    assert response.status == 302


async def test_public_object_other_user(gateway, db, token):
    await add_object(db, "pub.png", public=True)
    response = await send(gateway, "/media/pub.png", bearer=token("mallory"))
    assert response.status == 302


async def test_owner_redirect(gateway, db, token):
    await add_object(db, "a/b.bin", owner="alice")
    response = await send(gateway, "/media/a/b.bin", bearer=token("alice"))
    assert response.status == 302


async def test_redirect_body_empty(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"))
    assert response.body == b""


async def test_redirect_location_signed(gateway, db, token):
    await add_object(db, "a/b.bin", owner="alice")
    response = await send(gateway, "/media/a/b.bin", bearer=token("alice"))
    signed = verify(response.headers["Location"], "GET")
    assert signed.key == "media/a/b.bin"


async def test_unexpired_grant(gateway, db, token):
    await add_object(db, "shared.pdf", owner="alice")
    await add_grant(db, "shared.pdf", "bob", expires_in=600)
    response = await send(gateway, "/media/shared.pdf", bearer=token("bob"))
    assert response.status == 302


async def test_grant_without_expiry(gateway, db, token):
    await add_object(db, "shared.pdf", owner="alice")
    await add_grant(db, "shared.pdf", "bob", expires_in=None)
    response = await send(gateway, "/media/shared.pdf", bearer=token("bob"))
    assert response.status == 302


# Valid session, not readable or no such object: 403, and missing looks like forbidden.


async def forbidden_responses(gateway, db, token):
    await add_object(db, "private.bin", owner="alice")
    await add_object(db, "expired.bin", owner="alice")
    await add_grant(db, "expired.bin", "bob", expires_in=-1)
    await add_object(db, "pending.bin", owner="alice", status="pending")
    await add_grant(db, "pending.bin", "bob")

    bob = token("bob")
    return {
        "other user": await send(gateway, "/media/private.bin", bearer=bob),
        "expired grant": await send(gateway, "/media/expired.bin", bearer=bob),
        "pending upload": await send(gateway, "/media/pending.bin", bearer=bob),
        "missing object": await send(gateway, "/media/missing.bin", bearer=bob),
        "owner of pending upload": await send(gateway, "/media/pending.bin", bearer=token("alice")),
    }


async def test_forbidden_status(gateway, db, token):
    responses = await forbidden_responses(gateway, db, token)
    assert {case: response.status for case, response in responses.items()} == dict.fromkeys(responses, 403)


async def test_forbidden_bodies_identical(gateway, db, token):
    responses = await forbidden_responses(gateway, db, token)
    bodies = {response.body for response in responses.values()}
    assert len(bodies) == 1


async def test_forbidden_body_json(gateway, db, token):
    responses = await forbidden_responses(gateway, db, token)
    assert responses["missing object"].json()["error"] == "forbidden"


async def test_forbidden_has_no_location(gateway, db, token):
    responses = await forbidden_responses(gateway, db, token)
    assert all("Location" not in response.headers for response in responses.values())


async def test_deleted_row_stops_access(gateway, db, token):
    await add_object(db, "gone.bin", owner="alice")
    before = await send(gateway, "/media/gone.bin", bearer=token("alice"))
    await db.execute("DELETE FROM media_objects WHERE key = 'gone.bin'")
    after = await send_until_status(gateway, "/media/gone.bin", 403, bearer=token("alice"))
    assert (before.status, after.status) == (302, 403)


async def test_revoked_grant_stops_access(gateway, db, token):
    await add_object(db, "shared.bin", owner="alice")
    await add_grant(db, "shared.bin", "bob")
    before = await send(gateway, "/media/shared.bin", bearer=token("bob"))
    await db.execute("DELETE FROM media_grants WHERE key = 'shared.bin' AND grantee_id = 'bob'")
    after = await send_until_status(gateway, "/media/shared.bin", 403, bearer=token("bob"))
    assert (before.status, after.status) == (302, 403)


async def test_made_private_stops_anonymous(gateway, db):
    await add_object(db, "pub.png", public=True)
    before = await send(gateway, "/media/pub.png")
    await db.execute("UPDATE media_objects SET visibility = 'private' WHERE key = 'pub.png'")
    after = await send_until_status(gateway, "/media/pub.png", 401)
    assert (before.status, after.status) == (302, 401)


# No valid session and the object is not public: 401, or the login redirect.


async def test_anonymous_private_status(gateway, db):
    await add_object(db, "private.bin")
    response = await send(gateway, "/media/private.bin")
    assert response.status == 401


async def test_anonymous_private_challenge(gateway, db):
    await add_object(db, "private.bin")
    response = await send(gateway, "/media/private.bin")
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_anonymous_missing_is_401(gateway, db):
    response = await send(gateway, "/media/missing.bin")
    assert response.status == 401


async def test_anonymous_body_json(gateway, db):
    response = await send(gateway, "/media/missing.bin")
    assert set(response.json()) == {"error", "message"}


@pytest.mark.parametrize(
    "credentials",
    [
        {"bearer": "not-a-token"},
        {"cookie": "not-a-token"},
        {"headers": {"Authorization": "Basic YWxpY2U6c2VjcmV0"}},
    ],
    ids=["bad bearer", "bad cookie", "basic auth"],
)
async def test_unusable_credentials_401(gateway, db, credentials):
    await add_object(db, "private.bin", owner="alice")
    response = await send(gateway, "/media/private.bin", **credentials)
    assert response.status == 401


async def test_expired_session_401(gateway, db, token):
    await add_object(db, "private.bin", owner="alice")
    response = await send(gateway, "/media/private.bin", bearer=token("alice", created=1_000_000_000))
    assert response.status == 401


HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def next_of(location: str) -> list[str]:
    return parse_qs(urlsplit(location).query)["next"]


@pytest.mark.parametrize(
    "target",
    [
        "/media/private.bin",
        "/media/private.bin?download=a%20b.bin&format=json",
        "/media/dir/%C3%A9t%C3%A9%20x.bin",
        "/media/private.bin?next=//evil.example/&a=1",
    ],
)
async def test_login_redirect_next(start_gateway, db, target):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, target, headers=HTML)
    assert next_of(response.headers["Location"]) == [target]


async def test_login_redirect_status(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, "/media/private.bin", headers=HTML)
    assert response.status == 302


async def test_login_redirect_target(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, "/media/private.bin", headers=HTML)
    assert response.headers["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("target", ["/media/private.bin", "/media/a?x=//evil.example", "/media/a?//evil.example"])
async def test_login_next_one_leading_slash(start_gateway, db, target):
    gateway = await start_gateway(LOGIN_URL="https://accounts.example.test/login")
    response = await send(gateway, target, headers=HTML)
    (next_path,) = next_of(response.headers["Location"])
    assert next_path.startswith("/")
    assert not next_path.startswith("//")


async def test_login_url_with_query(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="https://accounts.example.test/login?service=media")
    response = await send(gateway, "/media/private.bin?download", headers=HTML)
    query = parse_qs(urlsplit(response.headers["Location"]).query, keep_blank_values=True)
    assert query == {"service": ["media"], "next": ["/media/private.bin?download"]}


async def test_login_url_with_query_host(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="https://accounts.example.test/login?service=media")
    response = await send(gateway, "/media/private.bin", headers=HTML)
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "accounts.example.test", "/login")


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "image/*"])
async def test_login_url_without_html_401(start_gateway, db, accept):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, "/media/private.bin", headers={"Accept": accept} if accept else None)
    assert response.status == 401


async def test_login_url_session_gets_403(start_gateway, db, token):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, "/media/private.bin", bearer=token("bob"), headers=HTML)
    assert response.status == 403


async def test_login_url_public_redirects_to_s3(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    await add_object(db, "pub.png", public=True)
    response = await send(gateway, "/media/pub.png", headers=HTML)
    assert verify(response.headers["Location"]).key == "media/pub.png"


# Malformed keys: 400 whether or not there is a session.

MALFORMED_TARGETS = {
    "empty": "/media/",
    "route only": "/media",
    "leading slash": "/media//a.bin",
    "trailing slash": "/media/a/",
    "doubled slash": "/media/a//b.bin",
    "dot segment": "/media/a/./b.bin",
    "dot only": "/media/.",
    "dot dot segment": "/media/a/../b.bin",
    "dot dot only": "/media/..",
    "dot dot leading": "/media/../media/b.bin",
    "encoded dot dot": "/media/a/%2e%2e/b.bin",
    "encoded dot dot upper": "/media/%2E%2E/b.bin",
    "encoded dot": "/media/a/%2e/b.bin",
    "encoded slash dot dot": "/media/a%2F..%2Fb",
    "encoded leading slash": "/media/%2Fa.bin",
    "encoded trailing slash": "/media/a%2F",
    "NUL": "/media/a%00.bin",
    "tab": "/media/a%09.bin",
    "newline": "/media/a%0A.bin",
    "escape": "/media/a%1B.bin",
    "unit separator": "/media/a%1F.bin",
    "DEL": "/media/a%7F.bin",
    "C1 NEL": "/media/a%C2%85.bin",
    "C1 first": "/media/a%C2%80.bin",
    "C1 last": "/media/a%C2%9F.bin",
    "invalid UTF-8 byte": "/media/a%ff.bin",
    "overlong slash": "/media/a%C0%AF.bin",
    "overlong dot": "/media/%C0%AE%C0%AE/b.bin",
    "truncated sequence": "/media/a%E6%97.bin",
    "encoded surrogate": "/media/a%ED%A0%80.bin",
    "absolute-form dot dot": "http://127.0.0.1/media/a/../b.bin",
    "absolute-form encoded dot dot": "http://127.0.0.1/media/a/%2e%2e/b.bin",
    "bare percent": "/media/a%",
    "percent before one hex digit": "/media/a%4",
    "percent before non-hex": "/media/a%zz.bin",
    "1025 bytes": "/media/" + "k" * 1025,
    "1026 bytes of two-byte letters": "/media/" + "%C3%A9" * 513,
}


@pytest.mark.parametrize("target", MALFORMED_TARGETS.values(), ids=MALFORMED_TARGETS.keys())
async def test_malformed_key_anonymous(gateway, target):
    response = await send(gateway, target)
    assert response.status == 400


@pytest.mark.parametrize("target", MALFORMED_TARGETS.values(), ids=MALFORMED_TARGETS.keys())
async def test_malformed_key_with_session(gateway, token, target):
    response = await send(gateway, target, bearer=token("alice"))
    assert response.status == 400


@pytest.mark.parametrize("target", ["/media/a/../b.bin", "/media/a%00.bin", "/media/a%ff.bin"])
async def test_malformed_key_body(gateway, target):
    response = await send(gateway, target)
    assert response.json()["error"] == "malformed_key"


async def test_malformed_key_before_login_redirect(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    response = await send(gateway, "/media/a/../b.bin", headers=HTML)
    assert response.status == 400


# S3 object keys are at most 1024 UTF-8 bytes, MEDIA_PREFIX included. Each case is a key that
# fills the limit exactly and ends in a multi-byte letter; the same key with one more byte is over.
CUSTOM_PREFIX = "tenants/é/"
FULL_KEYS = {
    "default prefix, two-byte letter": ("media/", "k" * 1016 + "é"),
    "default prefix, three-byte letter": ("media/", "k" * 1015 + "日"),
    "default prefix, four-byte letter": ("media/", "k" * 1014 + "😀"),
    "custom prefix, two-byte letter": (CUSTOM_PREFIX, "k" * 1011 + "é"),
    "custom prefix, three-byte letter": (CUSTOM_PREFIX, "k" * 1010 + "日"),
    "empty prefix, two-byte letters": ("", "é" * 512),
    "empty prefix, three-byte letter": ("", "k" * 1021 + "日"),
}
# The table's own check rejects keys over 1024 bytes, so only a prefix leaves room for a stored key that is too long.
PREFIXED_FULL_KEYS = {name: case for name, case in FULL_KEYS.items() if case[0]}


@pytest.mark.parametrize("prefix, key", FULL_KEYS.values(), ids=FULL_KEYS.keys())
async def test_full_key_of_1024_bytes_accepted(start_gateway, db, token, prefix, key):
    gateway = await start_gateway(MEDIA_PREFIX=prefix)
    await add_object(db, key)

    response = await send(gateway, media_path(key), bearer=token("alice"))

    assert len((prefix + key).encode()) == 1024
    assert response.status == 302
    assert verify(response.headers["Location"]).key == prefix + key


@pytest.mark.parametrize("prefix, key", PREFIXED_FULL_KEYS.values(), ids=PREFIXED_FULL_KEYS.keys())
async def test_full_key_of_1025_bytes_rejected(start_gateway, db, token, prefix, key):
    gateway = await start_gateway(MEDIA_PREFIX=prefix)
    long_key = "k" + key
    await add_object(db, long_key)

    response = await send(gateway, media_path(long_key), bearer=token("alice"))

    assert len((prefix + long_key).encode()) == 1025
    assert response.status == 400
    assert response.json()["error"] == "malformed_key"
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Vary"] == "Cookie, Authorization"
    assert await db.fetchval("SELECT count(*) FROM media_objects WHERE key = $1", long_key) == 1


async def test_full_key_limit_message(start_gateway, db):
    gateway = await start_gateway(MEDIA_PREFIX=CUSTOM_PREFIX)

    response = await send(gateway, media_path("k" * 1014))

    message = response.json()["message"]
    assert "1014 bytes" in message
    assert "limit of 1013 bytes" in message
    assert "1024 UTF-8 bytes including the 11-byte prefix" in message


async def test_dot_names_inside_segment_accepted(gateway, db):
    await add_object(db, "a/..b/c../.d/e.", public=True)
    response = await send(gateway, "/media/a/..b/c../.d/e.")
    assert response.status == 302


# Other methods: 405 with Allow, whether or not there is a session.


@pytest.mark.parametrize("method", OTHER_METHODS)
async def test_other_method_anonymous(gateway, db, method):
    await add_object(db, "pub.png", public=True)
    response = await send(gateway, "/media/pub.png", method)
    assert response.status == 405


@pytest.mark.parametrize("method", OTHER_METHODS)
async def test_other_method_with_session(gateway, db, token, method):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", method, bearer=token("alice"))
    assert response.status == 405


@pytest.mark.parametrize("method", OTHER_METHODS)
async def test_other_method_allow_header(gateway, db, token, method):
    response = await send(gateway, "/media/a.bin", method, bearer=token("alice"))
    assert response.headers["Allow"] == "GET, HEAD"


async def test_other_method_body_json(gateway, db):
    response = await send(gateway, "/media/a.bin", "DELETE")
    assert response.json()["error"] == "method_not_allowed"


# HEAD gets a URL signed for HEAD.


async def test_head_status(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", "HEAD", bearer=token("alice"))
    assert response.status == 302


async def test_head_signed_for_head(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", "HEAD", bearer=token("alice"))
    assert verify(response.headers["Location"], "HEAD").key == "media/a.bin"


async def test_head_url_fails_for_get(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", "HEAD", bearer=token("alice"))
    with pytest.raises(SignatureError):
        verify(response.headers["Location"], "GET")


async def test_get_url_fails_for_head(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", "GET", bearer=token("alice"))
    with pytest.raises(SignatureError):
        verify(response.headers["Location"], "HEAD")


async def test_head_forbidden(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", "HEAD", bearer=token("bob"))
    assert response.status == 403


# Cookie and bearer sessions.


async def test_default_cookie_session(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", cookie=token("alice"))
    assert response.status == 302


async def test_custom_cookie_name(start_gateway, db, token):
    gateway = await start_gateway(SESSION_COOKIE_NAME="sid")
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", headers={"Cookie": f"theme=dark; sid={token('alice')}"})
    assert response.status == 302


async def test_custom_cookie_name_ignores_default(start_gateway, db, token):
    gateway = await start_gateway(SESSION_COOKIE_NAME="sid")
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", cookie=token("alice"))
    assert response.status == 401


async def test_bearer_wins_over_cookie_deny(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", bearer=token("bob"), cookie=token("alice"))
    assert response.status == 403


async def test_bearer_wins_over_cookie_allow(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"), cookie=token("bob"))
    assert response.status == 302


async def test_integer_user_id_matches_owner(gateway, db, token):
    # Backends often store numeric user ids; the token carries 42, the table "42".
    await add_object(db, "a.bin", owner="42")
    response = await send(gateway, "/media/a.bin", bearer=token(42))
    assert response.status == 302


async def test_bearer_scheme_case_insensitive(gateway, db, token):
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", headers={"Authorization": f"bearer {token('alice')}"})
    assert response.status == 302


# MEDIA_ROUTE moves the whole route.


async def test_media_route_served(start_gateway, db, token):
    gateway = await start_gateway(MEDIA_ROUTE="/files")
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/files/a.bin", bearer=token("alice"))
    assert verify(response.headers["Location"]).key == "media/a.bin"


async def test_media_route_old_path_gone(start_gateway, db, token):
    gateway = await start_gateway(MEDIA_ROUTE="/files")
    await add_object(db, "a.bin", owner="alice")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"))
    assert response.status == 404


async def test_media_route_malformed(start_gateway, db):
    gateway = await start_gateway(MEDIA_ROUTE="/files")
    response = await send(gateway, "/files/a/../b")
    assert response.status == 400


async def test_media_route_prefix_only_match(start_gateway, db):
    gateway = await start_gateway(MEDIA_ROUTE="/files")
    response = await send(gateway, "/filesx/a.bin")
    assert response.status == 404


async def test_media_route_other_method(start_gateway, db):
    gateway = await start_gateway(MEDIA_ROUTE="/files")
    response = await send(gateway, "/files/a.bin", "PUT")
    assert response.status == 405


# Logs.


async def test_gateway_logs_hide_secrets(gateway, db, token, caplog):
    # Only the gateway's own records: botocore logs signatures at DEBUG, and the CLI's
    # logging set-up keeps botocore at INFO or above.
    caplog.set_level(logging.DEBUG)
    await add_object(db, "a.bin", owner="alice")
    alice = token("alice")
    response = await send(gateway, "/media/a.bin", bearer=alice)
    signature = parse_qs(urlsplit(response.headers["Location"]).query)["X-Amz-Signature"][0]

    logged = "\n".join(raw_record_text(record) for record in caplog.records if record.name.startswith("gateway"))
    assert "/media/a.bin" in logged
    assert alice not in logged
    assert signature not in logged
