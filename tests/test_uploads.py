import asyncio
import base64
import json
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest

from .conftest import BUCKET
from .servers import free_port

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def declare(gateway, token: str | None, **body) -> aiohttp.ClientResponse:
    headers = bearer(token) if token else {}
    return await gateway.post("/media/uploads", json=body, headers=headers)


async def declare_png(gateway, token: str, size: int = len(PNG), filename: str = "pixel.png") -> dict:
    response = await declare(gateway, token, filename=filename, content_type="image/png", size=size)
    assert response.status == 201, await response.text()
    return await response.json()


async def post_form(upload: dict, data: bytes, filename: str = "pixel.png", **field_changes: str) -> int:
    """Post the presigned form as a browser does: multipart, the form fields first, the file last."""
    form = aiohttp.FormData()
    for name, value in {**upload["fields"], **field_changes}.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")

    async with aiohttp.ClientSession() as session:
        async with session.post(upload["url"], data=form) as response:
            await response.read()
            return response.status


async def complete(gateway, token: str | None, key: str) -> aiohttp.ClientResponse:
    headers = bearer(token) if token else {}
    return await gateway.post(f"/media/uploads/{key}/complete", headers=headers)


async def upload_png(gateway, token: str) -> str:
    declared = await declare_png(gateway, token)
    assert await post_form(declared["upload"], PNG) == 204
    response = await complete(gateway, token, declared["key"])
    assert response.status == 200, await response.text()
    return declared["key"]


def policy(upload: dict) -> dict:
    return json.loads(base64.b64decode(upload["fields"]["policy"]))


async def test_upload_flow_stores_object(gateway, token, s3):
    declared = await declare_png(gateway, token("alice"))

    status = await post_form(declared["upload"], PNG)

    assert status == 204
    stored = s3.get_object(Bucket=BUCKET, Key="media/" + declared["key"])
    assert stored["Body"].read() == PNG
    assert stored["ContentType"] == "image/png"


async def test_complete_marks_ready(gateway, token, db):
    key = await upload_png(gateway, token("alice"))

    row = await db.fetchrow("SELECT status, owner_id, size FROM media_objects WHERE key = $1", key)

    assert row["status"] == "ready"
    assert row["owner_id"] == "alice"
    assert row["size"] == len(PNG)


async def test_owner_reads_completed_upload(gateway, token):
    alice = token("alice")
    key = await upload_png(gateway, alice)

    redirect = await gateway.get(f"/media/{key}", headers=bearer(alice), allow_redirects=False)
    assert redirect.status == 302

    async with aiohttp.ClientSession() as session:
        async with session.get(redirect.headers["Location"]) as response:
            assert response.status == 200
            assert await response.read() == PNG
            assert response.headers["Content-Type"] == "image/png"


async def test_complete_response_names_media_url(gateway, token):
    alice = token("alice")
    declared = await declare_png(gateway, alice)
    await post_form(declared["upload"], PNG)

    response = await complete(gateway, alice, declared["key"])
    body = await response.json()

    assert body == {"key": declared["key"], "status": "ready", "url": "/media/" + declared["key"]}


async def test_complete_twice_is_idempotent(gateway, token):
    alice = token("alice")
    key = await upload_png(gateway, alice)

    again = await complete(gateway, alice, key)

    assert again.status == 200
    assert (await again.json())["status"] == "ready"


async def test_declare_response_shape(gateway, token):
    response = await declare(gateway, token("alice"), filename="pixel.png", content_type="image/png", size=68)
    body = await response.json()

    assert response.status == 201
    assert set(body) == {"key", "upload", "expires_at", "complete_url"}
    assert body["upload"]["fields"]["key"] == "media/" + body["key"]
    assert body["upload"]["fields"]["Content-Type"] == "image/png"
    assert body["expires_at"].endswith("Z")
    assert body["complete_url"] == f"/media/uploads/{body['key']}/complete"
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Vary"] == "Cookie, Authorization"


async def test_form_policy_binds_type_and_size(gateway, token):
    declared = await declare_png(gateway, token("alice"), size=500)

    conditions = policy(declared["upload"])["conditions"]

    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 500, 500] in conditions
    assert {"key": "media/" + declared["key"]} in conditions
    assert {"bucket": BUCKET} in conditions


