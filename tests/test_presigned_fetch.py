"""Presigned URLs fetched from the moto server, for hard keys and for each S3 setting."""

import asyncio
from urllib.parse import urlsplit

import pytest

from .conftest import BUCKET
from .media_support import add_object, fetch, media_path, send, verify
from .servers import free_port
from .sigv4 import SignatureError

HARD_KEYS = {
    "space": "with space/file name.txt",
    "plus": "a+b/c+d.txt",
    "tilde": "~user/~notes.txt",
    "percent": "100%/50%25.txt",
    "accents": "é/café.txt",
    "Japanese": "日本/語.txt",
    "emoji": "emoji/😀🎉.png",
    "reserved": "q?a=1&b=2#frag;x,y:z@h$!'()*.bin",
    # 995 bytes after "long/": 330 three-byte letters and five ASCII ones.
    "1000 bytes": "long/" + "長" * 330 + "abcde",
}


def test_long_key_is_1000_bytes():
    assert len(HARD_KEYS["1000 bytes"].encode()) == 1000


def body_for(key: str) -> bytes:
    return ("bytes of " + key).encode()


async def redirect_for(gateway, db, s3, token, key: str, method: str = "GET", target: str | None = None):
    s3.put_object(Bucket=BUCKET, Key="media/" + key, Body=body_for(key))
    await add_object(db, key, owner="alice")
    response = await send(gateway, target or media_path(key), method, bearer=token("alice"))
    assert response.status == 302
    return response.headers["Location"]


@pytest.mark.parametrize("key", HARD_KEYS.values(), ids=HARD_KEYS.keys())
async def test_hard_key_signed(gateway, db, s3, token, key):
    location = await redirect_for(gateway, db, s3, token, key)
    assert verify(location).key == "media/" + key


@pytest.mark.parametrize("key", HARD_KEYS.values(), ids=HARD_KEYS.keys())
async def test_hard_key_fetch(gateway, db, s3, token, key):
    location = await redirect_for(gateway, db, s3, token, key)
    fetched = await fetch(location)
    assert fetched.body == body_for(key)


@pytest.mark.parametrize(
    "target, key",
    [
        ("/media/a+b/c+d.txt", "a+b/c+d.txt"),
        ("/media/~user/~notes.txt", "~user/~notes.txt"),
        ("/media/%7Euser/%7enotes.txt", "~user/~notes.txt"),
        ("/media/caf%C3%A9%2Bx.txt", "café+x.txt"),
        ("/media/a%252F..%252Fb", "a%2F..%2Fb"),
    ],
    ids=["raw plus", "raw tilde", "encoded tilde", "encoded plus", "double-encoded dot dot"],
)
async def test_key_decoded_once(gateway, db, s3, token, target, key):
    location = await redirect_for(gateway, db, s3, token, key, target=target)
    fetched = await fetch(location)
    assert fetched.body == body_for(key)


async def test_default_endpoint_host(gateway, db, s3, token, moto):
    location = await redirect_for(gateway, db, s3, token, "a.bin")
    assert verify(location).host == f"127.0.0.1:{moto.port}"


async def test_fetch_status(gateway, db, s3, token):
    location = await redirect_for(gateway, db, s3, token, "a.bin")
    fetched = await fetch(location)
    assert fetched.status == 200


async def test_head_url_fetch_with_head(gateway, db, s3, token):
    location = await redirect_for(gateway, db, s3, token, "a.bin", "HEAD")
    fetched = await fetch(location, "HEAD")
    assert fetched.status == 200


async def test_head_url_content_length(gateway, db, s3, token):
    location = await redirect_for(gateway, db, s3, token, "a.bin", "HEAD")
    fetched = await fetch(location, "HEAD")
    assert fetched.headers["Content-Length"] == str(len(body_for("a.bin")))


async def test_head_hard_key(gateway, db, s3, token):
    key = HARD_KEYS["emoji"]
    location = await redirect_for(gateway, db, s3, token, key, "HEAD")
    assert verify(location, "HEAD").key == "media/" + key


# MEDIA_PREFIX: the signed key is always the prefix plus the URL key.


async def test_prefix_signed_key(start_gateway, db, s3, token):
    gateway = await start_gateway(MEDIA_PREFIX="other/")
    s3.put_object(Bucket=BUCKET, Key="other/a b.txt", Body=b"other bytes")
    await add_object(db, "a b.txt", owner="alice")
    response = await send(gateway, "/media/a%20b.txt", bearer=token("alice"))
    assert verify(response.headers["Location"]).key == "other/a b.txt"


async def test_prefix_fetch(start_gateway, db, s3, token):
    gateway = await start_gateway(MEDIA_PREFIX="other/")
    s3.put_object(Bucket=BUCKET, Key="other/a b.txt", Body=b"other bytes")
    await add_object(db, "a b.txt", owner="alice")
    response = await send(gateway, "/media/a%20b.txt", bearer=token("alice"))
    fetched = await fetch(response.headers["Location"])
    assert fetched.body == b"other bytes"


@pytest.mark.parametrize(
    "target",
    ["/media/../media/a.txt", "/media/%2e%2e/media/a.txt", "/media/x/..%2F..%2Fmedia%2Fa.txt", "/media//a.txt"],
)
async def test_prefix_cannot_be_left(start_gateway, db, token, target):
    gateway = await start_gateway(MEDIA_PREFIX="other/")
    response = await send(gateway, target, bearer=token("alice"))
    assert response.status == 400


