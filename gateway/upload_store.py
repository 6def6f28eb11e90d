"""The media_objects rows behind uploads: registered pending, marked ready once the object is in the bucket."""

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


_INSERT_PENDING = """
INSERT INTO media_objects (key, owner_id, visibility, content_type, filename, status, size)
VALUES ($1, $2, 'private', $3, $4, 'pending', $5)
"""

_FIND_UPLOAD = "SELECT owner_id, status, content_type, size FROM media_objects WHERE key = $1"

_MARK_READY = """
UPDATE media_objects SET status = 'ready', size = $3
WHERE key = $1 AND owner_id = $2 AND status = 'pending'
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


async def mark_ready(pool: asyncpg.Pool, key: str, owner_id: str, stored_size: int) -> None:
    """Mark the upload ready and record the size S3 reports; a row already ready stays as it is."""
    await database.run(pool, lambda connection: connection.execute(_MARK_READY, key, owner_id, stored_size))
