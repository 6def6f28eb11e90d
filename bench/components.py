"""Time the per-request steps one by one, in-process, to show where a request's CPU goes.

Run with `python -m bench.components` (or as part of `make bench`). Needs no servers: the
signers sign for a made-up endpoint and nothing is sent anywhere.
"""

import asyncio
import io
import os
import time
import timeit

import boto3
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.credentials import Credentials
from cryptography.fernet import Fernet

from gateway.decisions import DecisionCache
from gateway.disposition import content_disposition
from gateway.keys import parse_key
from gateway.logs import BufferedLineHandler, LogfmtFormatter
from gateway.metrics import Metrics
from gateway.ownership import MediaObject
from gateway.s3 import Presigner
from gateway.sessions.cookie import CookieSessionBackend, issue_token
from gateway.sigv4 import signer_like_botocore

ENDPOINT = "http://127.0.0.1:9"
BUCKET = "media-gateway-bench"
ACCESS_KEY = "AKIDBENCHMARK"
SECRET_KEY = "bench-secret-key"
KEY = "user-1/photo 1.jpg"
NUMBER = 2000


def main() -> None:
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    results = asyncio.run(_measure())
    print("| step | us per call |")
    print("| --- | ---: |")
    for name, microseconds in results:
        print(f"| {name} | {microseconds:.1f} |")


async def _measure() -> list[tuple[str, float]]:
    results = []

    def measure(name: str, call) -> None:
        call()
        seconds = min(timeit.repeat(call, number=NUMBER, repeat=3)) / NUMBER
        results.append((name, seconds * 1e6))

    secret = Fernet.generate_key()
    token = issue_token(secret, "user-1")
    uncached = CookieSessionBackend([secret], "gateway_session", 3600)
    cached = CookieSessionBackend([secret], "gateway_session", 3600, cache_size=100)
    measure("session token: Fernet decrypt + checks", lambda: uncached.user_id_from_token(token))
    measure("session token: cached payload + checks", lambda: cached.user_id_from_token(token))

    measure("key: percent-decode + validate", lambda: parse_key("user-1/photo%201.jpg", "media/"))

    cache = DecisionCache(1000, 60)
    cache.listening = True
    cache.put(KEY, "user-1", MediaObject(KEY, "user-1", "private", None, None, False), cache.generation)
    measure("decision cache hit", lambda: cache.get(KEY, "user-1"))

    disposition = content_disposition("inline", "photo 1.jpg")
    sync_client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    params = {"Bucket": BUCKET, "Key": "media/" + KEY, "ResponseContentDisposition": disposition}
    measure(
        "presign: botocore generate_presigned_url", lambda: sync_client.generate_presigned_url("get_object", params)
    )

    async with get_session().create_client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    ) as client:
        started = time.perf_counter()
        for _ in range(200):
            await client.generate_presigned_url("get_object", Params=params)
        results.append(("presign: aiobotocore generate_presigned_url", (time.perf_counter() - started) / 200 * 1e6))

        signer = await signer_like_botocore(client, Credentials(ACCESS_KEY, SECRET_KEY), BUCKET, "media/", 3600)
        fast = Presigner(client, BUCKET, "media/", 3600, stable_window=0, signer=signer)
        reusing = Presigner(client, BUCKET, "media/", 3600, stable_window=300, signer=signer)
        measure("presign: fast signer", lambda: _drive(fast.presign(KEY, "GET", disposition)))
        measure(
            "presign: URL reused within the stable window", lambda: _drive(reusing.presign(KEY, "GET", disposition))
        )

    # The request line as `serve` writes it: formatted without a LogRecord, then queued for the turn's write().
    line_handler = BufferedLineHandler(io.StringIO())
    fields = {
        "method": "GET",
        "path": "/media/user-1/photo%201.jpg",
        "status": 302,
        "user": "user-1",
        "duration_ms": 0.4,
        "request_id": "0123456789abcdef0000000000000001",
        "remote": "127.0.0.1",
        "decision": "allowed",
    }

    def request_line() -> None:
        line_handler.write_line(LogfmtFormatter.format_line(time.time(), "INFO", "gateway.request", "request", fields))

    measure("request log line (formatted and queued)", request_line)

    metrics = Metrics()
    measure("metrics: count one request and its latency", lambda: metrics.count("/media/{tail}", "GET", 302, 0.0004))
    return results


def _drive(coroutine):
    """Run a coroutine that never suspends, without an event loop round trip."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine suspended")


if __name__ == "__main__":
    main()