async def test_empty_prefix(start_gateway, db, s3, token):
    gateway = await start_gateway(MEDIA_PREFIX="")
    await add_object(db, "top.txt", owner="alice")
    response = await send(gateway, "/media/top.txt", bearer=token("alice"))
    assert verify(response.headers["Location"]).key == "top.txt"


# S3_PUBLIC_ENDPOINT_URL: the URL is signed for the host browsers reach.


class TcpForwarder:
    """A second address for moto: a TCP relay on another 127.0.0.1 port."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._server = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def _pipe(reader, writer) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def public_endpoint(moto):
    forwarder = TcpForwarder(moto.port)
    await forwarder.start()
    yield f"http://127.0.0.1:{forwarder.port}"
    await forwarder.stop()


async def public_redirect(start_gateway, db, s3, token, endpoint: str) -> str:
    gateway = await start_gateway(S3_PUBLIC_ENDPOINT_URL=endpoint)
    s3.put_object(Bucket=BUCKET, Key="media/pub lic.txt", Body=b"public bytes")
    await add_object(db, "pub lic.txt", owner="alice")
    response = await send(gateway, "/media/pub%20lic.txt", bearer=token("alice"))
    return response.headers["Location"]


async def test_public_endpoint_host(start_gateway, db, s3, token, public_endpoint):
    location = await public_redirect(start_gateway, db, s3, token, public_endpoint)
    assert verify(location).host == urlsplit(public_endpoint).netloc


async def test_public_endpoint_fetch(start_gateway, db, s3, token, public_endpoint):
    location = await public_redirect(start_gateway, db, s3, token, public_endpoint)
    fetched = await fetch(location)
    assert fetched.body == b"public bytes"


async def test_public_endpoint_https_host(start_gateway, db, s3, token):
    # Presigning needs no network, so this host is never contacted. The service endpoint is still moto.
    location = await public_redirect(start_gateway, db, s3, token, "https://media.example.test")
    assert verify(location).host == "media.example.test"


async def test_public_endpoint_scheme(start_gateway, db, s3, token):
    location = await public_redirect(start_gateway, db, s3, token, "https://media.example.test")
    assert urlsplit(location).scheme == "https"


# S3_ADDRESSING_STYLE=virtual puts the bucket in the host name. botocore keeps path style for an
# IP-address endpoint such as moto's, so these tests sign for a named public endpoint instead. The
# URLs are verified but not fetched: that host does not resolve, and moto only listens on 127.0.0.1.
VIRTUAL = {"S3_ADDRESSING_STYLE": "virtual", "S3_PUBLIC_ENDPOINT_URL": "http://s3.example.test:9000"}


async def virtual_redirect(start_gateway, db, token, key: str) -> str:
    gateway = await start_gateway(**VIRTUAL)
    await add_object(db, key, owner="alice")
    response = await send(gateway, media_path(key), bearer=token("alice"))
    return response.headers["Location"]


async def test_virtual_host(start_gateway, db, token):
    location = await virtual_redirect(start_gateway, db, token, "v/a.txt")
    assert verify(location).host == f"{BUCKET}.s3.example.test:9000"


async def test_virtual_key(start_gateway, db, token):
    location = await virtual_redirect(start_gateway, db, token, "v/a b.txt")
    assert verify(location).key == "media/v/a b.txt"


async def test_virtual_path_has_no_bucket(start_gateway, db, token):
    location = await virtual_redirect(start_gateway, db, token, "v/a.txt")
    assert urlsplit(location).path == "/media/v/a.txt"


async def test_path_style_has_bucket(start_gateway, db, token):
    gateway = await start_gateway(S3_ADDRESSING_STYLE="path", S3_PUBLIC_ENDPOINT_URL="http://s3.example.test:9000")
    await add_object(db, "v/a.txt", owner="alice")
    response = await send(gateway, "/media/v/a.txt", bearer=token("alice"))
    assert urlsplit(response.headers["Location"]).path == f"/{BUCKET}/media/v/a.txt"


# S3_REGION goes into the credential scope.


async def region_redirect(start_gateway, db, token, **env: str) -> str:
    gateway = await start_gateway(**env)
    await add_object(db, "r.txt", owner="alice")
    response = await send(gateway, "/media/r.txt", bearer=token("alice"))
    return response.headers["Location"]


async def test_region_in_scope(start_gateway, db, token):
    location = await region_redirect(start_gateway, db, token, S3_REGION="eu-west-1")
    assert verify(location, region="eu-west-1").region == "eu-west-1"


async def test_region_not_default(start_gateway, db, token):
    location = await region_redirect(start_gateway, db, token, S3_REGION="eu-west-1")
    with pytest.raises(SignatureError):
        verify(location, region="us-east-1")


async def test_aws_default_region(start_gateway, db, token):
    location = await region_redirect(start_gateway, db, token, AWS_DEFAULT_REGION="ap-southeast-2")
    assert verify(location, region="ap-southeast-2").region == "ap-southeast-2"


async def test_region_fetch(start_gateway, db, s3, token):
    gateway = await start_gateway(S3_REGION="eu-west-1")
    s3.put_object(Bucket=BUCKET, Key="media/r.txt", Body=b"region bytes")
    await add_object(db, "r.txt", owner="alice")
    response = await send(gateway, "/media/r.txt", bearer=token("alice"))
    fetched = await fetch(response.headers["Location"])
    assert fetched.body == b"region bytes"
