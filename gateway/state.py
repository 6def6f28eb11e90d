"""Typed application keys for the resources the app's cleanup contexts create."""

import asyncpg
from aiohttp import web

from .decisions import DecisionCache
from .ownership import OwnershipSource
from .s3 import Presigner, S3Clients
from .sessions import SessionBackend
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
S3 = web.AppKey("s3", S3Clients)
SESSIONS = web.AppKey("sessions", SessionBackend)
OWNERSHIP = web.AppKey("ownership", OwnershipSource)
PRESIGNER = web.AppKey("presigner", Presigner)
DECISIONS = web.AppKey("decisions", DecisionCache | None)

REQUEST_ID = web.RequestKey("request_id", str)
USER_ID = web.RequestKey("user_id", str | None)
