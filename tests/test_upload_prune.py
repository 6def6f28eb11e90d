"""`media-gateway uploads prune` against the test PostgreSQL and moto: as a subprocess, and one upload at a time."""

import datetime
import uuid
from contextlib import AsyncExitStack

import pytest
from botocore.exceptions import ClientError

from gateway.errors import BackendUnavailable
from gateway.s3 import open_clients
from gateway.settings import load_settings
from gateway.upload_prune import Outcome, format_duration, parse_duration, prune_upload
from gateway.upload_store import find_stale_uploads

from .conftest import BUCKET
from .processes import process_env
from .servers import free_port
from .test_cli import assert_one_line_error, closed_port_url, run_cli

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


@pytest.fixture
def cli_env(gateway_env, tmp_path) -> dict[str, str]:
    return process_env(gateway_env, tmp_path)


@pytest.fixture
async def s3_service(gateway_env):
    """The aiobotocore client the command itself uses, for calling prune_upload directly."""
    async with AsyncExitStack() as stack:
        yield (await open_clients(load_settings(gateway_env), stack)).service


def new_key(name: str = "photo.png") -> str:
    """A fresh upload key per call, because the moto bucket lives for the whole session."""
    return f"uploads/{uuid.uuid4().hex}/{name}"


async def add_upload(db, key: str, age: datetime.timedelta, status: str = "pending") -> None:
    await db.execute(
        """
        INSERT INTO media_objects (key, owner_id, content_type, filename, status, size, created_at)
        VALUES ($1, 'alice', 'image/png', 'photo.png', $2, 5, now() - $3::interval)
        """,
        key,
        status,
        age,
    )


def put_object(s3, object_key: str) -> None:
    s3.put_object(Bucket=BUCKET, Key=object_key, Body=b"bytes", ContentType="image/png")


def object_exists(s3, object_key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=object_key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


async def row_status(db, key: str) -> str | None:
    return await db.fetchval("SELECT status FROM media_objects WHERE key = $1", key)


async def prune(env: dict[str, str], *args: str):
    return await run_cli(env, "uploads", "prune", *args)


class TestPruning:
    async def test_old_pending_with_object_removed(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        put_object(s3, "media/" + key)

        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) is None
        assert not object_exists(s3, "media/" + key)
        assert f"pruned {key} (row and object;" in result.stdout

    async def test_old_pending_without_object_removed(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 2 * DAY)

        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) is None
        assert f"pruned {key} (row only; the bucket had no object;" in result.stdout

    async def test_young_pending_kept(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 2 * HOUR)
        put_object(s3, "media/" + key)

        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) == "pending"
        assert object_exists(s3, "media/" + key)
        assert key not in result.stdout

    async def test_ready_row_kept(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 30 * DAY, status="ready")
        put_object(s3, "media/" + key)

        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) == "ready"
        assert object_exists(s3, "media/" + key)

    async def test_objects_outside_prefix_untouched(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        outside = [key, "other/" + key, "media-old/" + key]
        for object_key in outside:
            put_object(s3, object_key)

        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) is None
        for object_key in outside:
            assert object_exists(s3, object_key), object_key

    async def test_custom_prefix_used(self, cli_env, db, s3):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        put_object(s3, "user-media/" + key)
        put_object(s3, "media/" + key)

        result = await prune({**cli_env, "MEDIA_PREFIX": "user-media/"})

        assert result.returncode == 0, result.stderr
        assert not object_exists(s3, "user-media/" + key)
        assert object_exists(s3, "media/" + key)

    async def test_summary_counts_pruned(self, cli_env, db, s3):
        for age in (2 * DAY, 3 * DAY, HOUR):
            await add_upload(db, new_key(), age)

        result = await prune(cli_env)
        lines = result.stdout.splitlines()

        assert result.returncode == 0, result.stderr
        assert len(lines) == 3
        assert lines[-1] == "pruned 2 uploads pending for over 25h"

    async def test_nothing_to_prune(self, cli_env, db):
        result = await prune(cli_env)

        assert result.returncode == 0, result.stderr
        assert result.stdout == "pruned 0 uploads pending for over 25h\n"
        assert result.stderr == ""

    async def test_oldest_listed_first(self, cli_env, db):
        newer, older = new_key("newer.png"), new_key("older.png")
        await add_upload(db, newer, 2 * DAY)
        await add_upload(db, older, 5 * DAY)

        result = await prune(cli_env)
        lines = result.stdout.splitlines()

        assert lines[0].startswith(f"pruned {older} ")
        assert lines[1].startswith(f"pruned {newer} ")


