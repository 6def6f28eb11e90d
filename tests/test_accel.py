"""The gateway's side of the nginx modes: X-Accel-Redirect responses and the auth_request endpoint."""


from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from gateway.errors import ConfigError
from gateway.settings import load_settings

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from .sigv4 import SignatureError, verify_presigned_url

ACCEL_LOCATION = "@media_s3"
OWNER = "owner-1"
KEY = "docs/report.pdf"
DATA = b"%PDF-1.7 not really a pdf" * 40


@pytest.fixture
async def stored(db, s3):
    s3.put_object(Bucket=BUCKET, Key="media/" + KEY, Body=DATA)
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, content_type) VALUES ($1, $2, 'application/pdf')", KEY, OWNER
    )


async def _fetch(url: str, method: str = "GET") -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, URL(url, encoded=True)) as response:
            return response.status, await response.read()


def _signed_for(method: str, url: str) -> bool:
    try:
        verify_presigned_url(
            url, method=method, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1"
        )
    except SignatureError:
        return False
    return True


@pytest.mark.parametrize("value", ["/_media_s3", "/internal/media", "@media_s3"])
def test_accel_location_accepts_paths_and_named_locations(gateway_env, value):
    settings = load_settings({**gateway_env, "ACCEL_REDIRECT_LOCATION": value})

    assert settings.accel_redirect_location == value


def test_accel_location_unset_means_redirect_mode(gateway_env):
    settings = load_settings(gateway_env)

    assert settings.accel_redirect_location is None


@pytest.mark.parametrize("value", ["media_s3", "/a b", "@", "@media s3", "http://s3.example/", "/_s3?x=1"])
def test_accel_location_rejects_other_values(gateway_env, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({**gateway_env, "ACCEL_REDIRECT_LOCATION": value})

    assert raised.value.variable == "ACCEL_REDIRECT_LOCATION"
    assert repr(value) in str(raised.value)


async def test_accel_mode_answers_with_accel_redirect(start_gateway, stored, token):
    client = await start_gateway(ACCEL_REDIRECT_LOCATION=ACCEL_LOCATION)

    response = await client.get(f"/media/{KEY}", headers={"Authorization": f"Bearer {token(OWNER)}"})
    assert response.status == 200
    assert response.headers["X-Accel-Redirect"] == ACCEL_LOCATION
    assert "Location" not in response.headers
    assert await response.read() == b""

    status, body = await _fetch(response.headers["X-Media-Url"])
    assert status == 200
    assert body == DATA


async def test_accel_mode_ignores_accept_json(start_gateway, stored, token):
    client = await start_gateway(ACCEL_REDIRECT_LOCATION=ACCEL_LOCATION)

    headers = {"Authorization": f"Bearer {token(OWNER)}", "Accept": "application/json"}
    response = await client.get(f"/media/{KEY}", headers=headers)
    assert response.status == 200
    assert response.headers["X-Accel-Redirect"] == ACCEL_LOCATION
    assert await response.read() == b""


async def test_accel_mode_signs_head_for_head(start_gateway, stored, token):
    client = await start_gateway(ACCEL_REDIRECT_LOCATION=ACCEL_LOCATION)

    response = await client.head(f"/media/{KEY}", headers={"Authorization": f"Bearer {token(OWNER)}"})
    assert response.status == 200
    assert _signed_for("HEAD", response.headers["X-Media-Url"])
    assert not _signed_for("GET", response.headers["X-Media-Url"])


async def test_redirect_mode_has_no_accel_headers(start_gateway, stored, token):
    client = await start_gateway()

    headers = {"Authorization": f"Bearer {token(OWNER)}"}
    response = await client.get(f"/media/{KEY}", headers=headers, allow_redirects=False)
    assert response.status == 302
    assert "X-Accel-Redirect" not in response.headers
    assert "X-Media-Url" not in response.headers


async def test_auth_endpoint_allows_owner(start_gateway, stored, token):
    client = await start_gateway()

    response = await client.get(f"/auth/media/{KEY}", headers={"Authorization": f"Bearer {token(OWNER)}"})
    assert response.status == 204
    assert response.headers["Cache-Control"].startswith("private, max-age=")
    assert response.headers["Vary"] == "Cookie, Authorization, Accept"
    assert _signed_for("GET", response.headers["X-Media-Url"])

    status, body = await _fetch(response.headers["X-Media-Url"])
    assert status == 200
    assert body == DATA


async def test_auth_endpoint_signs_head_for_head(start_gateway, stored, token):
    client = await start_gateway()

    response = await client.head(f"/auth/media/{KEY}", headers={"Authorization": f"Bearer {token(OWNER)}"})
    assert response.status == 204
    assert _signed_for("HEAD", response.headers["X-Media-Url"])


async def test_auth_endpoint_refuses_other_user(start_gateway, stored, token):
    client = await start_gateway()

    response = await client.get(f"/auth/media/{KEY}", headers={"Authorization": f"Bearer {token('other-2')}"})
    assert response.status == 403
    assert "X-Media-Url" not in response.headers


async def test_auth_endpoint_never_redirects_to_login(start_gateway, stored):
    client = await start_gateway(LOGIN_URL="/accounts/login/")

    response = await client.get(f"/auth/media/{KEY}", headers={"Accept": "text/html"}, allow_redirects=False)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_auth_endpoint_rejects_malformed_key(start_gateway, stored, token):
    client = await start_gateway()

    headers = {"Authorization": f"Bearer {token(OWNER)}"}
    response = await client.get("/auth/media/docs//report.pdf", headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == "malformed_key"


async def test_auth_endpoint_rejects_key_over_limit(start_gateway, db, token):
    # With the default MEDIA_PREFIX (6 bytes) this key makes a 1025-byte S3 key.
    key = "k" * 1017 + "é"
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ($1, $2)", key, OWNER)
    client = await start_gateway()

    headers = {"Authorization": f"Bearer {token(OWNER)}"}
    response = await client.get(f"/auth/media/{quote(key)}", headers=headers)
    body = await response.json()

    assert response.status == 400
    assert body["error"] == "malformed_key"
    assert "X-Media-Url" not in response.headers


async def test_auth_endpoint_rejects_invalid_utf8_download(start_gateway, stored, token):
    client = await start_gateway()

    headers = {"Authorization": f"Bearer {token(OWNER)}"}
    response = await client.get(URL(f"/auth/media/{KEY}?download=%FF.pdf", encoded=True), headers=headers)
    body = await response.json()

    assert response.status == 400
    assert body["error"] == "invalid_option"
    assert "download" in body["message"]
    assert "X-Media-Url" not in response.headers


async def test_auth_endpoint_rejects_format_json(start_gateway, stored, token):
    client = await start_gateway()

    headers = {"Authorization": f"Bearer {token(OWNER)}"}
    response = await client.get(f"/auth/media/{KEY}?format=json", headers=headers)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_option"


async def test_auth_endpoint_allows_only_get_and_head(start_gateway, stored):
    client = await start_gateway()

    response = await client.post(f"/auth/media/{KEY}")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"