async def test_key_is_unguessable_and_anonymous(gateway, token):
    first = await declare_png(gateway, token("alice-1234"), filename="pixel.png")
    second = await declare_png(gateway, token("alice-1234"), filename="pixel.png")

    assert first["key"] != second["key"]
    assert "alice-1234" not in first["key"]
    assert first["key"].startswith("uploads/")
    assert first["key"].endswith("/pixel.png")
    assert len(first["key"].split("/")[1]) == 32


async def test_filename_is_sanitised(gateway, token, db):
    declared = await declare_png(gateway, token("alice"), filename="C:\\Users\\me\\Été photo\u202e\x00.PNG")

    row = await db.fetchrow("SELECT filename, content_type, status FROM media_objects WHERE key = $1", declared["key"])

    assert row["filename"] == "Été photo.PNG"
    assert declared["key"].endswith("/Ete-photo.PNG")
    assert row["content_type"] == "image/png"
    assert row["status"] == "pending"


async def test_pending_upload_not_readable(gateway, token):
    alice = token("alice")
    declared = await declare_png(gateway, alice)
    await post_form(declared["upload"], PNG)

    response = await gateway.get(f"/media/{declared['key']}", headers=bearer(alice), allow_redirects=False)

    assert response.status == 403


@pytest.mark.parametrize("stored_size", [11, 9], ids=["larger", "smaller"])
async def test_other_size_rejected_at_complete(gateway, token, db, stored_size):
    alice = token("alice")
    declared = await declare_png(gateway, alice, size=10)

    # NOTE: moto checks no policy condition, so here only the complete step can catch the size.
    assert await post_form(declared["upload"], b"x" * stored_size) == 204
    response = await complete(gateway, alice, declared["key"])
    body = await response.json()

    assert response.status == 409
    assert body["error"] == "size_mismatch"
    assert f"{stored_size} bytes" in body["message"]
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", declared["key"]) == "pending"


async def test_wrong_content_type_rejected_at_complete(gateway, token):
    alice = token("alice")
    declared = await declare_png(gateway, alice)

    assert await post_form(declared["upload"], PNG, **{"Content-Type": "text/html"}) == 204
    response = await complete(gateway, alice, declared["key"])
    body = await response.json()

    assert response.status == 409
    assert body["error"] == "content_type_mismatch"
    assert "text/html" in body["message"]


async def test_missing_object_rejected_at_complete(gateway, token, db):
    alice = token("alice")
    declared = await declare_png(gateway, alice)

    response = await complete(gateway, alice, declared["key"])
    body = await response.json()

    assert response.status == 409
    assert body["error"] == "upload_missing"
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", declared["key"]) == "pending"


async def wait_for_lock_wait(db, timeout: float = 5.0) -> None:
    """Return once a gateway connection waits on a row lock in this test database."""
    query = """
        SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'media-gateway' AND wait_event_type = 'Lock'
    """
    async with asyncio.timeout(timeout):
        while not await db.fetchval(query):
            await asyncio.sleep(0.02)


async def test_complete_during_prune_forbidden(gateway, token, db, s3, postgres):
    """A complete whose UPDATE waits on the prune's row lock must not return ready for a deleted row."""
    alice = token("alice")
    declared = await declare_png(gateway, alice)
    assert await post_form(declared["upload"], PNG) == 204
    key = declared["key"]

    # The same steps, in the same order, as `uploads prune`: delete the row, delete the object, commit.
    pruner = await asyncpg.connect(postgres.url)
    try:
        transaction = pruner.transaction()
        await transaction.start()
        await pruner.execute("DELETE FROM media_objects WHERE key = $1 AND status = 'pending'", key)
        completing = asyncio.create_task(complete(gateway, alice, key))
        await wait_for_lock_wait(db)
        s3.delete_object(Bucket=BUCKET, Key="media/" + key)
        await transaction.commit()
        response = await completing
    finally:
        await pruner.close()
    body = await response.json()

    assert response.status == 403
    assert body["error"] == "forbidden"
    assert await db.fetchval("SELECT count(*) FROM media_objects WHERE key = $1", key) == 0


