"""Sessions of a Django site that shares the database: its session cookie looked up in django_session.

A session counts when its row exists and has not expired, its data decodes (see django_signing)
and names a user in DJANGO_USER_TABLE who exists and is active. With DJANGO_SECRET_KEY set, the
data's signature and its `_auth_user_hash` must also match, as Django checks them.
"""

import logging
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from .. import database
from ..errors import BackendUnavailable, ConfigError
from .django_signing import InvalidSessionData, auth_hash_matches, load_session_data

log = logging.getLogger(__name__)

# Django makes 32 lowercase letters and digits; django_session.session_key is varchar(40).
_SESSION_KEY = re.compile(r"^[A-Za-z0-9]{8,40}$")
MAX_USER_ID_LENGTH = 256

_FIND_SESSION = "SELECT session_data FROM django_session WHERE session_key = $1 AND expire_date > now()"

_TABLE_COLUMNS = """
SELECT a.attname AS name, coalesce(a.attnum = ANY (i.indkey), false) AS primary_key
FROM pg_attribute a
LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


def _integer(value: str) -> int:
    if not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


# Converters from the user id string in a session to the type of the user table's primary key.
_ID_CONVERTERS: dict[str, Callable[[str], object]] = {
    "int2": _integer,
    "int4": _integer,
    "int8": _integer,
    "uuid": uuid.UUID,
    "text": str,
    "varchar": str,
    "bpchar": str,
}


@dataclass(frozen=True)
class UserTable:
    """The query for one user's password hash and active flag, and the converter for its $1."""

    query: str
    convert_id: Callable[[str], object]
    has_is_active: bool


class DjangoSessionBackend:
    def __init__(
        self, pool: asyncpg.Pool, cookie_name: str, secret_keys: Sequence[str], user_table: Sequence[str]
    ) -> None:
        self._pool = pool
        self._cookie_name = cookie_name
        self._secret_keys = tuple(secret_keys)
        self._user_table = tuple(user_table)
        self._table_name = ".".join(user_table)
        self._users: UserTable | None = None

    async def verify(self) -> None:
        """Check django_session and the user table at start; an outage defers the check to the first request."""
        try:
            await database.run(self._pool, self._inspect)
        except BackendUnavailable as error:
            log.warning("cannot check the Django tables at start (%s); checking them on the first request", error)

    async def user_id(self, request: web.Request) -> str | None:
        session_key = request.cookies.get(self._cookie_name)
        if not session_key:
            return None
        if not _SESSION_KEY.match(session_key):
            log.info("django session rejected: the %s cookie is not a session key", self._cookie_name)
            return None

        return await database.run(
            self._pool, lambda connection: self._find_user(connection, session_key), read_only=True
        )

    async def _find_user(self, connection: asyncpg.Connection, session_key: str) -> str | None:
        if self._users is None:
            await self._inspect_on_request(connection)

        data = await connection.fetchval(_FIND_SESSION, session_key)
        if data is None:
            log.info("django session rejected: unknown or expired session key")
            return None

        try:
            session = load_session_data(data, self._secret_keys)
        except InvalidSessionData as error:
            log.info("django session rejected: %s", error)
            return None

        user_id = _user_id(session.get("_auth_user_id"))
        if user_id is None:
            return None

        user = await self._find_account(connection, user_id)
        if user is None:
            return None

        password, is_active = user
        if not is_active:
            log.info("django session rejected: user %r is inactive", user_id)
            return None
        if self._secret_keys and not auth_hash_matches(session.get("_auth_user_hash"), password, self._secret_keys):
            log.info("django session rejected: _auth_user_hash does not match the password of user %r", user_id)
            return None
        return user_id

    async def _find_account(self, connection: asyncpg.Connection, user_id: str) -> tuple[str, bool] | None:
        assert self._users is not None
        try:
            row = await connection.fetchrow(self._users.query, self._users.convert_id(user_id))
        except (ValueError, OverflowError, asyncpg.DataError):
            log.info("django session rejected: user id %r does not fit the key of %s", user_id[:50], self._table_name)
            return None

        if row is None or not isinstance(row["password"], str):
            log.info("django session rejected: user %r not found in %s", user_id, self._table_name)
            return None

        is_active = bool(row["is_active"]) if self._users.has_is_active else True
        return row["password"], is_active

    async def _inspect_on_request(self, connection: asyncpg.Connection) -> None:
        try:
            await self._inspect(connection)
        except ConfigError as error:
            log.error("the Django tables are not usable: %s", error)
            raise BackendUnavailable("postgres", "the Django tables are not usable; see the error above") from None

    async def _inspect(self, connection: asyncpg.Connection) -> None:
        self._users = await inspect_tables(connection, self._user_table)


async def inspect_tables(connection: asyncpg.Connection, user_table: Sequence[str]) -> UserTable:
    """Check that django_session and the user table can be read; raise ConfigError naming the fix."""
    table_name = ".".join(user_table)
    try:
        return await _inspect_tables(connection, table_name, ".".join(_quote_identifier(part) for part in user_table))
    except asyncpg.UndefinedTableError:
        raise ConfigError(
            "SESSION_BACKEND",
            "table django_session not found; point DATABASE_URL at the Django site's database "
            "and run its `manage.py migrate` (django.contrib.sessions must be installed)",
        ) from None
    except asyncpg.PostgresError as error:
        if isinstance(error, database.UNAVAILABLE_ERRORS):
            raise
        raise ConfigError(
            "SESSION_BACKEND",
            f"cannot read django_session or {table_name} ({_one_line(error)}); "
            "grant the gateway's database role SELECT on both tables",
        ) from None


async def _inspect_tables(connection: asyncpg.Connection, table_name: str, table_sql: str) -> UserTable:
    await database.prepare(connection, _FIND_SESSION)

    columns = await connection.fetch(_TABLE_COLUMNS, table_sql)
    names = {row["name"] for row in columns}
    primary_key = [row["name"] for row in columns if row["primary_key"]]
    if not columns:
        raise ConfigError("DJANGO_USER_TABLE", f"table {table_name} not found; set it to the user model's db_table")
    if "password" not in names or len(primary_key) != 1:
        raise ConfigError(
            "DJANGO_USER_TABLE",
            f"table {table_name} has no password column or no single-column primary key; "
            "set it to the table of a user model based on AbstractBaseUser",
        )

    has_is_active = "is_active" in names
    selected = "password, is_active" if has_is_active else "password"
    query = f"SELECT {selected} FROM {table_sql} WHERE {_quote_identifier(primary_key[0])} = $1"
    statement = await database.prepare(connection, query)

    id_type = statement.get_parameters()[0].name
    if id_type not in _ID_CONVERTERS:
        raise ConfigError(
            "DJANGO_USER_TABLE",
            f"the primary key of {table_name} has type {id_type}; "
            f"only {', '.join(sorted(_ID_CONVERTERS))} keys are supported",
        )
    return UserTable(query=query, convert_id=_ID_CONVERTERS[id_type], has_is_active=has_is_active)


def _user_id(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        log.info("django session rejected: no usable _auth_user_id (the session is anonymous)")
        return None

    user_id = str(value)
    if not user_id or len(user_id) > MAX_USER_ID_LENGTH:
        log.info("django session rejected: _auth_user_id is empty or longer than %d characters", MAX_USER_ID_LENGTH)
        return None
    return user_id


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
