"""Ownership sources: who may read a key."""

import datetime
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
    grant_expires_at: datetime.datetime | None = None  # When that grant ends; None when it never does.

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
       g.grantee_id IS NOT NULL AS granted, g.expires_at AS grant_expires_at
FROM media_objects o
LEFT JOIN media_grants g
       ON g.key = o.key AND g.grantee_id = $2::text AND (g.expires_at IS NULL OR g.expires_at > now())
WHERE o.key = $1 AND o.status = 'ready'
"""


class TableOwnership:
    """Reads the gateway's own media_objects and media_grants tables."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        row = await database.run(self._pool, lambda connection: connection.fetchrow(_FIND_OBJECT, key, user_id))
        if row is None:
            return None

        return MediaObject(
            key=key,
            owner_id=row["owner_id"],
            visibility=row["visibility"],
            content_type=row["content_type"],
            filename=row["filename"],
            granted=row["granted"],
            grant_expires_at=row["grant_expires_at"],
        )
