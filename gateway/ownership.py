"""Ownership sources: who may read a key."""

from dataclasses import dataclass
from typing import Protocol

import asyncpg

from . import database


@dataclass(frozen=True)
class MediaObject:
    key: str
    owner_id: str
    visibility: str
    content_type: str | None
    filename: str | None
    granted: bool  # The user asking has an unexpired grant.

    def readable_by(self, user_id: str | None) -> bool:
        if self.visibility == "public":
            return True
        if user_id is None:
            return False
        return self.owner_id == user_id or self.granted


class OwnershipSource(Protocol):
    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        """Return the ready object stored under `key`, or None when there is none."""
        ...


_FIND_OBJECT = """
SELECT o.owner_id, o.visibility, o.content_type, o.filename,
       $2::text IS NOT NULL AND EXISTS (
           SELECT 1 FROM media_grants g
           WHERE g.key = o.key AND g.grantee_id = $2::text
             AND (g.expires_at IS NULL OR g.expires_at > now())
       ) AS granted
FROM media_objects o
WHERE o.key = $1 AND o.status = 'ready'
"""


class TableOwnership:
    """Reads the gateway's own media_objects and media_grants tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        row = await database.run(
            self._pool, lambda connection: connection.fetchrow(_FIND_OBJECT, key, user_id), read_only=True
        )
        if row is None:
            return None

        return MediaObject(
            key=key,
            owner_id=row["owner_id"],
            visibility=row["visibility"],
            content_type=row["content_type"],
            filename=row["filename"],
            granted=row["granted"],
        )