async def test_other_user_cannot_complete(gateway, token, db):
    declared = await declare_png(gateway, token("alice"))
    await post_form(declared["upload"], PNG)

    response = await complete(gateway, token("mallory"), declared["key"])
    body = await response.json()

    assert response.status == 403
    assert body["error"] == "forbidden"
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", declared["key"]) == "pending"


async def test_unknown_key_complete_forbidden(gateway, token):
    response = await complete(gateway, token("alice"), "uploads/0123456789abcdef/none.png")

    assert response.status == 403
    assert (await response.json())["error"] == "forbidden"


async def test_anonymous_complete_unauthenticated(gateway, token):
    declared = await declare_png(gateway, token("alice"))

    response = await complete(gateway, None, declared["key"])

    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["error"] == "unauthenticated"


async def test_malformed_complete_key(gateway, token):
    response = await gateway.post("/media/uploads/a%01b/complete", headers=bearer(token("alice")))

    assert response.status == 400
    assert (await response.json())["error"] == "malformed_key"


async def test_complete_key_over_limit(gateway, db, token):
    # With the default MEDIA_PREFIX (6 bytes) this key makes a 1025-byte S3 key.
    key = "k" * 1017 + "é"
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, status, size, content_type)"
        " VALUES ($1, 'alice', 'pending', 68, 'image/png')",
        key,
    )

    response = await gateway.post(f"/media/uploads/{quote(key)}/complete", headers=bearer(token("alice")))
    body = await response.json()

    assert response.status == 400
    assert body["error"] == "malformed_key"
    assert "over the limit of 1018 bytes" in body["message"]
    assert await db.fetchval("SELECT status FROM media_objects WHERE key = $1", key) == "pending"


async def test_longest_upload_key_fits_longest_prefix(start_gateway, token):
    prefix = "p" * 511 + "/"
    gateway = await start_gateway(MEDIA_PREFIX=prefix)
    filename = "s" * 300 + "." + "e" * 16

    response = await declare(gateway, token("alice"), filename=filename, content_type="image/png", size=68)
    body = await response.json()

    assert response.status == 201
    assert body["upload"]["fields"]["key"] == prefix + body["key"]
    assert len((prefix + body["key"]).encode()) <= 1024


async def test_anonymous_declare_unauthenticated(gateway, db):
    response = await declare(gateway, None, filename="pixel.png", content_type="image/png", size=68)

    assert response.status == 401
    assert (await response.json())["error"] == "unauthenticated"
    assert await db.fetchval("SELECT count(*) FROM media_objects") == 0


async def test_declare_with_cookie_session(gateway, token):
    gateway.session.cookie_jar.update_cookies({"gateway_session": token("alice")})

    response = await gateway.post(
        "/media/uploads", json={"filename": "pixel.png", "content_type": "image/png", "size": 68}
    )

    assert response.status == 201


VALID = {"filename": "pixel.png", "content_type": "image/png", "size": 68}


@pytest.mark.parametrize(
    ("changes", "field", "message_part"),
    [
        ({"filename": None}, "filename", "missing"),
        ({"filename": 12}, "filename", "not a number"),
        ({"filename": ""}, "filename", "empty"),
        ({"filename": "   "}, "filename", "empty"),
        ({"filename": "dir/.."}, "filename", "empty"),
        ({"content_type": None}, "content_type", "missing"),
        ({"content_type": ["image/png"]}, "content_type", "not an array"),
        ({"content_type": "image"}, "content_type", "invalid"),
        ({"content_type": "image/png; charset=x"}, "content_type", "invalid"),
        ({"content_type": "application/x-msdownload"}, "content_type", "not accepted"),
        ({"size": None}, "size", "missing"),
        ({"size": "68"}, "size", "not a string"),
        ({"size": True}, "size", "not a boolean"),
        ({"size": 1.5}, "size", "not a decimal number"),
        ({"size": 68.0}, "size", "not a decimal number"),
        ({"size": 0}, "size", "at least 1"),
        ({"size": -5}, "size", "at least 1"),
        ({"size": 1001}, "size", "over the limit of 1000 bytes"),
    ],
)
async def test_invalid_declaration(start_gateway, db, token, changes, field, message_part):
    gateway = await start_gateway(UPLOAD_MAX_BYTES="1000")
    body = {name: value for name, value in {**VALID, **changes}.items() if value is not None}

    response = await declare(gateway, token("alice"), **body)
    answer = await response.json()

    assert response.status == 400
    assert answer["error"] == "invalid_upload"
    assert answer["field"] == field
    assert message_part in answer["message"]
    assert await db.fetchval("SELECT count(*) FROM media_objects") == 0