class TestDryRun:
    async def test_changes_nothing(self, cli_env, db, s3):
        with_object, without_object = new_key(), new_key()
        await add_upload(db, with_object, 2 * DAY)
        await add_upload(db, without_object, 2 * DAY)
        put_object(s3, "media/" + with_object)

        result = await prune(cli_env, "--dry-run")

        assert result.returncode == 0, result.stderr
        assert await row_status(db, with_object) == "pending"
        assert await row_status(db, without_object) == "pending"
        assert object_exists(s3, "media/" + with_object)

    async def test_lists_what_it_would_do(self, cli_env, db, s3):
        with_object, without_object = new_key(), new_key()
        await add_upload(db, with_object, 3 * DAY)
        await add_upload(db, without_object, 2 * DAY)
        put_object(s3, "media/" + with_object)

        result = await prune(cli_env, "--dry-run")
        lines = result.stdout.splitlines()

        assert lines[0].startswith(f"would prune {with_object} (row and object;")
        assert lines[1].startswith(f"would prune {without_object} (row only;")
        assert lines[2] == "dry run: 2 uploads pending for over 25h would be pruned; nothing changed"


class TestOlderThan:
    @pytest.mark.parametrize(
        ("older_than", "pruned"),
        [("150m", True), ("9000", True), ("9000s", True), ("2h", True), ("4h", False), ("1d", False)],
    )
    async def test_forms_accepted(self, cli_env, db, older_than, pruned):
        key = new_key()
        await add_upload(db, key, 3 * HOUR)

        result = await prune(cli_env, "--older-than", older_than)

        assert result.returncode == 0, result.stderr
        assert (await row_status(db, key) is None) is pruned

    async def test_default_follows_url_ttl(self, cli_env, db):
        key = new_key()
        await add_upload(db, key, 26 * HOUR)

        result = await prune({**cli_env, "MEDIA_URL_TTL": str(3 * 3600)})

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) == "pending"
        assert result.stdout == "pruned 0 uploads pending for over 27h\n"

    @pytest.mark.parametrize("older_than", ["abc", "5x", "1.5h", "-5", "0", "0d", "1h30m", "", "99999999999999d"])
    async def test_bad_duration_rejected(self, cli_env, db, older_than):
        key = new_key()
        await add_upload(db, key, 30 * DAY)

        result = await prune(cli_env, "--older-than", older_than)

        line = assert_one_line_error(result)
        assert result.returncode == 2
        assert f"--older-than: invalid duration {older_than!r}" in line
        assert await row_status(db, key) == "pending"

    async def test_within_form_lifetime_rejected(self, cli_env, db):
        key = new_key()
        await add_upload(db, key, 2 * HOUR)

        result = await prune(cli_env, "--older-than", "30m")

        line = assert_one_line_error(result)
        assert result.returncode == 2
        assert "--older-than 30m" in line
        assert "MEDIA_URL_TTL is 3600 s" in line
        assert "at least 75m" in line
        assert await row_status(db, key) == "pending"

    async def test_short_ttl_allows_short_age(self, cli_env, db):
        key = new_key()
        await add_upload(db, key, HOUR)

        result = await prune({**cli_env, "MEDIA_URL_TTL": "60"}, "--older-than", "30m")

        assert result.returncode == 0, result.stderr
        assert await row_status(db, key) is None


