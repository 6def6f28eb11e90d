"""JSON bodies for the errors aiohttp sends without calling the app, such as a 400 for an unparsable request.

aiohttp 3.14 responds to a request its HTTP parser rejects from RequestHandler.handle_error,
outside the app and its middleware, with a plain-text body that quotes the rejected bytes (a
cookie among them). It has no public hook for that response, so GatewayRunner makes the server
build JsonErrorRequestHandler, a RequestHandler subclass, for each connection.
"""

from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .responses import json_error

# aiohttp's defaults (8190 bytes) reject a long URL or a large Cookie header in the parser. These
# limits let such requests reach the handlers, which return a specific JSON 4xx. Anything larger
# still gets the parser's 400, with the JSON body that GatewayRunner gives it.
MAX_LINE_SIZE = 32 * 1024
MAX_FIELD_SIZE = 16 * 1024

_ERRORS = {
    400: ("bad_request", "The request is not valid HTTP/1.1; fix the request line and headers, then send it again."),
    500: ("internal_error", "The gateway failed to handle this request; it has been logged."),
}


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, with a JSON body on the error responses it sends itself."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own method logs the error (MalformedRequestFilter shortens that record) and raises
        # ConnectionError when part of a response was already sent. Its plain-text response is dropped.
        super().handle_error(request, status, exc, message)

        code, text = _ERRORS.get(status) or _generic_error(status)
        if isinstance(exc, LineTooLong):
            text = (
                f"The request line or a header is too long; the limits are {MAX_LINE_SIZE // 1024} KiB for the "
                f"request line and {MAX_FIELD_SIZE // 1024} KiB per header, so send a shorter URL or fewer cookies."
            )
        response = json_error(status, code, text)
        response.force_close()
        return response


def _generic_error(status: int) -> tuple[str, str]:
    phrase = HTTPStatus(status).phrase
    return phrase.lower().replace(" ", "_"), f"{phrase}."


class _JsonErrorServer(web.Server):
    """web.Server that builds a JsonErrorRequestHandler for each new connection."""

    def __call__(self) -> RequestHandler:
        # web.Server.__call__ in aiohttp 3.14 builds its RequestHandler from the same two attributes.
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """web.AppRunner whose connections send JSON bodies on the errors aiohttp sends without calling the app.

    It also raises the parser's size limits to MAX_LINE_SIZE and MAX_FIELD_SIZE unless the caller passes its own.
    """

    def __init__(self, app: web.Application, **kwargs) -> None:
        kwargs.setdefault("max_line_size", MAX_LINE_SIZE)
        kwargs.setdefault("max_field_size", MAX_FIELD_SIZE)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Application._make_handler always builds a plain web.Server. The subclass adds no state and
        # changes only the handler class each connection gets, so the instance switches class in place.
        server.__class__ = _JsonErrorServer
        return server
