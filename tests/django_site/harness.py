"""Drive the test Django project from async tests.

Django is configured once per test session. Its ORM is synchronous and refuses to run inside
an event loop, so every Django call runs on one dedicated thread, which also keeps a single
database connection for the whole session.
"""

import asyncio
import datetime
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

SECRET_KEY = "django-test-secret-key-for-the-gateway-tests-0123456789"
OLD_SECRET_KEY = "django-test-secret-key-that-was-rotated-out-9876543210"
PASSWORD = "correct horse battery staple"


class DjangoSite:
    def __init__(self, database_url: str, s3_endpoint_url: str, bucket: str, access_key: str, secret_key: str) -> None:
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.django_site.settings",
                "MEDIA_GATEWAY_TEST_DATABASE_URL": database_url,
                "MEDIA_GATEWAY_TEST_DJANGO_SECRET_KEY": SECRET_KEY,
                "MEDIA_GATEWAY_TEST_DJANGO_FALLBACKS": OLD_SECRET_KEY,
                "MEDIA_GATEWAY_TEST_S3_ENDPOINT_URL": s3_endpoint_url,
                "MEDIA_GATEWAY_TEST_BUCKET": bucket,
                "MEDIA_GATEWAY_TEST_ACCESS_KEY": access_key,
                "MEDIA_GATEWAY_TEST_SECRET_KEY": secret_key,
            }
        )
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="django")
        self._thread.submit(_setup).result()

    def stop(self) -> None:
        self._thread.submit(_close_connections).result()
        self._thread.shutdown()

    async def call(self, function: Callable[..., T], *args) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def create_user(self, username: str, password: str = PASSWORD) -> str:
        """Create a user and return its id as Django stores it in sessions."""
        return await self.call(_create_user, username, password)

    async def upload_video(self, user_id: str, filename: str, content: bytes) -> str:
        """Save a Video through django-storages and return the file's name (the FileField value)."""
        return await self.call(_upload_video, user_id, filename, content)

    async def login(self, username: str, password: str = PASSWORD) -> str:
        """Log in with Django's test client and return the session key from its cookie."""
        return await self.call(_login, username, password)

    async def logout(self, session_key: str) -> None:
        await self.call(_logout, session_key)

    async def change_password(self, user_id: str, password: str) -> None:
        await self.call(_change_password, user_id, password)

    async def deactivate(self, user_id: str) -> None:
        await self.call(_deactivate, user_id)

    async def expire_session(self, session_key: str) -> None:
        await self.call(_expire_session, session_key)

    async def session_data(self, session_key: str) -> str:
        return await self.call(_session_data, session_key)

    async def set_session_data(self, session_key: str, data: str) -> None:
        await self.call(_set_session_data, session_key, data)

    async def create_session(self, values: dict) -> str:
        """Store a session with these values through Django's SessionStore and return its key."""
        return await self.call(_create_session, values)

    async def encode(self, values: dict, secret_key: str = SECRET_KEY, compress: bool = True) -> str:
        """Sign values with django.core.signing as the database SessionStore does."""
        return await self.call(_encode, values, secret_key, compress)

    async def auth_hash(self, user_id: str) -> str:
        return await self.call(_auth_hash, user_id)


def _setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _close_connections() -> None:
    from django.db import connections

    connections.close_all()


def _create_user(username: str, password: str) -> str:
    from django.contrib.auth.models import User

    user = User.objects.create_user(username=username, password=password)
    return str(user.pk)


def _upload_video(user_id: str, filename: str, content: bytes) -> str:
    from django.core.files.base import ContentFile

    from .videos.models import Video

    video = Video(user_id=int(user_id))
    video.video.save(filename, ContentFile(content), save=True)
    return video.video.name


def _login(username: str, password: str) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    if not client.login(username=username, password=password):
        raise AssertionError(f"Django rejected the login of {username}")
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _logout(session_key: str) -> None:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    client.logout()


def _change_password(user_id: str, password: str) -> None:
    from django.contrib.auth.models import User

    user = User.objects.get(pk=int(user_id))
    user.set_password(password)
    user.save()


def _deactivate(user_id: str) -> None:
    from django.contrib.auth.models import User

    User.objects.filter(pk=int(user_id)).update(is_active=False)


def _expire_session(session_key: str) -> None:
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    Session.objects.filter(pk=session_key).update(expire_date=timezone.now() - datetime.timedelta(seconds=1))


def _session_data(session_key: str) -> str:
    from django.contrib.sessions.models import Session

    return Session.objects.get(pk=session_key).session_data


def _set_session_data(session_key: str, data: str) -> None:
    from django.contrib.sessions.models import Session

    Session.objects.filter(pk=session_key).update(session_data=data)


def _create_session(values: dict) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store.update(values)
    store.create()
    return store.session_key


def _encode(values: dict, secret_key: str, compress: bool) -> str:
    from django.contrib.sessions.backends.db import SessionStore
    from django.core import signing

    return signing.dumps(
        values, key=secret_key, salt=SessionStore().key_salt, serializer=signing.JSONSerializer, compress=compress
    )


def _auth_hash(user_id: str) -> str:
    from django.contrib.auth.models import User

    return User.objects.get(pk=int(user_id)).get_session_auth_hash()
