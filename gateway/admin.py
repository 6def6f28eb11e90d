"""Operator commands that talk to PostgreSQL and S3: migrate, objects, check."""

import asyncio
import datetime
import re
import sys
from contextlib import AsyncExitStack
from importlib import resources

import asyncpg

from . import database
from .errors import BackendUnavailable, ConfigError, MalformedKey, UsageError
from .keys import validate_key
from .ownership import inspect_query
from .s3 import open_clients
from .sessions.django import inspect_tables
from .settings import Settings

CHECK_TIMEOUT = 5.0

# A media type as HTTP defines it: type/subtype, then optional "; name=value" parameters.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}([ \t]*;[ \t]*{_TOKEN}=({_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*')


def schema_sql() -> str:
    return resources.files("gateway").joinpath("schema.sql").read_text(encoding="utf-8")


async def connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(
            settings.database_url, timeout=database.CONNECT_TIMEOUT * 2, command_timeout=database.QUERY_TIMEOUT * 5
        )
    except database.UNAVAILABLE_ERRORS as error:
        raise BackendUnavailable("postgres", _reason(error)) from None
    except asyncpg.PostgresError as error:
        raise BackendUnavailable("postgres", str(error)) from None


async def migrate(settings: Settings) -> None:
    connection = await connect(settings)
    try:
        async with connection.transaction():
            # Serialize concurrent migrations (two dynos releasing at once).
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('media-gateway migrate'))")
            await connection.execute(schema_sql())
    finally:
        await connection.close()


async def add_object(
    settings: Settings,
    key: str,
    owner_id: str,
    public: bool,
    content_type: str | None,
    filename: str | None,
) -> None:
    _require_key(key, settings.media_prefix)
    _require_text("--owner", owner_id)
    if content_type is not None and not _MEDIA_TYPE.fullmatch(content_type):
        raise UsageError(
            f"--content-type {content_type!r} is not a media type; use type/subtype such as video/mp4 "
            "or text/plain; charset=utf-8"
        )

    connection = await connect(settings)
    try:
        inserted = await _schema_query(
            connection.fetchval,
            """
            INSERT INTO media_objects (key, owner_id, visibility, content_type, filename)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (key) DO NOTHING
            RETURNING true
            """,
            key,
            owner_id,
            "public" if public else "private",
            content_type,
            filename,
        )
    finally:
        await connection.close()

    if not inserted:
        raise UsageError(f"object {key!r} is already registered; use another key or delete the existing row first")


async def grant(settings: Settings, key: str, grantee_id: str, expires: str | None) -> None:
    _require_key(key, settings.media_prefix)
    _require_text("--to", grantee_id)
    expires_at = parse_expiry(expires) if expires is not None else None

    connection = await connect(settings)
    try:
        exists = await _schema_query(connection.fetchval, "SELECT true FROM media_objects WHERE key = $1", key)
        if not exists:
            raise UsageError(f"no object {key!r} is registered; add it with `media-gateway objects add` first")

        await _schema_query(
            connection.execute,
            """
            INSERT INTO media_grants (key, grantee_id, expires_at) VALUES ($1, $2, $3)
            ON CONFLICT (key, grantee_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
            """,
            key,
            grantee_id,
            expires_at,
        )
    finally:
        await connection.close()

    if expires_at is not None and expires_at <= datetime.datetime.now(datetime.UTC):
        print(f"warning: the grant expires at {expires_at.isoformat()}, which is already past", file=sys.stderr)


async def revoke(settings: Settings, key: str, grantee_id: str) -> bool:
    """Delete the grant; return False when there was none."""
    _require_key(key, settings.media_prefix)
    connection = await connect(settings)
    try:
        status = await _schema_query(
            connection.execute, "DELETE FROM media_grants WHERE key = $1 AND grantee_id = $2", key, grantee_id
        )
    finally:
        await connection.close()
    return status != "DELETE 0"


def parse_expiry(value: str) -> datetime.datetime:
    try:
        expires_at = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--expires {value!r} is not an ISO 8601 time; use e.g. 2027-01-31T12:00:00Z") from None

    if expires_at.tzinfo is None:
        raise UsageError(f"--expires {value!r} has no time zone; add Z or an offset such as +02:00")
    return expires_at


async def check(settings: Settings) -> list[str]:
    """Return one line per problem found; an empty list means ready to serve."""
    postgres, s3 = await asyncio.gather(_check_postgres(settings), _check_s3(settings))
    return [problem for problem in (postgres, s3) if problem]


async def _check_postgres(settings: Settings) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            connection = await connect(settings)
            try:
                found = await connection.fetchval("SELECT to_regclass('media_objects') IS NOT NULL")
                await _check_backend_tables(settings, connection)
            finally:
                await connection.close()
    except ConfigError as error:
        return str(error)
    except (BackendUnavailable, TimeoutError, *database.UNAVAILABLE_ERRORS) as error:
        return postgres_problem(_reason(error))

    if not found and settings.ownership_query is None:
        return "DATABASE_URL: table media_objects is missing; run `media-gateway migrate`"
    return None


async def _check_backend_tables(settings: Settings, connection: asyncpg.Connection) -> None:
    """Run the start-up checks of the Django session tables and OWNERSHIP_QUERY, when configured."""
    if settings.session_backend == "django":
        await inspect_tables(connection, settings.django_user_table)
    if settings.ownership_query is not None:
        await inspect_query(connection, settings.ownership_query)


async def _check_s3(settings: Settings) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), AsyncExitStack() as stack:
            clients = await open_clients(settings, stack)
            await clients.service.head_bucket(Bucket=settings.s3_bucket)
    except ConfigError as error:
        return str(error)
    except TimeoutError:
        return f"S3_BUCKET: no answer from S3 for bucket {settings.s3_bucket!r} within {CHECK_TIMEOUT:.0f} s"
    except Exception as error:  # botocore raises many unrelated classes; each one is a failed check.
        return (
            f"S3_BUCKET: cannot reach bucket {settings.s3_bucket!r} ({_reason(error)}); "
            "check the name, region, endpoint and credentials"
        )
    return None


async def _schema_query(method, query: str, *args):
    try:
        return await method(query, *args)
    except asyncpg.UndefinedTableError:
        raise UsageError("the media tables are missing; run `media-gateway migrate` first") from None


def _require_key(key: str, prefix: str) -> None:
    try:
        validate_key(key, prefix)
    except MalformedKey as error:
        excerpt = key if len(key) <= 60 else key[:60] + "..."
        raise UsageError(f"KEY {excerpt!r} is invalid: {error}") from None


def _require_text(option: str, value: str) -> None:
    if not value.strip() or any(ord(char) < 0x20 for char in value):
        raise UsageError(f"{option} {value!r} is not a valid user id; give the backend's user id as text")


def postgres_problem(reason: str) -> str:
    """Return the one-line message for a PostgreSQL that cannot be reached or refuses the connection."""
    return (
        f"DATABASE_URL: PostgreSQL is not usable ({reason}); "
        "check the URL, its user and password, and that the server runs"
    )


def _reason(error: BaseException) -> str:
    if isinstance(error, BackendUnavailable):
        return error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    return f"{type(error).__name__}: {error}"[:200]
