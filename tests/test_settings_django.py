"""Settings of the Django drop-in: SESSION_BACKEND, DJANGO_* and OWNERSHIP_QUERY."""

import os
import subprocess
import sys

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings

SERVE = ("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET")
BASE = {"DATABASE_URL": "postgres://u@127.0.0.1/db", "S3_BUCKET": "media-bucket"}


def test_defaults():
    settings = load_settings({})

    assert settings.session_backend == "cookie"
    assert settings.django_session_cookie_name == "sessionid"
    assert settings.django_secret_keys == ()
    assert settings.django_user_table == ("auth_user",)
    assert settings.ownership_query is None


def test_django_backend_needs_no_session_secret():
    settings = load_settings({**BASE, "SESSION_BACKEND": "django"}, require=SERVE)

    assert settings.session_backend == "django"


def test_cookie_backend_needs_session_secret():
    with pytest.raises(ConfigError, match="^SESSION_SECRET: missing"):
        load_settings({**BASE, "SESSION_BACKEND": "cookie"}, require=SERVE)


def test_unknown_backend_rejected():
    with pytest.raises(ConfigError, match="^SESSION_BACKEND: unknown value 'flask'; use one of cookie, django$"):
        load_settings({"SESSION_BACKEND": "flask"})


def test_backend_name_case_insensitive():
    assert load_settings({"SESSION_BACKEND": "Django"}).session_backend == "django"


def test_secret_key_list_split_on_commas():
    settings = load_settings({"DJANGO_SECRET_KEY": " new-key , old-key ,"})

    assert settings.django_secret_keys == ("new-key", "old-key")


@pytest.mark.parametrize(
    ("value", "parts"),
    [("accounts_user", ("accounts_user",)), ("auth.Users", ("auth", "Users")), ("t$1", ("t$1",))],
)
def test_user_table_accepted(value, parts):
    assert load_settings({"DJANGO_USER_TABLE": value}).django_user_table == parts


@pytest.mark.parametrize(
    "value", ["a.b.c", "auth_user; DROP TABLE x", '"auth_user"', "1users", "auth.", ".users", "x" * 64, "us er"]
)
def test_user_table_rejected(value):
    with pytest.raises(ConfigError, match="^DJANGO_USER_TABLE: invalid table name"):
        load_settings({"DJANGO_USER_TABLE": value})


def test_cookie_name_validated():
    with pytest.raises(ConfigError, match="^DJANGO_SESSION_COOKIE_NAME: invalid cookie name"):
        load_settings({"DJANGO_SESSION_COOKIE_NAME": "session id"})


def test_ownership_query_kept():
    query = "SELECT user_id::text AS owner_id FROM videos_video WHERE video = $1"

    assert load_settings({"OWNERSHIP_QUERY": f"  {query}\n"}).ownership_query == query


def test_session_issue_needs_secret_with_django_backend():
    env = {key: value for key, value in os.environ.items() if key != "SESSION_SECRET"}

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "session", "issue", "--user", "1"],
        env={**env, "SESSION_BACKEND": "django"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert result.stderr.startswith("media-gateway: error: SESSION_SECRET: missing")
