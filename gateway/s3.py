"""S3 clients and the presigner that turns an allowed key into a short-lived URL."""

import datetime
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import BotoCoreError, ClientError

from .errors import BackendUnavailable, ConfigError
from .logs import quiet_signing_loggers
from .settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 2
READ_TIMEOUT = 5
MAX_ATTEMPTS = 2

_OPERATIONS = {"GET": "get_object", "HEAD": "head_object"}


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime.datetime


@dataclass(frozen=True)
class S3Clients:
    """`service` talks to the bucket; `signing` signs for the host that browsers reach."""

    service: object
    signing: object


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
    await require_credentials(session)

    service = await stack.enter_async_context(
        session.create_client(
            "s3", region_name=settings.s3_region, endpoint_url=settings.s3_endpoint_url, config=_config(settings)
        )
    )
    service.meta.events.register("request-created.s3", _log_retry)
    if settings.signing_endpoint_url == settings.s3_endpoint_url:
        return S3Clients(service=service, signing=service)

    signing = await stack.enter_async_context(
        session.create_client(
            "s3", region_name=settings.s3_region, endpoint_url=settings.signing_endpoint_url, config=_config(settings)
        )
    )
    return S3Clients(service=service, signing=signing)


def _log_retry(request, operation_name: str, **_) -> None:
    """Log each S3 call that botocore sends again; presigning creates requests without a retry count."""
    attempt = request.context.get("retries", {}).get("attempt", 1)
    if attempt > 1:
        log.info("retrying an S3 request", extra={"operation": operation_name, "attempt": attempt})


class Presigner:
    def __init__(self, client, bucket: str, prefix: str, ttl: int) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._ttl = ttl

    async def presign(
        self, key: str, method: str, disposition: str | None = None, content_type: str | None = None
    ) -> SignedUrl:
        """Sign `method` on the object MEDIA_PREFIX + key; `key` must already be validated."""
        params = {"Bucket": self._bucket, "Key": self._prefix + key}
        if disposition is not None:
            params["ResponseContentDisposition"] = disposition
        if content_type is not None:
            params["ResponseContentType"] = content_type

        # Taken before signing, so the URL lives at least until this time.
        expires_at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._ttl)
        try:
            url = await self._client.generate_presigned_url(_OPERATIONS[method], Params=params, ExpiresIn=self._ttl)
        except (BotoCoreError, ClientError) as error:
            # Typically the credential chain failed to refresh (an expired role or credential_process).
            raise BackendUnavailable("s3", f"signing failed: {type(error).__name__}: {error}"[:200]) from error
        return SignedUrl(url=url, expires_at=expires_at.replace(microsecond=0))


async def require_credentials(session: AioSession) -> None:
    """Raise ConfigError when the AWS credential chain yields nothing, so signing cannot fail later."""
    if await session.get_credentials() is None:
        raise ConfigError(
            "AWS_ACCESS_KEY_ID",
            "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an IAM role)",
        )
