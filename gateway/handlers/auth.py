"""GET and HEAD on /auth + MEDIA_ROUTE/{key}: the media decision for nginx's auth_request.

nginx sends its subrequest here with the original path and query after the /auth prefix.
An allowed request gets 204 with the presigned URL in X-Media-Url for nginx to fetch.
Any other request gets the 400, 401, 403 or 503 that MEDIA_ROUTE would send. An
anonymous one never gets a redirect to LOGIN_URL, because auth_request turns a 3xx into a 500.
"""

from aiohttp import web

from .. import state
from ..accel import MEDIA_URL_HEADER
from .media import authorize, method_not_allowed, signed_url_headers

AUTH_ROUTE_PREFIX = "/auth"


async def handle_media_auth(request: web.Request) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request.method)

    route = AUTH_ROUTE_PREFIX + request.app[state.SETTINGS].media_route
    outcome = await authorize(request, route, same_origin=True, login_redirect=False)
    if isinstance(outcome, web.Response):
        return outcome

    headers = {**signed_url_headers(outcome.signed), MEDIA_URL_HEADER: outcome.signed.url}
    return web.Response(status=204, headers=headers)
