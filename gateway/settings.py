"""Configuration read once from the environment into an immutable object."""

import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qs, urlsplit

from cryptography.fernet import Fernet

from .errors import ConfigError

DEFAULT_PORT = 8080
DEFAULT_MEDIA_URL_TTL = 3600
MAX_MEDIA_URL_TTL = 604800  # SigV4 presigned URLs live at most 7 days.
DEFAULT_SESSION_MAX_AGE = 14 * 24 * 3600
DEFAULT_UPLOAD_MAX_BYTES = 100 * 1024 * 1024
# A stable window defaults to a tenth of the URL lifetime, at most 5 minutes, so a URL keeps 90% of its life.
MAX_DEFAULT_STABLE_WINDOW = 300
DEFAULT_DECISION_CACHE_SIZE = 10000
MAX_DECISION_CACHE_SIZE = 1_000_000
DEFAULT_DECISION_CACHE_TTL = 60
MAX_WEB_CONCURRENCY = 64
DEFAULT_UPLOAD_CONTENT_TYPES = "image/*,video/*,audio/*,application/pdf,text/plain"

ADDRESSING_STYLES = ("auto", "path", "virtual")
SESSION_BACKENDS = ("cookie", "django")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("logfmt", "json")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_REQUEST_TIMEOUT = 10
# The platform's router cuts a request off after 30 s, so the gateway must respond before that.
MAX_REQUEST_TIMEOUT = 25

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_COOKIE_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ROUTE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_ACCEL_LOCATION = re.compile(r"^(/[A-Za-z0-9._~-]+)+$|^@[A-Za-z0-9_-]+$")
_SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*)$")

ForwardedNetworks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None


@dataclass(frozen=True)
class Settings:
    port: int
    # Secrets stay out of repr(), so logging a Settings object leaks nothing.
    database_url: str | None = field(repr=False)
    database_statement_cache_size: int | None
    s3_bucket: str | None
    s3_region: str
    s3_endpoint_url: str | None
    s3_public_endpoint_url: str | None
    s3_addressing_style: str
    media_route: str
    media_prefix: str
    media_url_ttl: int
    session_secrets: tuple[bytes, ...] = field(repr=False)
    session_cookie_name: str
    session_max_age: int
    login_url: str | None
    session_backend: str
    django_session_cookie_name: str
    django_secret_keys: tuple[str, ...] = field(repr=False)  # SECRET_KEY, then SECRET_KEY_FALLBACKS.
    django_user_table: tuple[str, ...]  # Schema-qualified names have two parts.
    ownership_query: str | None
    upload_max_bytes: int
    upload_content_types: tuple[str, ...]
    forwarded_allow_ips: ForwardedNetworks  # None means any address is trusted.
    log_level: str
    # An nginx location: when set, allowed media requests get X-Accel-Redirect instead of a 302.
    accel_redirect_location: str | None = None
    media_url_stable_window: int = 0
    decision_cache_size: int = 0
    decision_cache_ttl: int = 60
    web_concurrency: int = 1
    log_format: str = "logfmt"
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT  # Seconds before a request gets a 503.
    metrics_token: str | None = field(default=None, repr=False)  # Bearer token that GET /metrics requires.

    @property
    def signing_endpoint_url(self) -> str | None:
        return self.s3_public_endpoint_url or self.s3_endpoint_url


