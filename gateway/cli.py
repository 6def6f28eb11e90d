"""The `media-gateway` command line."""

import argparse
import asyncio
import datetime
import errno
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet

from . import admin
from .errors import BackendUnavailable, ConfigError, GatewayError
from .sessions.cookie import MAX_USER_ID_LENGTH
from .settings import Settings, load_settings

log = logging.getLogger("gateway")



class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="media-gateway", description="Authorize media requests and redirect to presigned S3 URLs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="0.0.0.0", help="address to bind (default: 0.0.0.0)")
    serve.add_argument("--port", type=_port, help="port to bind (default: $PORT, then 8080)")

    demo = commands.add_parser("demo", help="run the service with embedded PostgreSQL and S3 and demo data")
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    demo.add_argument("--port", type=_port, help="port to bind (default: $PORT, then 8080)")

    commands.add_parser("migrate", help="apply schema.sql to DATABASE_URL (safe to run twice)")
    commands.add_parser("keygen", help="print a new SESSION_SECRET value")
    commands.add_parser("check", help="validate the configuration and reach PostgreSQL and the bucket")

    session = commands.add_parser("session", help="session tokens").add_subparsers(
        dest="session_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    issue = session.add_parser("issue", help="print a session token (cookie value and bearer token) for a user")
    issue.add_argument("--user", required=True, type=_user_id, metavar="ID", help="the backend's user id")

    objects = commands.add_parser("objects", help="register and share objects").add_subparsers(
        dest="objects_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    add = objects.add_parser("add", help="register an object (upload the S3 object separately)")
    add.add_argument("key", metavar="KEY", help="key under MEDIA_PREFIX, as it appears in the URL")
    add.add_argument("--owner", required=True, type=_user_id, metavar="ID", help="user id of the owner")
    add.add_argument("--public", action="store_true", help="anyone may read it, signed in or not")
    add.add_argument("--content-type", metavar="T", help="content type S3 sends with the file")
    add.add_argument("--filename", metavar="NAME", help="name offered to the browser (Content-Disposition)")

    grant = objects.add_parser("grant", help="share an object with another user")
    grant.add_argument("key", metavar="KEY")
    grant.add_argument("--to", required=True, type=_user_id, metavar="ID", help="user id to share with")
    grant.add_argument("--expires", metavar="ISO8601", help="end of the grant, e.g. 2027-01-31T12:00:00Z")

    revoke = objects.add_parser("revoke", help="stop sharing an object with a user")
    revoke.add_argument("key", metavar="KEY")
    revoke.add_argument("--to", required=True, type=_user_id, metavar="ID", help="user id to stop sharing with")

    uploads = commands.add_parser("uploads", help="maintain browser uploads").add_subparsers(
        dest="uploads_command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    prune = uploads.add_parser(
        "prune", help="delete uploads still pending after their form expired, with their objects"
    )
    prune.add_argument(
        "--older-than",
        type=_duration,
        metavar="DURATION",
        help="age of the uploads to delete: 90m, 24h, 7d or seconds (default: MEDIA_URL_TTL plus 24h)",
    )
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted and change nothing")
    # The shortest allowed age depends on MEDIA_URL_TTL, so it is checked after the settings are read.
    prune.set_defaults(usage_error=prune.error)

    sync = commands.add_parser(
        "sync-static", help="upload changed static files (a collectstatic output directory) to the bucket"
    )
    sync.add_argument("directory", metavar="DIR", help="directory to upload, e.g. Django's STATIC_ROOT")
    sync.add_argument("--prefix", default="static/", help="S3 key folder to sync into (default: static/)")
    sync.add_argument("--dry-run", action="store_true", help="list what would change and change nothing")
    sync.add_argument("--delete", action="store_true", help="also delete objects under --prefix with no local file")
    sync.add_argument("--jobs", type=_jobs, default=8, help="uploads in parallel, 1 to 10 (default: 8)")

    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
    except BackendUnavailable as error:
        print(f"media-gateway: error: {_unavailable_message(error)}", file=sys.stderr)
        code = 1
    except GatewayError as error:
        print(f"media-gateway: error: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _unavailable_message(error: BackendUnavailable) -> str:
    """Name the setting behind an unreachable backend and what to check, as `check` does."""
    if error.backend == "postgres":
        return admin.postgres_problem(error.reason)
    if error.backend == "s3":
        return (
            f"S3_BUCKET: the bucket is not usable ({error.reason}); "
            "check S3_BUCKET, S3_ENDPOINT_URL and the AWS credentials"
        )
    return str(error)


def _dispatch(args: argparse.Namespace) -> int:
    environ = os.environ

    if args.command == "keygen":
        print(Fernet.generate_key().decode("ascii"))
        return 0

    if args.command == "session":
        from .sessions.cookie import issue_token

        settings = load_settings(environ, require=("SESSION_SECRET",))
        if not settings.session_secrets:
            # SESSION_BACKEND=django lifts the requirement for serving, but a token needs the key.
            raise ConfigError("SESSION_SECRET", "missing; generate one with `media-gateway keygen` to issue tokens")
        print(issue_token(settings.session_secrets[0], args.user))
        return 0

    if args.command == "serve":
        settings = load_settings(environ, require=("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET"))
        return _serve(settings, args.host, args.port or settings.port)

    if args.command == "sync-static":
        return _sync_static(args, environ)

    if args.command == "uploads":
        return _prune_uploads(args, environ)

    if args.command == "demo":
        from .demo import run_demo

        return run_demo(environ, args.host, args.port)

    settings = load_settings(environ, require=("DATABASE_URL",))

    if args.command == "migrate":
        asyncio.run(admin.migrate(settings))
        print("schema applied")
        return 0

    if args.command == "check":
        return _check(environ)

    return _objects(args, settings)


def _objects(args: argparse.Namespace, settings: Settings) -> int:
    if args.objects_command == "add":
        asyncio.run(
            admin.add_object(settings, args.key, args.owner, args.public, args.content_type, args.filename)
        )
        print(f"registered {args.key} for owner {args.owner}")
    elif args.objects_command == "grant":
        asyncio.run(admin.grant(settings, args.key, args.to, args.expires))
        print(f"shared {args.key} with {args.to}")
    elif not asyncio.run(admin.revoke(settings, args.key, args.to)):
        print(f"{args.key} was not shared with {args.to}; nothing to revoke")
    else:
        print(f"stopped sharing {args.key} with {args.to}")
    return 0


def _check(environ) -> int:
    settings = load_settings(environ, require=("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET"))
    problems = asyncio.run(admin.check(settings))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1

    print(f"ok: PostgreSQL reachable, schema present, bucket {settings.s3_bucket} reachable")
    return 0


def _sync_static(args: argparse.Namespace, environ) -> int:
    from .static_sync import sync_static

    settings = load_settings(environ, require=("S3_BUCKET",))
    return asyncio.run(
        sync_static(
            settings, Path(args.directory), args.prefix, dry_run=args.dry_run, delete=args.delete, jobs=args.jobs
        )
    )


def _prune_uploads(args: argparse.Namespace, environ) -> int:
    from .upload_prune import default_age, format_duration, prune_uploads, shortest_age

    settings = load_settings(environ, require=("DATABASE_URL", "S3_BUCKET"))
    older_than = args.older_than if args.older_than is not None else default_age(settings)
    if older_than < shortest_age(settings):
        args.usage_error(
            f"--older-than {format_duration(older_than)} would delete uploads whose form may still be valid "
            f"(MEDIA_URL_TTL is {settings.media_url_ttl} s); give at least {format_duration(shortest_age(settings))}"
        )
    return asyncio.run(prune_uploads(settings, older_than, dry_run=args.dry_run))


def _serve(settings: Settings, host: str, port: int) -> int:
    from .logs import configure_logging
    from .workers import serve

    configure_logging(settings.log_level, settings.log_format)
    log.info("starting media-gateway", extra={"host": host, "port": port, "route": settings.media_route})
    try:
        code = serve(settings, host, port)
    except OSError as error:
        if not _is_listen_error(error):
            raise
        reason = error.strerror if isinstance(error, socket.gaierror) else os.strerror(error.errno)
        raise GatewayError(
            f"cannot listen on {host}:{port} ({reason}); "
            "choose a free port with --port or $PORT, or an address of this machine with --host"
        ) from None
    log.info("media-gateway stopped")
    return code


def _is_listen_error(error: OSError) -> bool:
    return isinstance(error, socket.gaierror) or error.errno in (
        errno.EADDRINUSE,
        errno.EADDRNOTAVAIL,
        errno.EACCES,
    )


def _user_id(value: str) -> str:
    """Reject ids the gateway would not accept from a token, so no useless token is printed."""
    if not value.strip() or len(value) > MAX_USER_ID_LENGTH or not value.isprintable():
        raise argparse.ArgumentTypeError(
            f"invalid user id {value[:40]!r}; "
            f"give the backend's user id as 1 to {MAX_USER_ID_LENGTH} printable characters"
        )
    return value


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}; use a number from 1 to 65535")
    return int(value)


def _duration(value: str) -> datetime.timedelta:
    from .upload_prune import parse_duration

    try:
        return parse_duration(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _jobs(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 10:
        raise argparse.ArgumentTypeError(f"invalid job count {value!r}; use a number from 1 to 10")
    return int(value)
