"""An S3 front that checks SigV4 query signatures, because moto's server accepts any signature.

It runs at the address that S3_PUBLIC_ENDPOINT_URL names. Like real S3, it returns
403 for a request whose URL or Host header was changed after signing, and 400 for
one that also carries an Authorization header. A valid request is forwarded to moto
and moto's response is sent back.
"""

import aiohttp
from aiohttp import web
from yarl import URL

from .sigv4 import SignatureError, verify_presigned_url

FORWARDED_REQUEST_HEADERS = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")
RETURNED_HEADERS = (
    "Cache-Control",
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Content-Disposition",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)


def checking_s3_front(
    upstream_url: str, access_key: str, secret_key: str, region: str = "us-east-1"
) -> web.Application:
    """Return an app that verifies each request's presigned signature, then forwards it to `upstream_url`."""

    async def forward(request: web.Request) -> web.Response:
        if "Authorization" in request.headers:
            return web.Response(status=400, text="InvalidArgument: Only one auth mechanism allowed")

        bucket = request.raw_path.lstrip("/").split("/", 1)[0]
        url = f"http://{request.host}{request.raw_path}"
        try:
            verify_presigned_url(
                url, method=request.method, bucket=bucket, access_key=access_key, secret_key=secret_key, region=region
            )
        except (SignatureError, KeyError, ValueError) as error:
            return web.Response(status=403, text=f"SignatureDoesNotMatch: {error}")

        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        async with aiohttp.ClientSession() as session:
            target = URL(upstream_url + request.raw_path, encoded=True)
            async with session.request(request.method, target, headers=headers) as response:
                body = await response.read()
                returned = {name: response.headers[name] for name in RETURNED_HEADERS if name in response.headers}

        if request.method == "HEAD":
            return web.Response(status=response.status, headers=returned)
        returned.pop("Content-Length", None)
        return web.Response(status=response.status, headers=returned, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
