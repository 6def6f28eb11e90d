"""`media-gateway sync-static`: upload a collectstatic output directory to the bucket, changed files only.

Each uploaded object carries its SHA-256 in the metadata entry `sha256`, and the next run compares the
local file's hash against it. Objects that another tool uploaded are compared by ETag instead, which is
the MD5 of a single-part upload.

Content-hashed names such as Django's `app.3f2a9c1b0e1d.css` never change content, so browsers and CDNs
may keep them for a year. Every other name gets SHORT_MAX_AGE seconds.
"""

import asyncio
import base64
import hashlib
import mimetypes
import os
import re
import sys
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from botocore.exceptions import BotoCoreError, ClientError

from .errors import MalformedKey, UsageError
from .keys import validate_key
from .progress import ProgressBar
from .s3 import open_clients
from .settings import Settings

SHORT_MAX_AGE = 300
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
SHORT_CACHE_CONTROL = f"public, max-age={SHORT_MAX_AGE}"
HASH_METADATA = "sha256"
DEFAULT_JOBS = 8
# aiobotocore's default connection pool has 10 connections, so more jobs would only wait for one.
MAX_JOBS = 10
DELETE_BATCH = 1000  # The maximum number of keys in one DeleteObjects request.
READ_CHUNK = 1024 * 1024

# Django's ManifestStaticFilesStorage inserts the first 12 hex digits of the MD5 before the extension.
_HASHED_NAME = re.compile(r"\.[0-9a-f]{12}\.[A-Za-z0-9]+$")
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "application/manifest+json", "image/svg+xml")
# Python 3.11's built-in table lacks these web formats.
_EXTRA_TYPES = {
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".webp": "image/webp",
    ".map": "application/json",
    ".mjs": "text/javascript",
}
_ENCODING_TYPES = {"gzip": "application/gzip", "br": "application/x-brotli", "bzip2": "application/x-bzip2"}


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str  # The full S3 key: prefix + path relative to DIR.
    size: int
    sha256: str
    md5: str

    @property
    def content_type(self) -> str:
        return guess_content_type(self.key)

    @property
    def cache_control(self) -> str:
        return cache_control(self.key)


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str


@dataclass
class SyncPlan:
    uploads: list[LocalFile] = field(default_factory=list)
    unchanged: int = 0
    stale: list[str] = field(default_factory=list)  # Keys under the prefix with no local file.


@dataclass
class SyncResult:
    uploaded: int = 0
    uploaded_bytes: int = 0
    deleted: int = 0
    failures: list[str] = field(default_factory=list)


def cache_control(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return IMMUTABLE_CACHE_CONTROL if _HASHED_NAME.search(name) else SHORT_CACHE_CONTROL


_TYPES = mimetypes.MimeTypes(filenames=())  # Built-in table only, so every machine guesses alike.
for _extension, _type in _EXTRA_TYPES.items():
    _TYPES.add_type(_type, _extension)


def guess_content_type(key: str) -> str:
    """Guess from the extension; a compressed file such as app.css.gz is sent as the archive it is."""
    content_type, encoding = _TYPES.guess_type(key.rsplit("/", 1)[-1], strict=False)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, "application/octet-stream")
    if content_type is None:
        return "application/octet-stream"
    if content_type.startswith(_TEXT_TYPES):
        return f"{content_type}; charset=utf-8"
    return content_type


def validate_prefix(prefix: str, media_prefix: str) -> str:
    """Return `prefix` if it is a usable key folder outside MEDIA_PREFIX, else raise UsageError."""
    if not prefix.endswith("/"):
        raise UsageError(f"--prefix {prefix!r} must end with /; use e.g. --prefix {prefix or 'static'}/")
    try:
        validate_key(prefix[:-1], "")
    except MalformedKey as error:
        raise UsageError(f"--prefix {prefix!r} is invalid ({error}); use a key folder such as static/") from None

    # NOTE: an empty MEDIA_PREFIX makes every key a media key, and then this check cannot protect anything.
    if media_prefix and (prefix.startswith(media_prefix) or media_prefix.startswith(prefix)):
        raise UsageError(
            f"--prefix {prefix!r} overlaps MEDIA_PREFIX {media_prefix!r}; pick a folder outside the media, "
            "such as static/"
        )
    return prefix


