"""MEDIA_URL_STABLE_WINDOW: one URL per window, never living past now + MEDIA_URL_TTL."""

import calendar
import time
import urllib.request
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway import state
from gateway.errors import ConfigError
from gateway.settings import load_settings

from .conftest import BUCKET


def _query(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _signed_at(url: str) -> int:
    return calendar.timegm(time.strptime(_query(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))


def _max_age(cache_control: str) -> int:
    directives = dict(part.strip().partition("=")[::2] for part in cache_control.split(","))
    return int(directives["max-age"])


async def _two_redirects_in_one_window(client, path: str, headers: dict[str, str], window: int):
    """Request twice; retry when a window boundary fell between the two requests."""
    for _attempt in range(3):
        started = time.time()
        first = await client.get(path, headers=headers, allow_redirects=False)
        second = await client.get(path, headers=headers, allow_redirects=False)
        if int(started) // window == int(time.time()) // window:
            return first, second
    pytest.fail("every attempt straddled a window boundary")


async def test_repeated_clicks_get_identical_url(start_gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('stable.png', 'alice')")
    client = await start_gateway(MEDIA_URL_TTL="3600", MEDIA_URL_STABLE_WINDOW="600", DECISION_CACHE_SIZE="0")
    headers = {"Authorization": f"Bearer {token('alice')}"}

    first, second = await _two_redirects_in_one_window(client, "/media/stable.png", headers, 600)

    assert client.server.app[state.PRESIGNER].fast
    assert first.headers["Location"] == second.headers["Location"]


async def test_url_dated_at_window_start(start_gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('dated.png', 'alice')")
    client = await start_gateway(MEDIA_URL_TTL="3600", MEDIA_URL_STABLE_WINDOW="600")
    headers = {"Authorization": f"Bearer {token('alice')}"}

    before = int(time.time())
    response = await client.get("/media/dated.png", headers=headers, allow_redirects=False)
    after = int(time.time())
    signed_at = _signed_at(response.headers["Location"])

    assert signed_at % 600 == 0
    assert before - before % 600 <= signed_at <= after - after % 600
    assert _query(response.headers["Location"])["X-Amz-Expires"] == "3600"


async def test_max_age_within_remaining_life(start_gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('aged.png', 'alice')")
    client = await start_gateway(MEDIA_URL_TTL="3600", MEDIA_URL_STABLE_WINDOW="600")
    headers = {"Authorization": f"Bearer {token('alice')}"}

    response = await client.get("/media/aged.png", headers=headers, allow_redirects=False)
    now = time.time()
    expires_at = _signed_at(response.headers["Location"]) + 3600
    max_age = _max_age(response.headers["Cache-Control"])

    assert expires_at <= now + 3600
    assert max_age < expires_at - now
    assert max_age >= expires_at - now - 61


async def test_json_expiry_matches_window(start_gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('json.png', 'alice')")
    client = await start_gateway(MEDIA_URL_TTL="3600", MEDIA_URL_STABLE_WINDOW="600")
    headers = {"Authorization": f"Bearer {token('alice')}", "Accept": "application/json"}

    body = await (await client.get("/media/json.png", headers=headers)).json()
    expires_at = calendar.timegm(time.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))

    assert expires_at == _signed_at(body["url"]) + 3600


async def test_zero_window_signs_at_request_time(start_gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('now.png', 'alice')")
    client = await start_gateway(MEDIA_URL_STABLE_WINDOW="0")
    headers = {"Authorization": f"Bearer {token('alice')}"}

    before = int(time.time())
    response = await client.get("/media/now.png", headers=headers, allow_redirects=False)
    after = int(time.time())

    assert before <= _signed_at(response.headers["Location"]) <= after


async def test_window_url_fetches_object(start_gateway, db, token, s3):
    s3.put_object(Bucket=BUCKET, Key="media/fetch me.txt", Body=b"stable bytes")
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('fetch me.txt', 'alice')")
    client = await start_gateway(MEDIA_URL_TTL="3600", MEDIA_URL_STABLE_WINDOW="3000")
    headers = {"Authorization": f"Bearer {token('alice')}"}

    response = await client.get("/media/fetch%20me.txt", headers=headers, allow_redirects=False)
    with urllib.request.urlopen(response.headers["Location"], timeout=5) as fetched:
        body = fetched.read()

    assert body == b"stable bytes"


def test_default_window_is_tenth_of_ttl_capped():
    assert load_settings({}).media_url_stable_window == 300
    assert load_settings({"MEDIA_URL_TTL": "600"}).media_url_stable_window == 60


def test_window_not_below_ttl_rejected():
    with pytest.raises(ConfigError, match="MEDIA_URL_STABLE_WINDOW: 60 is not shorter than MEDIA_URL_TTL"):
        load_settings({"MEDIA_URL_TTL": "60", "MEDIA_URL_STABLE_WINDOW": "60"})


def test_negative_window_rejected():
    with pytest.raises(ConfigError, match="MEDIA_URL_STABLE_WINDOW"):
        load_settings({"MEDIA_URL_STABLE_WINDOW": "-5"})
