"""An S3 front that checks SigV4 signatures and POST policies, because moto's server accepts any request.

It runs at the address that S3_PUBLIC_ENDPOINT_URL names. Like real S3, it returns
403 for a request whose URL or Host header was changed after signing, and 400 for
one that also carries an Authorization header. A browser upload (a multipart
`POST /{bucket}`) gets 403 when its form breaks the signed POST policy.
A valid request is forwarded to moto and moto's response is sent back.
"""

import datetime
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from yarl import URL

from .post_policy import PolicyError, verify_post_form
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
        if request.method == "POST":
            return await _forward_upload(request, upstream_url, access_key, secret_key, region)
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


class MalformedForm(ValueError):
    """The POST body is not a form S3 can read."""


async def _forward_upload(
    request: web.Request, upstream_url: str, access_key: str, secret_key: str, region: str
) -> web.Response:
    """Check a browser upload's form against its POST policy, then post the same form to moto."""
    bucket = request.path.strip("/")
    if not bucket or "/" in bucket:
        return _s3_error(405, "MethodNotAllowed", f"POST uploads go to /BUCKET, not {request.path}.")

    try:
        fields, file_part = await _read_form(request)
    except MalformedForm as error:
        return _s3_error(400, "MalformedPOSTRequest", str(error))

    filename, content_type, data = file_part
    try:
        verify_post_form(
            fields,
            len(data),
            bucket=bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            now=datetime.datetime.now(datetime.UTC),
        )
    except PolicyError as error:
        return _s3_error(403, "AccessDenied", f"Invalid according to Policy: {error}")

    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename, content_type=content_type)

    async with aiohttp.ClientSession() as session:
        target = URL(upstream_url + request.raw_path, encoded=True)
        async with session.post(target, data=form) as response:
            body = await response.read()
            returned = {
                name: response.headers[name]
                for name in ("Content-Type", "ETag", "Location")
                if name in response.headers
            }
    return web.Response(status=response.status, headers=returned, body=body)


async def _read_form(request: web.Request) -> tuple[dict[str, str], tuple[str | None, str, bytes]]:
    """Return the text fields and the file part as (filename, content type, bytes), ignoring later parts as S3 does."""
    if request.content_type != "multipart/form-data":
        raise MalformedForm(f"The body is {request.content_type!r}, not multipart/form-data.")

    fields: dict[str, str] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if part.name is None:
            raise MalformedForm("A form part has no name.")
        if part.name == "file":
            data = await part.read()
            return fields, (part.filename, part.headers.get("Content-Type", "application/octet-stream"), data)
        if part.name in fields:
            raise MalformedForm(f"The form repeats the field {part.name!r}.")
        fields[part.name] = await part.text()

    raise MalformedForm("POST requires exactly one file upload per request; the form has no 'file' field.")


def _s3_error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return web.Response(status=status, body=body.encode("utf-8"), content_type="application/xml")
