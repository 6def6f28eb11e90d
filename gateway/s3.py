"""S3 clients and the presigner that turns an allowed key into a short-lived URL."""

import datetime
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from .errors import BackendUnavailable, ConfigError
from .logs import quiet_signing_loggers
from .settings import Settings
from .sigv4 import QuerySigner, signer_like_botocore

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2
READ_TIMEOUT = 5
MAX_ATTEMPTS = 2

MAX_RECENT_URLS = 4096

_OPERATIONS = {"GET": "get_object", "HEAD": "head_object"}


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires: int  # Unix time when the URL stops working.

    @property
    def expires_at(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.expires, datetime.UTC)


@dataclass(frozen=True)
class S3Clients:
    """`service` talks to the bucket; `signing` signs for the host that browsers reach."""

    service: object
    signing: object
    credentials: object = None  # The credentials both clients sign with, or None when unknown.


def _config(settings: Settings) -> AioConfig:
    return AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": settings.s3_addressing_style},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        # botocore's "max_attempts" counts retries after the first try; "total_max_attempts" counts every try.
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
    )


async def open_clients(settings: Settings, stack: AsyncExitStack, session: AioSession | None = None) -> S3Clients:
    """Open the S3 clients inside `stack`, which closes them."""
    quiet_signing_loggers()
    session = session or get_session()
    credentials = await require_credentials(session)

    service = await stack.enter_async_context(
        session.create_client(
            "s3", region_name=settings.s3_region, endpoint_url=settings.s3_endpoint_url, config=_config(settings)
        )
    )
    service.meta.events.register("request-created.s3", _log_retry)
    if settings.signing_endpoint_url == settings.s3_endpoint_url:
        return S3Clients(service=service, signing=service, credentials=credentials)

    signing = await stack.enter_async_context(
        session.create_client(
            "s3", region_name=settings.s3_region, endpoint_url=settings.signing_endpoint_url, config=_config(settings)
        )
    )
    return S3Clients(service=service, signing=signing, credentials=credentials)


def _log_retry(request, operation_name: str, **_) -> None:
    """Log each S3 call that botocore sends again; presigning creates requests without a retry count."""
    attempt = request.context.get("retries", {}).get("attempt", 1)
    if attempt > 1:
        log.info("retrying an S3 request", extra={"operation": operation_name, "attempt": attempt})


class Presigner:
    """Signs allowed keys: with the fast QuerySigner when one was built, otherwise through botocore.

    With a stable window of W seconds, the fast path dates every URL at the
    start of the current W-second window. Clicks within one window get the
    same URL, so the browser reuses its cached object, and a URL still
    expires within `ttl` seconds of now.
    """

    def __init__(
        self,
        client,
        bucket: str,
        prefix: str,
        ttl: int,
        stable_window: int = 0,
        signer: QuerySigner | None = None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._ttl = ttl
        self._stable_window = stable_window
        self._signer = signer
        # Within a stable window the same inputs give the same URL, so recent URLs are reused as they are.
        self._recent_urls: dict[tuple, str] = {}

    @property
    def fast(self) -> bool:
        return self._signer is not None

    async def presign(
        self,
        key: str,
        method: str,
        disposition: str | None = None,
        content_type: str | None = None,
        now: float | None = None,
    ) -> SignedUrl:
        """Sign `method` on the object MEDIA_PREFIX + key; `key` must already be validated."""
        if self._signer is None:
            return await self._presign_with_botocore(key, method, disposition, content_type)

        now = int(time.time() if now is None else now)
        signed_at = now - now % self._stable_window if self._stable_window else now
        expires = signed_at + self._ttl

        recent_key = (key, method, disposition, content_type, signed_at)
        url = self._recent_urls.get(recent_key)
        if url is not None:
            return SignedUrl(url=url, expires=expires)

        response_params = []
        if disposition is not None:
            response_params.append(("response-content-disposition", disposition))
        if content_type is not None:
            response_params.append(("response-content-type", content_type))

        url = self._signer.presign(self._prefix + key, method, self._ttl, signed_at, response_params)
        if self._stable_window:
            if len(self._recent_urls) >= MAX_RECENT_URLS:
                self._recent_urls.clear()
            self._recent_urls[recent_key] = url
        return SignedUrl(url=url, expires=expires)

    async def _presign_with_botocore(
        self, key: str, method: str, disposition: str | None, content_type: str | None
    ) -> SignedUrl:
        # NOTE: botocore dates a URL at the moment it signs, so this path gives no stable URLs.
        params = {"Bucket": self._bucket, "Key": self._prefix + key}
        if disposition is not None:
            params["ResponseContentDisposition"] = disposition
        if content_type is not None:
            params["ResponseContentType"] = content_type

        # Taken before signing, so the URL lives at least until this time.
        expires_at = int(time.time()) + self._ttl
        try:
            url = await self._client.generate_presigned_url(_OPERATIONS[method], Params=params, ExpiresIn=self._ttl)
        except (BotoCoreError, ClientError) as error:
            # Typically the credential chain failed to refresh (an expired role or credential_process).
            raise BackendUnavailable("s3", f"signing failed: {type(error).__name__}: {error}"[:200]) from error
        return SignedUrl(url=url, expires=expires_at)


async def create_presigner(settings: Settings, clients: "S3Clients") -> Presigner:
    """Build the presigner, with the fast signer when it reproduces botocore's URLs for this configuration."""
    signer = None
    if clients.credentials is not None:
        signer = await signer_like_botocore(
            clients.signing, clients.credentials, settings.s3_bucket, settings.media_prefix, settings.media_url_ttl
        )
    log.info("presigning with %s", "the fast SigV4 signer" if signer else "botocore")
    return Presigner(
        clients.signing,
        settings.s3_bucket,
        settings.media_prefix,
        settings.media_url_ttl,
        stable_window=settings.media_url_stable_window,
        signer=signer,
    )


async def require_credentials(session: AioSession):
    """Return the credentials of the AWS chain; raise ConfigError when it yields none, so signing cannot fail later."""
    credentials = await session.get_credentials()
    if credentials is None:
        raise ConfigError(
            "AWS_ACCESS_KEY_ID",
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an IAM role)",
        )
    return credentials
