"""POST MEDIA_ROUTE/uploads and POST MEDIA_ROUTE/uploads/{key}/complete: browser uploads straight to S3."""

import json
import logging
from urllib.parse import quote, urlsplit

from aiohttp import web

from .. import state
from ..errors import BackendUnavailable, MalformedKey
from ..keys import parse_key, validate_key
from ..observability import record_error
from ..responses import json_error, media_headers
from ..upload_store import find_upload, mark_ready, register_pending
from ..uploads import (
    InvalidUpload,
    StoredObject,
    find_stored_object,
    new_upload_key,
    parse_declaration,
    presign_upload_form,
)

log = logging.getLogger(__name__)

COMPLETE_SUFFIX = "/complete"


async def handle_create_upload(request: web.Request) -> web.Response:
    try:
        return await _create(request)
    except BackendUnavailable as error:
        return _unavailable(request, error)


async def handle_complete_upload(request: web.Request) -> web.Response:
    try:
        key = parse_key(_raw_upload_key(request), request.app[state.SETTINGS].media_prefix)
    except MalformedKey as error:
        return json_error(400, "malformed_key", f"Invalid media key: {error}.", media_headers())

    try:
        return await _complete(request, key)
    except BackendUnavailable as error:
        return _unavailable(request, error)


async def _create(request: web.Request) -> web.Response:
    user_id = await _authenticate(request)
    if user_id is None:
        return _unauthenticated()

    settings = request.app[state.SETTINGS]
    try:
        body = await _read_json(request)
        declaration = parse_declaration(body, settings.upload_max_bytes, settings.upload_content_types)
    except InvalidUpload as error:
        return _invalid(error)
    except web.HTTPRequestEntityTooLarge:
        return json_error(
            413,
            "payload_too_large",
            "The request body is too large; send only filename, content_type and size.",
            media_headers(),
        )

    key = new_upload_key(declaration.filename)
    # The picked key has at most 158 bytes and MEDIA_PREFIX at most 512, so this only guards a later change to either.
    validate_key(key, settings.media_prefix)
    form = await presign_upload_form(
        request.app[state.S3].signing,
        settings.s3_bucket,
        settings.media_prefix + key,
        declaration,
        settings.media_url_ttl,
    )
    await register_pending(request.app[state.POOL], key, user_id, declaration)
    log.info(
        "upload registered: key=%s user=%s size=%d type=%s", key, user_id, declaration.size, declaration.content_type
    )

    body = {
        "key": key,
        "upload": {"url": form.url, "fields": form.fields},
        "expires_at": form.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "complete_url": f"{settings.media_route}/uploads/{quote(key)}{COMPLETE_SUFFIX}",
    }
    return web.json_response(body, status=201, headers=media_headers())


async def _complete(request: web.Request, key: str) -> web.Response:
    user_id = await _authenticate(request)
    if user_id is None:
        return _unauthenticated()

    settings = request.app[state.SETTINGS]
    pool = request.app[state.POOL]

    upload = await find_upload(pool, key)
    if upload is None or upload.owner_id != user_id:
        return json_error(403, "forbidden", "You did not start this upload, or it does not exist.", media_headers())
    if upload.status == "ready":
        return _completed(key, settings.media_route)

    stored = await find_stored_object(request.app[state.S3].service, settings.s3_bucket, settings.media_prefix + key)
    problem = _mismatch(stored, upload.size, upload.content_type)
    if problem is not None:
        log.info("upload not completed: key=%s user=%s reason=%s", key, user_id, problem[0])
        return json_error(409, *problem, media_headers())

    if not await mark_ready(pool, key, user_id, stored.size):
        # Either a concurrent complete marked the row ready first, or `uploads prune` deleted the row after
        # find_upload read it (the prune then deletes the object too).
        current = await find_upload(pool, key)
        if current is None or current.owner_id != user_id or current.status != "ready":
            log.info("upload not completed: key=%s user=%s reason=pruned", key, user_id)
            return json_error(
                403, "forbidden", "You did not start this upload, or it does not exist.", media_headers()
            )
        return _completed(key, settings.media_route)

    log.info("upload completed: key=%s user=%s size=%d", key, user_id, stored.size)
    return _completed(key, settings.media_route)


async def _authenticate(request: web.Request) -> str | None:
    user_id = await request.app[state.SESSIONS].user_id(request)
    request[state.USER_ID] = user_id
    return user_id


async def _read_json(request: web.Request) -> object:
    """Return the decoded body; the app's client_max_size caps how much is read."""
    if request.content_type != "application/json":
        raise InvalidUpload("body", "Send the upload declaration as JSON with Content-Type: application/json.")

    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidUpload("body", "The request body is not valid JSON.") from None


def _raw_upload_key(request: web.Request) -> str:
    """Return the still-encoded key between MEDIA_ROUTE/uploads/ and /complete, so it is decoded exactly once."""
    path = urlsplit(request.raw_path).path
    start = request.app[state.SETTINGS].media_route + "/uploads/"
    if not path.startswith(start) or not path.endswith(COMPLETE_SUFFIX):
        raise MalformedKey(f"the path does not have the form {start}KEY{COMPLETE_SUFFIX}")
    return path[len(start) : -len(COMPLETE_SUFFIX)]


def _mismatch(
    stored: StoredObject | None, declared_size: int | None, declared_type: str | None
) -> tuple[str, str] | None:
    """Return an (error code, message) pair when the stored object breaks the declaration, else None."""
    if stored is None:
        return "upload_missing", "The bucket has no object for this upload yet; post the file with the form first."
    # A row from before the size column has no declared size; then only an empty object is rejected.
    if stored.size < 1 or (declared_size is not None and stored.size != declared_size):
        return (
            "size_mismatch",
            f"The stored object has {stored.size} bytes, but the upload declared {declared_size}; upload it again.",
        )
    if declared_type is not None and (stored.content_type or "").lower() != declared_type:
        return (
            "content_type_mismatch",
            f"The stored object has content type {stored.content_type!r}, but the upload declared {declared_type!r}; "
            "upload it again with the form's Content-Type field unchanged.",
        )
    return None


def _completed(key: str, media_route: str) -> web.Response:
    body = {"key": key, "status": "ready", "url": f"{media_route}/{quote(key)}"}
    return web.json_response(body, headers=media_headers())


def _invalid(error: InvalidUpload) -> web.Response:
    body = {"error": "invalid_upload", "message": error.message, "field": error.field}
    return web.json_response(body, status=400, headers=media_headers())


def _unauthenticated() -> web.Response:
    return json_error(
        401,
        "unauthenticated",
        "Sign in to upload: send the session cookie or an Authorization: Bearer token.",
        {**media_headers(), "WWW-Authenticate": "Bearer"},
    )


def _unavailable(request: web.Request, error: BackendUnavailable) -> web.Response:
    record_error(request, f"{error.backend}_unavailable", error.reason)
    headers = {**media_headers(), "Retry-After": "2"}
    return json_error(
        503, "unavailable", f"The {error.backend} backend is not answering; try again in a few seconds.", headers
    )
