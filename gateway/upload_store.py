"""The media_objects rows behind uploads: registered pending, marked ready once the object is in the bucket."""

import datetime
from dataclasses import dataclass

import asyncpg

from . import database
from .uploads import UploadDeclaration


@dataclass(frozen=True)
class PendingUpload:
    key: str
    owner_id: str
    status: str
    content_type: str | None
    size: int | None  # The declared size; None for rows registered without one.


@dataclass(frozen=True)
class StaleUpload:
    key: str
    created_at: datetime.datetime


_INSERT_PENDING = """
INSERT INTO media_objects (key, owner_id, visibility, content_type, filename, status, size)
VALUES ($1, $2, 'private', $3, $4, 'pending', $5)
"""

_FIND_UPLOAD = "SELECT owner_id, status, content_type, size FROM media_objects WHERE key = $1"

_MARK_READY = """
UPDATE media_objects SET status = 'ready', size = $3
WHERE key = $1 AND owner_id = $2 AND status = 'pending'
"""

_FIND_STALE = """
SELECT key, created_at FROM media_objects
WHERE status = 'pending' AND created_at < $1
ORDER BY created_at, key
"""

_DELETE_STALE = """
DELETE FROM media_objects
WHERE key = $1 AND status = 'pending' AND created_at < $2
RETURNING true
"""


async def register_pending(pool: asyncpg.Pool, key: str, owner_id: str, declaration: UploadDeclaration) -> None:
    await database.run(
        pool,
        lambda connection: connection.execute(
            _INSERT_PENDING, key, owner_id, declaration.content_type, declaration.filename, declaration.size
        ),
    )


async def find_upload(pool: asyncpg.Pool, key: str) -> PendingUpload | None:
    row = await database.run(pool, lambda connection: connection.fetchrow(_FIND_UPLOAD, key))
    if row is None:
        return None

    return PendingUpload(
        key=key,
        owner_id=row["owner_id"],
        status=row["status"],
        content_type=row["content_type"],
        size=row["size"],
    )


async def mark_ready(pool: asyncpg.Pool, key: str, owner_id: str, stored_size: int) -> bool:
    """Mark the upload ready and record the size S3 reports; return False when no pending row matched.

    A row already ready stays as it is, and so does a row that `uploads prune` deleted meanwhile.
    """
    status = await database.run(
        pool, lambda connection: connection.execute(_MARK_READY, key, owner_id, stored_size)
    )
    return status != "UPDATE 0"


async def find_stale_uploads(connection: asyncpg.Connection, cutoff: datetime.datetime) -> list[StaleUpload]:
    """List the pending uploads registered before `cutoff`, oldest first."""
    rows = await connection.fetch(_FIND_STALE, cutoff)
    return [StaleUpload(key=row["key"], created_at=row["created_at"]) for row in rows]


async def delete_stale_upload(connection: asyncpg.Connection, key: str, cutoff: datetime.datetime) -> bool:
    """Delete the row if it is still pending and registered before `cutoff`; return whether it was deleted."""
    return bool(await connection.fetchval(_DELETE_STALE, key, cutoff))
