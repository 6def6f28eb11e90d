"""The aiohttp application: routes, middleware and the resources' lifetimes."""

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from aiohttp import web

from . import database, decisions, observability, state
from .handlers.auth import AUTH_ROUTE_PREFIX, handle_media_auth
from .handlers.health import handle_healthz, handle_readyz
from .handlers.media import handle_media
from .handlers.uploads import handle_complete_upload, handle_create_upload
from .middleware import gateway_middleware
from .ownership import OwnershipSource, QueryOwnership, TableOwnership
from .s3 import create_presigner, open_clients
from .sessions import SessionBackend
from .sessions.cookie import CookieSessionBackend
from .sessions.django import DjangoSessionBackend
from .settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[gateway_middleware],
        client_max_size=64 * 1024,
    )
    app[state.SETTINGS] = settings
    observability.setup(app)

    app.cleanup_ctx.append(_postgres)
    app.cleanup_ctx.append(_s3)
    app.cleanup_ctx.append(_decision_cache)
    app.on_startup.append(_components)

    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    # Only POST reaches these two; any other method on the same paths falls through to handle_media,
    # so GET MEDIA_ROUTE/uploads/... stays an ordinary key lookup.
    app.router.add_post(settings.media_route + "/uploads", handle_create_upload)
    app.router.add_post(settings.media_route + "/uploads/{key:.+}/complete", handle_complete_upload)
    app.router.add_route("*", settings.media_route, handle_media)
    # [\s\S] and not ".": a key with a percent-encoded line break must reach the handler's 400.
    app.router.add_route("*", settings.media_route + r"/{tail:[\s\S]*}", handle_media)
    app.router.add_route("*", AUTH_ROUTE_PREFIX + settings.media_route + r"/{tail:[\s\S]*}", handle_media_auth)
    return app


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    pool = await database.create_pool(app[state.SETTINGS])
    app[state.POOL] = pool
    await _probe_postgres(pool)

    yield

    log.info("closing the PostgreSQL pool")
    await database.close_pool(pool)


async def _probe_postgres(pool) -> None:
    """Open one connection at start so the first request does not pay for it; an outage only warns."""
    try:
        await database.run(pool, lambda connection: connection.fetchval("SELECT 1"))
    except Exception as error:
        log.warning("PostgreSQL is not reachable at start (%s); requests will get 503 until it is", error)


async def _s3(app: web.Application) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        app[state.S3] = await open_clients(app[state.SETTINGS], stack)
        yield
        log.info("closing the S3 clients")


async def _decision_cache(app: web.Application) -> AsyncIterator[None]:
    settings = app[state.SETTINGS]
    if settings.ownership_query is not None:
        # No trigger evicts changes in the backend's own tables, so those decisions are never cached.
        app[state.DECISIONS] = None
        yield
        return

    async with decisions.open_decision_cache(settings) as cache:
        app[state.DECISIONS] = cache
        yield


async def _components(app: web.Application) -> None:
    settings = app[state.SETTINGS]
    app[state.SESSIONS] = await _session_backend(settings, app[state.POOL])
    app[state.OWNERSHIP] = await _ownership_source(settings, app[state.POOL], app[state.DECISIONS])
    app[state.PRESIGNER] = await create_presigner(settings, app[state.S3])


async def _session_backend(settings: Settings, pool) -> SessionBackend:
    if settings.session_backend == "cookie":
        return CookieSessionBackend(
            settings.session_secrets,
            settings.session_cookie_name,
            settings.session_max_age,
            cache_size=settings.decision_cache_size,
        )

    backend = DjangoSessionBackend(
        pool, settings.django_session_cookie_name, settings.django_secret_keys, settings.django_user_table
    )
    await backend.verify()
    if not settings.django_secret_keys:
        log.warning("DJANGO_SECRET_KEY is unset: Django session signatures and password changes are not checked")
    return backend


async def _ownership_source(settings: Settings, pool, cache) -> OwnershipSource:
    if settings.ownership_query is None:
        return decisions.with_cache(TableOwnership(pool), cache)

    source = QueryOwnership(pool, settings.ownership_query)
    await source.verify()
    return source