def load_settings(environ: Mapping[str, str], require: Collection[str] = ()) -> Settings:
    """Parse and validate the environment, raising ConfigError on the first bad value."""
    env = _Environment(environ)

    settings = Settings(
        port=env.integer("PORT", DEFAULT_PORT, minimum=1, maximum=65535),
        database_url=env.database_url("DATABASE_URL"),
        database_statement_cache_size=env.optional_integer("DATABASE_STATEMENT_CACHE_SIZE", minimum=0),
        s3_bucket=env.bucket("S3_BUCKET"),
        s3_region=env.region(),
        s3_endpoint_url=env.http_url("S3_ENDPOINT_URL"),
        s3_public_endpoint_url=env.http_url("S3_PUBLIC_ENDPOINT_URL"),
        s3_addressing_style=env.choice("S3_ADDRESSING_STYLE", ADDRESSING_STYLES, "auto"),
        media_route=env.route("MEDIA_ROUTE", "/media"),
        media_prefix=env.media_prefix("MEDIA_PREFIX", "media/"),
        media_url_ttl=env.integer("MEDIA_URL_TTL", DEFAULT_MEDIA_URL_TTL, minimum=1, maximum=MAX_MEDIA_URL_TTL),
        session_secrets=env.fernet_keys("SESSION_SECRET"),
        session_cookie_name=env.cookie_name("SESSION_COOKIE_NAME", "gateway_session"),
        session_max_age=env.integer("SESSION_MAX_AGE", DEFAULT_SESSION_MAX_AGE, minimum=1),
        login_url=env.login_url("LOGIN_URL"),
        session_backend=env.choice("SESSION_BACKEND", SESSION_BACKENDS, "cookie"),
        django_session_cookie_name=env.cookie_name("DJANGO_SESSION_COOKIE_NAME", "sessionid"),
        django_secret_keys=env.secret_list("DJANGO_SECRET_KEY"),
        django_user_table=env.sql_identifier("DJANGO_USER_TABLE", "auth_user"),
        ownership_query=env.get("OWNERSHIP_QUERY"),
        upload_max_bytes=env.integer("UPLOAD_MAX_BYTES", DEFAULT_UPLOAD_MAX_BYTES, minimum=1),
        upload_content_types=env.content_types("UPLOAD_CONTENT_TYPES", DEFAULT_UPLOAD_CONTENT_TYPES),
        forwarded_allow_ips=env.networks("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        log_level=env.choice("LOG_LEVEL", LOG_LEVELS, "INFO", upper=True),
        accel_redirect_location=env.accel_location("ACCEL_REDIRECT_LOCATION"),
        **_performance_settings(env),
        log_format=env.choice("LOG_FORMAT", LOG_FORMATS, "logfmt"),
        request_timeout=env.integer(
            "REQUEST_TIMEOUT", DEFAULT_REQUEST_TIMEOUT, minimum=1, maximum=MAX_REQUEST_TIMEOUT
        ),
        metrics_token=env.token("METRICS_TOKEN"),
    )

    for variable in require:
        if variable == "SESSION_SECRET" and settings.session_backend != "cookie":
            continue
        if not env.get(variable):
            raise ConfigError(variable, f"missing; {_REQUIRED_HINTS.get(variable, 'set it in the environment')}")

    return settings


def _performance_settings(env: "_Environment") -> dict[str, int]:
    ttl = env.integer("MEDIA_URL_TTL", DEFAULT_MEDIA_URL_TTL, minimum=1, maximum=MAX_MEDIA_URL_TTL)
    window = env.integer("MEDIA_URL_STABLE_WINDOW", min(MAX_DEFAULT_STABLE_WINDOW, ttl // 10), minimum=0)
    if window >= ttl:
        raise ConfigError(
            "MEDIA_URL_STABLE_WINDOW",
            f"{window} is not shorter than MEDIA_URL_TTL ({ttl}); set it below the TTL, or 0 to sign at each request",
        )

    return {
        "media_url_stable_window": window,
        "decision_cache_size": env.integer(
            "DECISION_CACHE_SIZE", DEFAULT_DECISION_CACHE_SIZE, minimum=0, maximum=MAX_DECISION_CACHE_SIZE
        ),
        "decision_cache_ttl": env.integer("DECISION_CACHE_TTL", DEFAULT_DECISION_CACHE_TTL, minimum=1, maximum=3600),
        "web_concurrency": env.integer("WEB_CONCURRENCY", 1, minimum=1, maximum=MAX_WEB_CONCURRENCY),
    }


_REQUIRED_HINTS = {
    "DATABASE_URL": "set it to a PostgreSQL URL such as postgres://user:password@host:5432/dbname",
    "S3_BUCKET": "set it to the name of the bucket that holds the media",
    "SESSION_SECRET": "generate a value with `media-gateway keygen` and share it with the backend that issues sessions",
}


class _Environment:
    """Typed readers over the environment; each error names the variable and the fix."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.optional_integer(name, minimum, maximum)
        return default if value is None else value

    def optional_integer(self, name: str, minimum: int, maximum: int | None = None) -> int | None:
        raw = self.get(name)
        if raw is None:
            return None

        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise ConfigError(name, f"invalid value {raw!r}; set a whole number {bounds}")

        value = int(raw)
        if value < minimum or (maximum is not None and value > maximum):
            raise ConfigError(name, f"{value} is out of range; set a whole number {bounds}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str, upper: bool = False) -> str:
        raw = self.get(name)
        if raw is None:
            return default

        value = raw.upper() if upper else raw.lower()
        if value not in choices:
            raise ConfigError(name, f"unknown value {raw!r}; use one of {', '.join(choices)}")
        return value

    def database_url(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        parts = _split_url(name, raw, "postgres://user:password@host:5432/dbname", quote=False)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigError(name, "invalid URL; use postgres://user:password@host:5432/dbname")

        # The URL may contain a password, so messages quote only the offending parameter.
        for sslmode in parse_qs(parts.query).get("sslmode", []):
            if sslmode not in SSL_MODES:
                raise ConfigError(name, f"unknown sslmode {sslmode!r}; use one of {', '.join(SSL_MODES)}")
        return raw

    def token(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        # The value is a secret, so the message does not quote it.
        if len(raw) < 16 or not re.fullmatch(r"[\x21-\x7e]+", raw):
            raise ConfigError(
                name,
                "invalid token; use at least 16 printable ASCII characters without spaces, "
                "such as the output of `openssl rand -hex 32`",
            )
        return raw

    def bucket(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        if not _BUCKET_NAME.match(raw) or ".." in raw:
            raise ConfigError(
                name, f"invalid bucket name {raw!r}; use 3 to 63 lowercase letters, digits, dots and hyphens"
            )
        return raw

    def region(self) -> str:
        name = "S3_REGION" if self.get("S3_REGION") else "AWS_DEFAULT_REGION"
        raw = self.get(name)
        if raw is None:
            return "us-east-1"

        if not re.fullmatch(r"[a-z0-9-]{2,32}", raw):
            raise ConfigError(name, f"invalid region {raw!r}; use an AWS region name such as eu-west-1")
        return raw

    def http_url(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        parts = _split_url(name, raw, "http://127.0.0.1:9000")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(name, f"invalid URL {raw!r}; use an http:// or https:// URL such as http://127.0.0.1:9000")
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ConfigError(name, f"{raw!r} has a path or query; give only scheme, host and port")
        return raw.rstrip("/")

    def route(self, name: str, default: str) -> str:
        raw = self.get(name)
        if raw is None:
            return default

        route = raw.rstrip("/")
        if not _ROUTE.match(route):
            raise ConfigError(name, f"invalid route {raw!r}; use a path such as /media (letters, digits, . _ ~ -)")
        return route

    def accel_location(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        if not _ACCEL_LOCATION.match(raw):
            raise ConfigError(
                name,
                f"invalid nginx location {raw!r}; use an internal location path such as /_media_s3 "
                "or a named location such as @media_s3, as in deploy/nginx.conf",
            )
        return raw

    def media_prefix(self, name: str, default: str) -> str:
        raw = self._environ.get(name)
        if raw is None:
            return default

        if raw.startswith("/") or any(ord(char) < 0x20 or ord(char) == 0x7F for char in raw):
            raise ConfigError(name, f"invalid prefix {raw!r}; use an S3 key prefix such as media/ (no leading /)")
        if len(raw.encode()) > 512:
            raise ConfigError(name, "prefix is longer than 512 bytes; use a shorter S3 key prefix")
        return raw

    def fernet_keys(self, name: str) -> tuple[bytes, ...]:
        raw = self.get(name)
        if raw is None:
            return ()

        keys = [part.strip() for part in raw.split(",") if part.strip()]
        for position, key in enumerate(keys, start=1):
            try:
                Fernet(key.encode())
            except (ValueError, TypeError):
                # The value is a secret, so the message names its position only.
                raise ConfigError(
                    name,
                    f"key {position} of {len(keys)} is not a valid Fernet key (32 url-safe base64-encoded bytes); "
                    "generate one with `media-gateway keygen`",
                ) from None
        return tuple(key.encode() for key in keys)

    def secret_list(self, name: str) -> tuple[str, ...]:
        raw = self.get(name)
        if raw is None:
            return ()
        return tuple(part.strip() for part in raw.split(",") if part.strip())

    def sql_identifier(self, name: str, default: str) -> tuple[str, ...]:
        raw = self.get(name) or default

        parts = tuple(raw.split("."))
        if len(parts) > 2 or not all(_SQL_IDENTIFIER.match(part) for part in parts):
            raise ConfigError(
                name,
                f"invalid table name {raw!r}; use a table name such as auth_user or myschema.auth_user "
                "(letters, digits, _ and $, at most 63 characters per part)",
            )
        return parts

    def cookie_name(self, name: str, default: str) -> str:
        raw = self.get(name)
        if raw is None:
            return default

        if not _COOKIE_NAME.match(raw):
            raise ConfigError(name, f"invalid cookie name {raw!r}; use letters, digits and - _ . only")
        return raw

    def login_url(self, name: str) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None

        # Browsers read a backslash as a slash, so "/\\host" would leave the site like "//host".
        if "\\" in raw or any(char.isspace() or not char.isprintable() for char in raw):
            raise ConfigError(
                name, f"invalid URL {raw!r}: it contains a backslash, a space or a control character; remove it"
            )

        parts = _split_url(name, raw, "/accounts/login/")
        is_absolute = parts.scheme in ("http", "https") and bool(parts.hostname)
        is_path = not parts.scheme and not parts.netloc and raw.startswith("/") and not raw.startswith("//")
        if not (is_absolute or is_path) or parts.fragment:
            raise ConfigError(name, f"invalid URL {raw!r}; use a path such as /accounts/login/ or an https:// URL")
        return raw

    def content_types(self, name: str, default: str) -> tuple[str, ...]:
        raw = self.get(name) or default

        types = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
        for content_type in types:
            if not _CONTENT_TYPE.match(content_type):
                raise ConfigError(
                    name, f"invalid content type {content_type!r}; use a list such as image/*,application/pdf"
                )
        return types

    def networks(self, name: str, default: str) -> ForwardedNetworks:
        raw = self.get(name) or default
        if raw == "*":
            return None

        networks = []
        for part in (part.strip() for part in raw.split(",")):
            if not part:
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(
                    name, f"invalid address {part!r}; use IP addresses or networks such as 10.0.0.0/8, or *"
                ) from None
        return tuple(networks)


def _split_url(name: str, raw: str, example: str, quote: bool = True) -> SplitResult:
    """Split `raw`, raising ConfigError for a malformed host or a port outside 0 to 65535."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - reading the port is what validates it.
    except ValueError as error:
        # A database URL may hold a password, so it is quoted only when `quote` allows.
        shown = f" {raw!r}" if quote else ""
        raise ConfigError(name, f"invalid URL{shown} ({error}); use a URL such as {example}") from None
    return parts
