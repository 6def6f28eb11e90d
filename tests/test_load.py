"""500 concurrent requests of mixed users and objects: every response is the expected one."""

import asyncio
import random
from urllib.parse import parse_qs, urlsplit

import aiohttp

from .helpers import bearer

USERS = [f"user{number}" for number in range(10)]
OBJECTS = 40
REQUESTS = 500


async def _arrange(db, s3) -> dict[str, tuple[str, str]]:
    """Register objects with varied owners, visibility and grants; return key -> (owner, visibility)."""
    objects = {}
    for number in range(OBJECTS):
        key = f"load/{number}.txt"
        owner = USERS[number % len(USERS)]
        visibility = "public" if number % 5 == 0 else "private"
        objects[key] = (owner, visibility)
        s3.put_object(Bucket="media-gateway-test", Key="media/" + key, Body=key.encode())
        await db.execute(
            "INSERT INTO media_objects (key, owner_id, visibility) VALUES ($1, $2, $3)", key, owner, visibility
        )
    # Each object is also shared with the next user.
    for number in range(OBJECTS):
        await db.execute(
            "INSERT INTO media_grants (key, grantee_id) VALUES ($1, $2)",
            f"load/{number}.txt",
            USERS[(number + 1) % len(USERS)],
        )
    return objects


def _expected_status(objects, key: str, user: str | None) -> int:
    if key not in objects:
        return 403 if user else 401
    owner, visibility = objects[key]
    if visibility == "public" or user in (owner, USERS[(USERS.index(owner) + 1) % len(USERS)]):
        return 302
    return 403 if user else 401


async def test_500_concurrent_mixed_requests(gateway, db, s3, token):
    objects = await _arrange(db, s3)
    tokens = {user: token(user) for user in USERS}
    chooser = random.Random(20261204)
    cases = [
        (chooser.choice([*objects, "load/missing.txt"]), chooser.choice([*USERS, None])) for _ in range(REQUESTS)
    ]

    # The test client's pool caps connections at 100; this one lets all 500 be open at once.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(key: str, user: str | None):
            headers = bearer(tokens[user]) if user else {}
            url = gateway.make_url(f"/media/{key}")
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                return response.status, response.headers.get("Location"), response.headers["Cache-Control"]

        answers = await asyncio.gather(*(fetch(key, user) for key, user in cases))

    assert len(answers) == REQUESTS
    wrong = [
        (key, user, status)
        for (key, user), (status, _, _) in zip(cases, answers, strict=True)
        if status != _expected_status(objects, key, user)
    ]
    assert wrong == []
    signed_keys = [
        (key, urlsplit(location).path)
        for (key, _), (status, location, _) in zip(cases, answers, strict=True)
        if status == 302
    ]
    assert all(path == f"/media-gateway-test/media/{key}" for key, path in signed_keys)
    assert all(cache.startswith("private") for _, _, cache in answers)


async def test_concurrent_redirects_fetch_right_object(gateway, db, s3, token):
    objects = await _arrange(db, s3)
    chooser = random.Random(7)
    cases = [chooser.choice(list(objects)) for _ in range(50)]

    async def fetch(key: str):
        owner = objects[key][0]
        response = await gateway.get(f"/media/{key}", headers=bearer(token(owner)), allow_redirects=False)
        location = response.headers["Location"]
        async with aiohttp.ClientSession() as session, session.get(location) as fetched:
            return fetched.status, await fetched.read(), parse_qs(urlsplit(location).query)

    results = await asyncio.gather(*(fetch(key) for key in cases))

    assert [status for status, _, _ in results] == [200] * len(cases)
    assert [body for _, body, _ in results] == [key.encode() for key in cases]
