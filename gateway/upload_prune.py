"""`media-gateway uploads prune`: delete uploads that stayed pending long after their form expired.

A pending row is pruned with its object at MEDIA_PREFIX + key, if the bucket has one. Keys come only from
pending rows of media_objects, and each object key is built as MEDIA_PREFIX + key, so nothing outside the
prefix is ever deleted.
"""

import datetime
import enum
import re
import sys
from contextlib import AsyncExitStack
from typing import TextIO

import asyncpg
from botocore.exceptions import BotoCoreError, ClientError

from . import database
from .admin import connect
from .errors import BackendUnavailable, UsageError
from .s3 import open_clients
from .settings import Settings
from .upload_store import StaleUpload, delete_stale_upload, find_stale_uploads
from .uploads import find_stored_object

# An upload form is valid for MEDIA_URL_TTL seconds. The default age adds a day on top, so an upload still in
# transfer when its form expired, or a complete call retried hours later, is not pruned under the user.
DEFAULT_MARGIN = datetime.timedelta(hours=24)
# The minimum margin above MEDIA_URL_TTL that --older-than must keep, so a form still valid never loses its row.
MIN_MARGIN = datetime.timedelta(minutes=15)
MAX_AGE = datetime.timedelta(days=3650)

_DURATION = re.compile(r"([0-9]+)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Outcome(enum.Enum):
    PRUNED_WITH_OBJECT = "row and object"
    PRUNED_ROW_ONLY = "row only; the bucket had no object"
    KEPT = "kept: completed or changed while pruning"


def parse_duration(value: str) -> datetime.timedelta:
    """Parse 90m, 24h, 7d, 45s or plain seconds, and raise ValueError with the fix for anything else."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None:
        raise ValueError(
            f"invalid duration {value[:40]!r}; "
            "use a whole number of seconds, optionally with s, or with m, h or d, such as 90m, 24h or 7d"
        )

    # Python's int() rejects strings of over 4300 digits, and timedelta overflows far sooner, so long numbers stop here.
    digits = match[1].lstrip("0") or "0"
    seconds = int(digits) * _UNIT_SECONDS[match[2]] if len(digits) <= 12 else None
    if seconds == 0:
        raise ValueError(f"invalid duration {value[:40]!r}; give an age above zero, such as 24h")
    if seconds is None or seconds > MAX_AGE.total_seconds():
        raise ValueError(f"invalid duration {value[:40]!r}; give an age of at most {format_duration(MAX_AGE)}")
    return datetime.timedelta(seconds=seconds)


def format_duration(duration: datetime.timedelta) -> str:
    """Write a duration in the largest unit that divides it, as parse_duration reads it (25h, 90m, 7d)."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def default_age(settings: Settings) -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.media_url_ttl) + DEFAULT_MARGIN


def shortest_age(settings: Settings) -> datetime.timedelta:
    return datetime.timedelta(seconds=settings.media_url_ttl) + MIN_MARGIN


async def prune_uploads(
    settings: Settings, older_than: datetime.timedelta, dry_run: bool, output: TextIO = sys.stdout
) -> int:
    """Prune pending uploads registered more than `older_than` ago and return the exit status, 1 if any failed."""
    connection = await connect(settings)
    try:
        async with AsyncExitStack() as stack:
            client = (await open_clients(settings, stack)).service
            await _require_bucket(client, settings.s3_bucket)
            return await _prune_all(connection, client, settings, older_than, dry_run, output)
    except asyncpg.UndefinedTableError:
        raise UsageError("the media tables are missing; run `media-gateway migrate` first") from None
    except database.UNAVAILABLE_ERRORS as error:
        raise BackendUnavailable("postgres", f"{type(error).__name__}: {error}"[:200]) from None
    finally:
        await connection.close()


async def _prune_all(
    connection: asyncpg.Connection,
    client,
    settings: Settings,
    older_than: datetime.timedelta,
    dry_run: bool,
    output: TextIO,
) -> int:
    # The cutoff comes from PostgreSQL's clock, the same clock that set created_at.
    cutoff = await connection.fetchval("SELECT now() - $1::interval", older_than)
    stale = await find_stale_uploads(connection, cutoff)
    age = format_duration(older_than)

    if dry_run:
        for upload in stale:
            stored = await find_stored_object(client, settings.s3_bucket, settings.media_prefix + upload.key)
            outcome = Outcome.PRUNED_WITH_OBJECT if stored is not None else Outcome.PRUNED_ROW_ONLY
            print(f"would prune {upload.key} ({outcome.value}; started {_utc(upload.created_at)})", file=output)
        print(f"dry run: {_uploads(len(stale))} pending for over {age} would be pruned; nothing changed", file=output)
        return 0

    pruned = kept = failed = 0
    for upload in stale:
        try:
            outcome = await prune_upload(connection, client, settings.s3_bucket, settings.media_prefix, upload, cutoff)
        except BackendUnavailable as error:
            failed += 1
            print(f"failed to prune {upload.key}: {error}; the row stays pending for the next run", file=output)
            continue

        if outcome is Outcome.KEPT:
            kept += 1
            print(f"kept {upload.key}: it was completed or changed while pruning", file=output)
        else:
            pruned += 1
            print(f"pruned {upload.key} ({outcome.value}; started {_utc(upload.created_at)})", file=output)

    summary = f"pruned {_uploads(pruned)} pending for over {age}"
    if kept:
        summary += f", kept {kept} completed meanwhile"
    if failed:
        summary += f", {failed} failed"
    print(summary, file=output)
    return 1 if failed else 0


async def prune_upload(
    connection: asyncpg.Connection, client, bucket: str, prefix: str, upload: StaleUpload, cutoff: datetime.datetime
) -> Outcome:
    """Delete one stale upload's row and then its object, unless the row stopped being pending and stale."""
    # The row goes first, in a transaction that commits only once the object is gone. The DELETE locks the row.
    # If a complete marked the row ready before, the DELETE matches nothing and the object stays. A complete that
    # reaches its UPDATE meanwhile waits for the lock, then finds no pending row and returns 403. Deleting the
    # object first could remove the file of an upload that completes in between.
    # When S3 fails, the rollback keeps the row pending for the next run. When the COMMIT fails after the object
    # is gone, the next run deletes the row. The lock is held for one HEAD and one DeleteObject, so a waiting
    # complete may time out with 503 while S3 is slow.
    async with connection.transaction():
        if not await delete_stale_upload(connection, upload.key, cutoff):
            return Outcome.KEPT

        object_key = prefix + upload.key
        stored = await find_stored_object(client, bucket, object_key)
        if stored is None:
            return Outcome.PRUNED_ROW_ONLY

        try:
            await client.delete_object(Bucket=bucket, Key=object_key)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "ClientError")
            raise BackendUnavailable("s3", f"DeleteObject failed with {code}") from error
        except (BotoCoreError, TimeoutError, OSError) as error:
            raise BackendUnavailable("s3", f"DeleteObject failed: {type(error).__name__}") from error
    return Outcome.PRUNED_WITH_OBJECT


async def _require_bucket(client, bucket: str) -> None:
    """Reach the bucket before touching any row, so an S3 outage fails the run with one line."""
    try:
        await client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "ClientError")
        raise UsageError(
            f"S3_BUCKET: HeadBucket on {bucket!r} failed with {code}; check the name, region and credentials"
        ) from None
    except (BotoCoreError, TimeoutError, OSError) as error:
        raise UsageError(
            f"S3_BUCKET: cannot reach bucket {bucket!r} ({type(error).__name__}); check S3_ENDPOINT_URL and the network"
        ) from None


def _uploads(count: int) -> str:
    return "1 upload" if count == 1 else f"{count} uploads"


def _utc(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
