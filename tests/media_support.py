"""Helpers for the /media tests: a raw HTTP client, object set-up and URL checks."""

import asyncio
import json
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import asyncpg
from multidict import CIMultiDict
from yarl import URL

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from .sigv4 import PresignedRequest, verify_presigned_url

DEFAULT_TTL = 3600


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: CIMultiDict
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def max_age(self) -> int | None:
        match = re.search(r"max-age=(\d+)", self.headers.get("Cache-Control", ""))
        return int(match.group(1)) if match else None


async def send_until_status(client, target: str, status: int, within: float = 1.0, **options) -> RawResponse:
    """Resend `target` until its status is `status` or `within` seconds pass, and return the last response.

    A change to the tables reaches the decision cache through NOTIFY, so it may take
    a moment (the contract allows 1 s) before a response reflects it.
    """
    deadline = time.monotonic() + within
    while True:
        response = await send(client, target, **options)
        if response.status == status or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.02)


async def send(
    client,
    target: str,
    method: str = "GET",
    *,
    bearer: str | None = None,
    cookie: str | None = None,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """Send `target` byte for byte over a new connection, so no client library normalizes the path.

    `cookie` is a session token sent in the default session cookie; other cookies go in `headers`.
    """
    lines = [f"{method} {target} HTTP/1.1", f"Host: {client.host}:{client.port}", "Connection: close"]
    if bearer is not None:
        lines.append(f"Authorization: Bearer {bearer}")
    if cookie is not None:
        lines.append(f"Cookie: gateway_session={cookie}")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")

    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()

    return _parse(raw)


def _parse(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())

    assert "chunked" not in headers.get("Transfer-Encoding", ""), "this client reads only Content-Length bodies"
    return RawResponse(status=int(status_line.split(" ")[1]), headers=headers, body=body)


def media_path(key: str, route: str = "/media") -> str:
    """Return the request path for `key`, percent-encoded as a browser would send it."""
    return f"{route}/{quote(key, safe='/')}"


async def add_object(
    db: asyncpg.Connection,
    key: str,
    owner: str = "alice",
    *,
    public: bool = False,
    content_type: str | None = None,
    filename: str | None = None,
    status: str = "ready",
) -> None:
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, visibility, content_type, filename, status)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        key,
        owner,
        "public" if public else "private",
        content_type,
        filename,
        status,
    )


async def add_grant(db: asyncpg.Connection, key: str, grantee: str, expires_in: int | None = None) -> None:
    """Share `key` with `grantee`, for `expires_in` seconds from now (negative: already expired)."""
    await db.execute(
        "INSERT INTO media_grants (key, grantee_id, expires_at)"
        " VALUES ($1, $2, CASE WHEN $3::int IS NULL THEN NULL ELSE now() + make_interval(secs => $3::int) END)",
        key,
        grantee,
        expires_in,
    )


def verify(url: str, method: str = "GET", *, ttl: int = DEFAULT_TTL, region: str = "us-east-1") -> PresignedRequest:
    """Check the signature of a presigned URL made with the test credentials for the test bucket."""
    return verify_presigned_url(
        url,
        method=method,
        bucket=BUCKET,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=region,
        max_expires=ttl,
    )


async def fetch(url: str, method: str = "GET") -> RawResponse:
    """Fetch a presigned URL exactly as given: `encoded=True` keeps yarl from re-encoding it."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, URL(url, encoded=True), allow_redirects=False) as response:
            body = await response.read()
            return RawResponse(status=response.status, headers=CIMultiDict(response.headers), body=body)
