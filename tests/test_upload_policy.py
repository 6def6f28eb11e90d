"""Browser uploads posted through a front that enforces the POST policy, as S3 does and moto does not.

The gateway signs its forms for the checking front (S3_PUBLIC_ENDPOINT_URL), so a form
whose file, fields or age break the policy gets S3's 403 instead of reaching moto.
"""

import asyncio
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from botocore.exceptions import ClientError

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from .s3_front import checking_s3_front
from .servers import free_port
from .test_uploads import PNG, bearer, complete, declare_png


@dataclass(frozen=True)
class PostResult:
    status: int
    body: str


@pytest.fixture
async def start_checked_gateway(start_gateway, db, moto):
    """Return a starter that runs the gateway with its forms signed for a policy-checking front to moto."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: str):
        runner = web.AppRunner(checking_s3_front(moto.endpoint_url, ACCESS_KEY, SECRET_KEY), access_log=None)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return await start_gateway(S3_PUBLIC_ENDPOINT_URL=f"http://127.0.0.1:{port}", **overrides)

    yield start

    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def checked_gateway(start_checked_gateway):
    return await start_checked_gateway()


async def post_form(upload: dict, data: bytes, **field_changes: str) -> PostResult:
    """Post the form as a browser does (fields first, file last), with `field_changes` added or replaced."""
    form = aiohttp.FormData()
    for name, value in {**upload["fields"], **field_changes}.items():
        form.add_field(name, value)
    form.add_field("file", data, filename="pixel.png", content_type="application/octet-stream")

    async with aiohttp.ClientSession() as session:
        async with session.post(upload["url"], data=form) as response:
            return PostResult(status=response.status, body=await response.text())


def object_exists(s3, key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] == "404":
            return False
        raise
    return True


async def assert_not_completed(gateway, token: str, key: str, db) -> None:
    """The complete step finds no object, and the row stays pending."""
    response = await complete(gateway, token, key)
    body = await response.json()

    assert response.status == 409
    assert body["error"] == "upload_missing"
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", key) == "pending"


async def test_declared_upload_passes_policy(checked_gateway, token, db, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)

    result = await post_form(declared["upload"], PNG)
    response = await complete(checked_gateway, alice, declared["key"])

    assert result.status == 204, result.body
    assert response.status == 200
    assert (await response.json())["status"] == "ready"
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", declared["key"]) == "ready"
    assert s3.get_object(Bucket=BUCKET, Key="media/" + declared["key"])["Body"].read() == PNG


async def test_tampered_policy_rejected(checked_gateway, token, db, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)
    policy = declared["upload"]["fields"]["policy"]

    result = await post_form(declared["upload"], PNG, policy=policy[:-8] + "AAAAAAA=")

    assert result.status == 403
    assert "the policy signature does not match" in result.body
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(checked_gateway, alice, declared["key"], db)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PNG + b"x", f"{len(PNG) + 1} bytes, over the content-length-range maximum {len(PNG)}"),
        (PNG[:-1], f"{len(PNG) - 1} bytes, under the content-length-range minimum {len(PNG)}"),
        (b"", f"0 bytes, under the content-length-range minimum {len(PNG)}"),
    ],
    ids=["over-max", "under-min", "empty"],
)
async def test_file_outside_declared_size_rejected(checked_gateway, token, db, s3, data, message):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)

    result = await post_form(declared["upload"], data)

    assert result.status == 403
    assert "<Code>AccessDenied</Code>" in result.body
    assert message in result.body
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(checked_gateway, alice, declared["key"], db)


async def test_other_content_type_rejected(checked_gateway, token, db, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)

    result = await post_form(declared["upload"], PNG, **{"Content-Type": "text/html"})

    assert result.status == 403
    assert "'content-type' is 'text/html', but the policy requires 'image/png'" in result.body
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(checked_gateway, alice, declared["key"], db)


async def test_changed_key_rejected(checked_gateway, token, db, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)
    other_key = "media/uploads/00000000000000000000000000000000/pixel.png"

    result = await post_form(declared["upload"], PNG, key=other_key)

    assert result.status == 403
    assert f"'key' is '{other_key}'" in result.body
    assert not object_exists(s3, other_key)
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(checked_gateway, alice, declared["key"], db)


async def test_public_acl_field_rejected(checked_gateway, token, db, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)

    result = await post_form(declared["upload"], PNG, acl="public-read")

    assert result.status == 403
    assert "no policy condition covers the form field(s) acl" in result.body
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(checked_gateway, alice, declared["key"], db)


async def test_expired_form_rejected(start_checked_gateway, token, db, s3):
    gateway = await start_checked_gateway(MEDIA_URL_TTL="1")
    alice = token("alice")
    declared = await declare_png(gateway, alice)

    # The policy's expiration has whole seconds, so it can lie up to 1 s before signing time + TTL.
    await asyncio.sleep(2.1)
    result = await post_form(declared["upload"], PNG)

    assert result.status == 403
    assert "the policy expired at" in result.body
    assert not object_exists(s3, "media/" + declared["key"])
    await assert_not_completed(gateway, alice, declared["key"], db)


async def test_rejected_upload_not_readable(checked_gateway, token, s3):
    alice = token("alice")
    declared = await declare_png(checked_gateway, alice)
    await post_form(declared["upload"], PNG + b"x")

    response = await checked_gateway.get(f"/media/{declared['key']}", headers=bearer(alice), allow_redirects=False)

    assert response.status == 403
    assert not object_exists(s3, "media/" + declared["key"])