def scan_directory(directory: Path, prefix: str) -> list[LocalFile]:
    """Hash every regular file under `directory` (symbolic links to files included), sorted by key."""
    if not directory.exists():
        raise UsageError(f"DIR {str(directory)!r} does not exist; give the directory collectstatic writes to")
    if not directory.is_dir():
        raise UsageError(f"DIR {str(directory)!r} is not a directory; give the directory collectstatic writes to")

    files = [_hash_file(path, prefix + _relative_key(directory, path, prefix)) for path in _walk(directory)]
    return sorted(files, key=lambda local: local.key)


def _walk(directory: Path) -> Iterable[Path]:
    for folder, _, names in os.walk(directory):
        for name in names:
            path = Path(folder, name)
            if path.is_file():
                yield path


def _relative_key(directory: Path, path: Path, prefix: str) -> str:
    relative = path.relative_to(directory).as_posix()
    try:
        validate_key(relative, prefix)
    except MalformedKey as error:
        raise UsageError(f"file {str(path)!r} cannot be an S3 key ({error}); rename it") from None
    return relative


def _hash_file(path: Path, key: str) -> LocalFile:
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    with path.open("rb") as file:
        while chunk := file.read(READ_CHUNK):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return LocalFile(path=path, key=key, size=size, sha256=sha256.hexdigest(), md5=md5.hexdigest())