class TestUnavailable:
    async def test_unreachable_database_one_line(self, cli_env):
        result = await prune({**cli_env, "DATABASE_URL": closed_port_url()})

        line = assert_one_line_error(result)
        assert result.returncode == 1
        assert "DATABASE_URL: PostgreSQL is not usable" in line
        assert "check the URL" in line

    async def test_unreachable_s3_one_line(self, cli_env, db):
        key = new_key()
        await add_upload(db, key, 2 * DAY)

        result = await prune({**cli_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})

        line = assert_one_line_error(result)
        assert result.returncode == 1
        assert "S3_BUCKET" in line
        assert await row_status(db, key) == "pending"

    async def test_missing_bucket_one_line(self, cli_env, db):
        key = new_key()
        await add_upload(db, key, 2 * DAY)

        result = await prune({**cli_env, "S3_BUCKET": "no-such-bucket"})

        line = assert_one_line_error(result)
        assert "'no-such-bucket'" in line
        assert await row_status(db, key) == "pending"


class TestRaceWithComplete:
    """prune_upload on a row that changed after find_stale_uploads listed it, as a complete would change it."""

    async def test_completed_row_survives(self, db, s3, s3_service):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        put_object(s3, "media/" + key)
        cutoff = await db.fetchval("SELECT now() - interval '25 hours'")
        [stale] = await find_stale_uploads(db, cutoff)

        await db.execute("UPDATE media_objects SET status = 'ready' WHERE key = $1", key)
        outcome = await prune_upload(db, s3_service, BUCKET, "media/", stale, cutoff)

        assert outcome is Outcome.KEPT
        assert await row_status(db, key) == "ready"
        assert object_exists(s3, "media/" + key)

    async def test_renewed_row_survives(self, db, s3, s3_service):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        put_object(s3, "media/" + key)
        cutoff = await db.fetchval("SELECT now() - interval '25 hours'")
        [stale] = await find_stale_uploads(db, cutoff)

        await db.execute("UPDATE media_objects SET created_at = now() WHERE key = $1", key)
        outcome = await prune_upload(db, s3_service, BUCKET, "media/", stale, cutoff)

        assert outcome is Outcome.KEPT
        assert await row_status(db, key) == "pending"
        assert object_exists(s3, "media/" + key)

    async def test_still_pending_row_pruned(self, db, s3, s3_service):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        put_object(s3, "media/" + key)
        cutoff = await db.fetchval("SELECT now() - interval '25 hours'")
        [stale] = await find_stale_uploads(db, cutoff)

        outcome = await prune_upload(db, s3_service, BUCKET, "media/", stale, cutoff)

        assert outcome is Outcome.PRUNED_WITH_OBJECT
        assert await row_status(db, key) is None
        assert not object_exists(s3, "media/" + key)

    async def test_s3_failure_keeps_row(self, db, gateway_env):
        key = new_key()
        await add_upload(db, key, 2 * DAY)
        cutoff = await db.fetchval("SELECT now() - interval '25 hours'")
        [stale] = await find_stale_uploads(db, cutoff)
        settings = load_settings({**gateway_env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})

        async with AsyncExitStack() as stack:
            broken = (await open_clients(settings, stack)).service
            with pytest.raises(BackendUnavailable, match="s3 unavailable"):
                await prune_upload(db, broken, BUCKET, "media/", stale, cutoff)

        assert await row_status(db, key) == "pending"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("24h", 86400), ("7d", 604800), ("3600", 3600), ("45s", 45), (" 2H ", 7200), ("007m", 420)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(("seconds", "text"), [(90000, "25h"), (5400, "90m"), (604800, "7d"), (61, "61s")])
def test_format_duration(seconds, text):
    assert format_duration(datetime.timedelta(seconds=seconds)) == text


def test_parse_duration_long_number_message():
    with pytest.raises(ValueError, match="at most 3650d"):
        parse_duration("9" * 5000)