async def test_size_at_limit_accepted(start_gateway, db, token):
    gateway = await start_gateway(UPLOAD_MAX_BYTES="1000")

    response = await declare(gateway, token("alice"), filename="a.png", content_type="image/png", size=1000)

    assert response.status == 201


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[" * 20_000 + b"]" * 20_000, "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"text"', "application/json"),
        (json.dumps(VALID).encode(), "text/plain"),
    ],
)
async def test_body_not_json_object(gateway, token, body, content_type):
    headers = {**bearer(token("alice")), "Content-Type": content_type}

    response = await gateway.post("/media/uploads", data=body, headers=headers)
    answer = await response.json()

    assert response.status == 400
    assert answer["field"] == "body"


async def test_body_too_large(gateway, token):
    headers = {**bearer(token("alice")), "Content-Type": "application/json"}
    body = json.dumps({**VALID, "padding": "x" * 100_000}).encode()

    response = await gateway.post("/media/uploads", data=body, headers=headers)
    answer = await response.json()

    assert response.status == 413
    assert answer["error"] == "payload_too_large"


@pytest.mark.parametrize(("content_type", "status"), [("image/webp", 201), ("IMAGE/PNG", 201), ("video/mp4", 400)])
async def test_content_type_wildcard(start_gateway, db, token, content_type, status):
    gateway = await start_gateway(UPLOAD_CONTENT_TYPES="image/*,application/pdf")

    response = await declare(gateway, token("alice"), filename="a.bin", content_type=content_type, size=10)

    assert response.status == status


async def test_get_uploads_is_key_lookup(gateway, token, db):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('uploads', 'alice')")

    response = await gateway.get("/media/uploads", headers=bearer(token("alice")), allow_redirects=False)

    assert response.status == 302
    assert "/media/uploads?" in response.headers["Location"]


async def test_get_complete_path_is_key_lookup(gateway, token):
    declared = await declare_png(gateway, token("alice"))

    response = await gateway.get(
        f"/media/uploads/{declared['key']}/complete", headers=bearer(token("alice")), allow_redirects=False
    )

    assert response.status == 403


@pytest.mark.parametrize("path", ["/media/pixel.png", "/media/uploads/x", "/media"])
async def test_post_elsewhere_not_allowed(gateway, token, path):
    response = await gateway.post(path, headers=bearer(token("alice")))

    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"


async def test_complete_with_s3_down(start_gateway, db, token):
    gateway = await start_gateway(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")
    alice = token("alice")
    declared = await declare_png(gateway, alice)

    response = await complete(gateway, alice, declared["key"])
    body = await response.json()

    assert response.status == 503
    assert body["error"] == "unavailable"
    assert response.headers["Retry-After"] == "2"


async def test_custom_route_and_prefix(start_gateway, db, token, s3):
    gateway = await start_gateway(MEDIA_ROUTE="/files", MEDIA_PREFIX="user-media/")
    alice = token("alice")
    response = await gateway.post(
        "/files/uploads",
        json={"filename": "a.png", "content_type": "image/png", "size": len(PNG)},
        headers=bearer(alice),
    )
    declared = await response.json()

    assert response.status == 201
    assert declared["upload"]["fields"]["key"] == "user-media/" + declared["key"]
    assert declared["complete_url"] == f"/files/uploads/{declared['key']}/complete"

    await post_form(declared["upload"], PNG)
    completed = await gateway.post(declared["complete_url"], headers=bearer(alice))

    assert completed.status == 200
    assert (await completed.json())["url"] == "/files/" + declared["key"]
    assert s3.head_object(Bucket=BUCKET, Key="user-media/" + declared["key"])["ContentLength"] == len(PNG)
