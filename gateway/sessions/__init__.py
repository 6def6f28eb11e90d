"""Session backends: each one reads the caller's user id from a request."""

from typing import Protocol

from aiohttp import web


class SessionBackend(Protocol):
    async def user_id(self, request: web.Request) -> str | None:
        """Return the authenticated user's id, or None when the request has no valid session."""
        ...
