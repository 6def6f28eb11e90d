"""Ownership sources: who may read a key."""

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg

from . import database
from .batches import Batcher
from .errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)


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


# One row per (key, user) pair that names a ready object, tagged with the pair's position.
_FIND_OBJECTS = """
SELECT r.position, o.owner_id, o.visibility, o.content_type, o.filename,
       g.grantee_id IS NOT NULL AS granted, g.expires_at AS grant_expires_at
FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS r(key, user_id, position)
JOIN media_objects o ON o.key = r.key AND o.status = 'ready'
LEFT JOIN media_grants g
       ON g.key = o.key AND g.grantee_id = r.user_id AND (g.expires_at IS NULL OR g.expires_at > now())
"""

# Lookups per query; a larger turn's lookups go out as several queries.
MAX_BATCH_SIZE = 256


class TableOwnership:
    """Reads the gateway's own media_objects and media_grants tables.

    The lookups of one event-loop turn go to PostgreSQL as one query (see gateway.batches).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._batcher: Batcher[tuple[str, str | None], MediaObject | None] = Batcher(self._find_all, MAX_BATCH_SIZE)

    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        return await self._batcher.submit((key, user_id))

    async def _find_all(self, lookups: Sequence[tuple[str, str | None]]) -> list[MediaObject | None]:
        keys = [key for key, _ in lookups]
        user_ids = [user_id for _, user_id in lookups]
        rows = await database.run(
            self._pool, lambda connection: connection.fetch(_FIND_OBJECTS, keys, user_ids), read_only=True
        )

        found: list[MediaObject | None] = [None] * len(lookups)
        for row in rows:
            index = row["position"] - 1
            found[index] = MediaObject(
                key=keys[index],
                owner_id=row["owner_id"],
                visibility=row["visibility"],
                content_type=row["content_type"],
                filename=row["filename"],
                granted=row["granted"],
                grant_expires_at=row["grant_expires_at"],
            )
        return found


_TEXT_TYPES = ("text", "varchar", "bpchar", "name")
_OWNER_ID_TYPES = (*_TEXT_TYPES, "int2", "int4", "int8", "uuid")
_OPTIONAL_COLUMNS = {
    "visibility": _TEXT_TYPES,
    "content_type": _TEXT_TYPES,
    "filename": _TEXT_TYPES,
    "granted": ("bool",),
}
_QUERY_EXAMPLE = "SELECT user_id::text AS owner_id FROM videos_video WHERE video = $1"


class QueryOwnership:
    """Runs OWNERSHIP_QUERY, the backend's own SQL, with $1 bound to the key and $2 to the caller's user id.

    The query returns an `owner_id` column and optionally `visibility`, `content_type`,
    `filename` and a boolean `granted` (the caller, $2, may read the object). More than one
    row for a key makes ownership ambiguous, so no user may read the object.
    """

    def __init__(self, pool: asyncpg.Pool, query: str) -> None:
        self._pool = pool
        self._query = query
        self._shape: QueryShape | None = None

    async def verify(self) -> None:
        """Prepare the query at start; an outage defers the check to the first request."""
        try:
            await database.run(self._pool, self._inspect)
        except BackendUnavailable as error:
            log.warning("cannot check OWNERSHIP_QUERY at start (%s); checking it on the first request", error)

    async def find(self, key: str, user_id: str | None) -> MediaObject | None:
        rows = await database.run(
            self._pool, lambda connection: self._fetch(connection, key, user_id), read_only=True
        )
        if not rows:
            return None
        if len(rows) > 1:
            log.warning(
                "OWNERSHIP_QUERY returned %d rows for key %r; ownership is ambiguous, so access is denied",
                len(rows),
                key[:200],
            )
            return None

        row = rows[0]
        columns = self._shape.columns if self._shape else frozenset()
        return MediaObject(
            key=key,
            owner_id=str(row["owner_id"]) if row["owner_id"] is not None else "",
            visibility=row["visibility"] if "visibility" in columns else "private",
            content_type=row["content_type"] if "content_type" in columns else None,
            filename=row["filename"] if "filename" in columns else None,
            granted=row["granted"] is True if "granted" in columns else False,
        )

    async def _fetch(self, connection: asyncpg.Connection, key: str, user_id: str | None) -> list[asyncpg.Record]:
        if self._shape is None:
            await self._inspect_on_request(connection)

        if self._shape.takes_user_id:
            return await connection.fetch(self._query, key, user_id)
        return await connection.fetch(self._query, key)

    async def _inspect_on_request(self, connection: asyncpg.Connection) -> None:
        try:
            await self._inspect(connection)
        except ConfigError as error:
            log.error("OWNERSHIP_QUERY is not usable: %s", error)
            raise BackendUnavailable("postgres", "OWNERSHIP_QUERY is not usable; see the error above") from None

    async def _inspect(self, connection: asyncpg.Connection) -> None:
        self._shape = await inspect_query(connection, self._query)


@dataclass(frozen=True)
class QueryShape:
    columns: frozenset[str]
    takes_user_id: bool  # The query uses $2, the caller's user id.


async def inspect_query(connection: asyncpg.Connection, query: str) -> QueryShape:
    """Prepare OWNERSHIP_QUERY and check its parameters and columns; raise ConfigError naming the fix."""
    try:
        statement = await database.prepare(connection, query)
    except asyncpg.PostgresError as error:
        if isinstance(error, database.UNAVAILABLE_ERRORS):
            raise
        raise ConfigError(
            "OWNERSHIP_QUERY",
            f"the query does not prepare ({_one_line(error)}); fix the SQL, for example {_QUERY_EXAMPLE}",
        ) from None

    parameters = [parameter.name for parameter in statement.get_parameters()]
    _check_parameters(parameters)
    columns = {attribute.name: attribute.type.name for attribute in statement.get_attributes()}
    _check_columns(columns)
    return QueryShape(columns=frozenset(columns), takes_user_id=len(parameters) == 2)


def _check_parameters(parameters: list[str]) -> None:
    if not parameters or len(parameters) > 2:
        raise ConfigError(
            "OWNERSHIP_QUERY",
            f"the query takes {len(parameters)} parameters; use $1 for the media key "
            f"and optionally $2 for the caller's user id, for example {_QUERY_EXAMPLE}",
        )

    for position, type_name in enumerate(parameters, start=1):
        if type_name not in _TEXT_TYPES:
            raise ConfigError(
                "OWNERSHIP_QUERY",
                f"${position} is used as {type_name}, but it is bound to text; "
                f"compare it with a text column or cast the other side, as in user_id::text = ${position}",
            )


def _check_columns(columns: dict[str, str]) -> None:
    if "owner_id" not in columns:
        names = ", ".join(columns) or "none"
        raise ConfigError(
            "OWNERSHIP_QUERY",
            f"the query returns no owner_id column (it returns: {names}); "
            f"name the owner's id column owner_id, for example {_QUERY_EXAMPLE}",
        )
    if columns["owner_id"] not in _OWNER_ID_TYPES:
        raise ConfigError(
            "OWNERSHIP_QUERY",
            f"owner_id has type {columns['owner_id']}; cast it to text, as in user_id::text AS owner_id",
        )

    for name, allowed in _OPTIONAL_COLUMNS.items():
        if name in columns and columns[name] not in allowed:
            raise ConfigError("OWNERSHIP_QUERY", f"column {name} has type {columns[name]}; return it as {allowed[0]}")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]