async def list_remote(client, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    objects = {}
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"]] = RemoteObject(size=item["Size"], etag=item["ETag"].strip('"'))
    return objects


async def plan_sync(
    client, bucket: str, files: list[LocalFile], remote: dict[str, RemoteObject], jobs: int
) -> SyncPlan:
    """Split local files into uploads and unchanged ones, HEADing objects whose size matches."""
    plan = SyncPlan()
    limit = asyncio.Semaphore(jobs)

    async def compare(local: LocalFile) -> bool:
        existing = remote.get(local.key)
        if existing is None or existing.size != local.size:
            return True
        async with limit:
            head = await client.head_object(Bucket=bucket, Key=local.key)
        return _differs(local, head)

    changed = await asyncio.gather(*(compare(local) for local in files))
    for local, is_changed in zip(files, changed, strict=True):
        if is_changed:
            plan.uploads.append(local)
        else:
            plan.unchanged += 1

    local_keys = {local.key for local in files}
    plan.stale = sorted(key for key in remote if key not in local_keys)
    return plan


def _differs(local: LocalFile, head: dict) -> bool:
    if head.get("ContentType") != local.content_type or head.get("CacheControl") != local.cache_control:
        return True

    stored_hash = head.get("Metadata", {}).get(HASH_METADATA)
    if stored_hash is not None:
        return stored_hash != local.sha256

    # A multipart ETag ("<md5 of part md5s>-<parts>") or an SSE-KMS one is no MD5 of the content.
    etag = head.get("ETag", "").strip('"')
    return etag != local.md5


async def apply_plan(
    client, bucket: str, plan: SyncPlan, delete: bool, jobs: int, progress: ProgressBar, output: TextIO
) -> SyncResult:
    result = SyncResult()
    limit = asyncio.Semaphore(jobs)

    async def upload(local: LocalFile) -> None:
        async with limit:
            try:
                await _put(client, bucket, local)
            except (ClientError, BotoCoreError, OSError) as error:
                result.failures.append(f"failed to upload {local.key}: {_describe(error)}")
                return
        result.uploaded += 1
        result.uploaded_bytes += local.size
        progress.advance(local.size)

    await asyncio.gather(*(upload(local) for local in plan.uploads))

    if delete and plan.stale:
        result.deleted = await _delete(client, bucket, plan.stale, result.failures, output)
    return result


async def _put(client, bucket: str, local: LocalFile) -> None:
    body = await asyncio.to_thread(local.path.read_bytes)
    if hashlib.sha256(body).hexdigest() != local.sha256:
        raise OSError(f"{local.path} changed while syncing; run the command again")

    # Content-MD5 lets S3 reject a body that was corrupted on the way.
    content_md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")

    await client.put_object(
        Bucket=bucket,
        Key=local.key,
        Body=body,
        ContentType=local.content_type,
        CacheControl=local.cache_control,
        ContentMD5=content_md5,
        Metadata={HASH_METADATA: local.sha256},
    )


async def _delete(client, bucket: str, keys: list[str], failures: list[str], output: TextIO) -> int:
    deleted = 0
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        try:
            response = await client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
        except (ClientError, BotoCoreError) as error:
            failures.append(f"failed to delete {len(batch)} objects from {batch[0]}: {_describe(error)}")
            continue

        errors = {item["Key"]: item.get("Code", "error") for item in response.get("Errors", [])}
        for key in batch:
            if key in errors:
                failures.append(f"failed to delete {key}: {errors[key]}")
            else:
                deleted += 1
                print(f"deleted {key}", file=output)
    return deleted


async def sync_static(
    settings: Settings,
    directory: Path,
    prefix: str,
    dry_run: bool = False,
    delete: bool = False,
    jobs: int = DEFAULT_JOBS,
    output: TextIO = sys.stdout,
    progress_stream: TextIO = sys.stderr,
) -> int:
    """Sync `directory` to the bucket under `prefix`; return the exit status (0 ok, 1 when anything failed)."""
    validate_prefix(prefix, settings.media_prefix)
    files = scan_directory(directory, prefix)
    if delete and not files:
        raise UsageError(
            f"DIR {str(directory)!r} has no files, so --delete would remove every object under {prefix}; check the path"
        )

    bucket = settings.s3_bucket
    async with AsyncExitStack() as stack:
        client = (await open_clients(settings, stack)).service
        try:
            remote = await list_remote(client, bucket, prefix)
            plan = await plan_sync(client, bucket, files, remote, jobs)
        except (ClientError, BotoCoreError) as error:
            raise UsageError(
                f"cannot read bucket {bucket!r} under {prefix!r} ({_describe(error)}); "
                "check S3_BUCKET, S3_ENDPOINT_URL and the AWS credentials"
            ) from None

        if dry_run:
            _print_dry_run(plan, delete, output)
            return 0

        total_bytes = sum(local.size for local in plan.uploads)
        with ProgressBar(len(plan.uploads), total_bytes, progress_stream) as progress:
            result = await apply_plan(client, bucket, plan, delete, jobs, progress, output)

    _print_summary(plan, result, delete, prefix, output)
    return 1 if result.failures else 0


def _print_dry_run(plan: SyncPlan, delete: bool, output: TextIO) -> None:
    for local in plan.uploads:
        print(f"would upload {local.key} ({local.content_type}; {local.cache_control})", file=output)
    if delete:
        for key in plan.stale:
            print(f"would delete {key}", file=output)

    deletions = len(plan.stale) if delete else 0
    print(
        f"dry run: {len(plan.uploads)} to upload, {plan.unchanged} unchanged, {deletions} to delete; nothing changed",
        file=output,
    )


def _print_summary(plan: SyncPlan, result: SyncResult, delete: bool, prefix: str, output: TextIO) -> None:
    for failure in result.failures:
        print(failure, file=output)

    summary = (
        f"uploaded {_count(result.uploaded, 'file')} ({_human_size(result.uploaded_bytes)}), "
        f"{plan.unchanged} unchanged, deleted {result.deleted}"
    )
    if result.failures:
        summary += f", {len(result.failures)} failed"
    print(summary, file=output)

    if plan.stale and not delete:
        print(
            f"kept {_count(len(plan.stale), 'object')} under {prefix} with no local file; pass --delete to remove them",
            file=output,
        )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def _describe(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return f"{type(error).__name__}: {error}"[:200]
