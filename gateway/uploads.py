"""Browser uploads straight to S3: the declaration a caller sends, the key it gets, the form S3 accepts."""

import datetime
import logging
import os
import re
import secrets
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from .errors import BackendUnavailable, GatewayError

log = logging.getLogger(__name__)

KEY_FOLDER = "uploads"
MAX_FILENAME_CHARS = 255
MAX_KEY_NAME_CHARS = 100
MAX_EXTENSION_CHARS = 16
MAX_CONTENT_TYPE_CHARS = 255

_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class InvalidUpload(GatewayError):
    """A field of an upload declaration is missing or invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class UploadDeclaration:
    filename: str  # Sanitised, kept for Content-Disposition.
    content_type: str
    size: int


@dataclass(frozen=True)
class UploadForm:
    url: str
    fields: dict[str, str]
    expires_at: datetime.datetime


@dataclass(frozen=True)
class StoredObject:
    size: int
    content_type: str | None


def parse_declaration(body: object, max_bytes: int, allowed_types: Sequence[str]) -> UploadDeclaration:
    """Validate the JSON body of an upload request field by field; raise InvalidUpload on the first bad one."""
    if not isinstance(body, Mapping):
        raise InvalidUpload("body", "The request body must be a JSON object with filename, content_type and size.")

    filename = _required(body, "filename", str, 'a string such as "photo.png"')
    content_type = _required(body, "content_type", str, 'a string such as "image/png"')
    size = _required(body, "size", int, "a whole number of bytes")

    return UploadDeclaration(
        filename=_valid_filename(filename),
        content_type=_valid_content_type(content_type, allowed_types),
        size=_valid_size(size, max_bytes),
    )


def _required(body: Mapping, field: str, kind: type, description: str):
    if field not in body or body[field] is None:
        raise InvalidUpload(field, f"The field {field!r} is missing; send {description}.")

    value = body[field]
    # JSON true/false arrive as bool, which Python counts as an int.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidUpload(field, f"The field {field!r} must be {description}, not {_json_type(value)}.")
    return value


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _valid_filename(raw: str) -> str:
    filename = sanitise_filename(raw)
    if not filename:
        raise InvalidUpload("filename", "The field 'filename' is empty once path and control characters are removed.")
    return filename


def _valid_content_type(raw: str, allowed_types: Sequence[str]) -> str:
    content_type = raw.strip().lower()
    excerpt = content_type[:80]

    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not _MEDIA_TYPE.match(content_type):
        raise InvalidUpload(
            "content_type", f"The content type {excerpt!r} is invalid; send a type/subtype such as image/png."
        )
    if not content_type_allowed(content_type, allowed_types):
        raise InvalidUpload(
            "content_type",
            f"The content type {excerpt!r} is not accepted here; use one of {', '.join(allowed_types)}.",
        )
    return content_type


def _valid_size(size: int, max_bytes: int) -> int:
    if size < 1:
        raise InvalidUpload("size", f"The size {size} is invalid; declare the file's length in bytes (at least 1).")
    if size > max_bytes:
        raise InvalidUpload("size", f"The size {size} is over the limit of {max_bytes} bytes; upload a smaller file.")
    return size


def content_type_allowed(content_type: str, allowed_types: Sequence[str]) -> bool:
    """Match `content_type` against entries such as image/png or image/* (a wildcard covers one top-level type)."""
    top_level = content_type.split("/", 1)[0]
    for allowed in allowed_types:
        if allowed == content_type or allowed == f"{top_level}/*":
            return True
    return False


def sanitise_filename(raw: str) -> str:
    """Keep the last path segment of a browser's file name, NFC-normalised, without control characters."""
    name = re.split(r"[/\\]", raw)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C")
    name = name.strip()

    if name in (".", ".."):
        return ""
    if len(name) > MAX_FILENAME_CHARS:
        stem, extension = _split_extension(name)
        name = stem[: MAX_FILENAME_CHARS - len(extension)] + extension
    return name


def new_upload_key(filename: str) -> str:
    """Pick an unguessable media key such as uploads/<32 hex digits>/photo.png for a sanitised file name."""
    return f"{KEY_FOLDER}/{secrets.token_hex(16)}/{key_name(filename)}"


def key_name(filename: str) -> str:
    """Reduce a file name to the ASCII letters, digits, dot, dash and underscore that need no URL encoding."""
    stem, extension = _split_extension(filename)

    stem = _ascii_slug(stem)[:MAX_KEY_NAME_CHARS] or "file"
    extension = _ascii_slug(extension.lstrip("."))[:MAX_EXTENSION_CHARS]
    return f"{stem}.{extension}" if extension else stem


def _split_extension(name: str) -> tuple[str, str]:
    stem, extension = os.path.splitext(name)
    if len(extension) > MAX_EXTENSION_CHARS + 1:
        return name, ""
    return stem, extension


def _ascii_slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _UNSAFE_KEY_CHARS.sub("-", ascii_text).strip(".-_")


async def presign_upload_form(
    client, bucket: str, object_key: str, declaration: UploadDeclaration, ttl: int
) -> UploadForm:
    """Sign a POST form that accepts exactly one object: this key, this content type, exactly `size` bytes."""
    # A browser sends the whole file, whose length it declared, so S3 itself rejects any other length.
    conditions = [
        {"Content-Type": declaration.content_type},
        ["content-length-range", declaration.size, declaration.size],
    ]

    # Taken before signing, so the form is valid at least until this time.
    expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
    form = await client.generate_presigned_post(
        Bucket=bucket,
        Key=object_key,
        Fields={"Content-Type": declaration.content_type},
        Conditions=conditions,
        ExpiresIn=ttl,
    )
    return UploadForm(url=form["url"], fields=dict(form["fields"]), expires_at=expires_at.replace(microsecond=0))


async def find_stored_object(client, bucket: str, object_key: str) -> StoredObject | None:
    """HEAD the object; return None when the bucket has no such key, raise BackendUnavailable when S3 fails."""
    try:
        head = await client.head_object(Bucket=bucket, Key=object_key)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        if code in ("403", "AccessDenied", "Forbidden"):
            # S3 returns 403 for a HEAD on a missing key when the credentials lack s3:ListBucket.
            log.warning(
                "HEAD %s returned 403; treating the object as missing (grant s3:ListBucket to get 404)", object_key
            )
            return None
        raise BackendUnavailable("s3", f"HEAD failed with {code or 'an unknown error'}") from error
    except (BotoCoreError, TimeoutError, OSError) as error:
        raise BackendUnavailable("s3", type(error).__name__) from error

    return StoredObject(size=head["ContentLength"], content_type=head.get("ContentType"))
