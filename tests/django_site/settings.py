"""Settings of the test Django project; the harness sets the MEDIA_GATEWAY_TEST_* variables first."""

import os
from urllib.parse import parse_qs, urlsplit

_database = urlsplit(os.environ["MEDIA_GATEWAY_TEST_DATABASE_URL"])

SECRET_KEY = os.environ["MEDIA_GATEWAY_TEST_DJANGO_SECRET_KEY"]
SECRET_KEY_FALLBACKS = [key for key in os.environ.get("MEDIA_GATEWAY_TEST_DJANGO_FALLBACKS", "").split(",") if key]
USE_TZ = True
ALLOWED_HOSTS = ["testserver", "127.0.0.1"]
ROOT_URLCONF = "tests.django_site.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "tests.django_site.videos",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _database.path.lstrip("/"),
        "USER": _database.username or "",
        "PASSWORD": _database.password or "",
        "HOST": _database.hostname or parse_qs(_database.query).get("host", [""])[0],
        "PORT": str(_database.port or ""),
    }
}

# Hashing speed does not matter to the gateway, which only reads the stored hash.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# A private bucket served through presigned URLs, as a site that guards its files with a view has.
MEDIA_URL = "/media/"
STORAGES = {
    "default": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["MEDIA_GATEWAY_TEST_BUCKET"],
            "endpoint_url": os.environ["MEDIA_GATEWAY_TEST_S3_ENDPOINT_URL"],
            "access_key": os.environ["MEDIA_GATEWAY_TEST_ACCESS_KEY"],
            "secret_key": os.environ["MEDIA_GATEWAY_TEST_SECRET_KEY"],
            "region_name": "us-east-1",
            "addressing_style": "path",
            "location": "media",
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
