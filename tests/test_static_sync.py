import hashlib
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gateway.static_sync import cache_control, guess_content_type

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"


@pytest.fixture
def sync_env(moto) -> dict[str, str]:
    """Only the S3 settings: sync-static needs no database and no session secret."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "S3_", "DATABASE_"))}
    env.update(
        {
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": moto.endpoint_url,
            "S3_ADDRESSING_STYLE": "path",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )
    env.pop("SESSION_SECRET", None)
    return env


@pytest.fixture
def prefix() -> str:
    """A fresh key folder per test, because the moto bucket lives for the whole session."""
    return f"static-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "staticfiles"
    files = {
        "css/app.css": b"body { color: red }\n",
        "css/app.3f2a9c1b0e1d.css": b"body { color: red }\n",
        "js/app.js": b"console.log('hi');\n",
        "img/logo.png": PNG_BYTES,
        "robots.txt": b"User-agent: *\n",
    }
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def run_sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "sync-static", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def keys_under(s3, prefix: str) -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def test_first_run_uploads_all(sync_env, s3, static_dir, prefix):
    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert result.returncode == 0, result.stderr
    assert "uploaded 5 files" in result.stdout
    assert keys_under(s3, prefix) == [
        prefix + "css/app.3f2a9c1b0e1d.css",
        prefix + "css/app.css",
        prefix + "img/logo.png",
        prefix + "js/app.js",
        prefix + "robots.txt",
    ]


def test_second_run_uploads_none(sync_env, static_dir, prefix):
    run_sync(sync_env, str(static_dir), "--prefix", prefix)

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert result.returncode == 0, result.stderr
    assert "uploaded 0 files" in result.stdout
    assert "5 unchanged" in result.stdout


def test_changed_file_uploaded_again(sync_env, s3, static_dir, prefix):
    run_sync(sync_env, str(static_dir), "--prefix", prefix)
    # Same length as before, so only the content hash can tell the change.
    (static_dir / "css/app.css").write_bytes(b"body { color: tan }\n")

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert "uploaded 1 file" in result.stdout
    assert "4 unchanged" in result.stdout
    stored = s3.get_object(Bucket=BUCKET, Key=prefix + "css/app.css")
    assert stored["Body"].read() == b"body { color: tan }\n"


def test_new_file_uploaded(sync_env, s3, static_dir, prefix):
    run_sync(sync_env, str(static_dir), "--prefix", prefix)
    (static_dir / "js/extra.js").write_bytes(b"let x = 1;\n")

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert "uploaded 1 file" in result.stdout
    assert prefix + "js/extra.js" in keys_under(s3, prefix)


def test_uploaded_headers(sync_env, s3, static_dir, prefix):
    run_sync(sync_env, str(static_dir), "--prefix", prefix)

    hashed = s3.head_object(Bucket=BUCKET, Key=prefix + "css/app.3f2a9c1b0e1d.css")
    plain = s3.head_object(Bucket=BUCKET, Key=prefix + "css/app.css")
    image = s3.head_object(Bucket=BUCKET, Key=prefix + "img/logo.png")

    assert hashed["CacheControl"] == IMMUTABLE
    assert hashed["ContentType"] == "text/css; charset=utf-8"
    assert plain["CacheControl"] == SHORT
    assert image["ContentType"] == "image/png"
    assert image["CacheControl"] == SHORT
    assert image["Metadata"]["sha256"] == hashlib.sha256(PNG_BYTES).hexdigest()


def test_etag_fallback_for_foreign_objects(sync_env, s3, static_dir, prefix):
    """Objects another tool uploaded have no sha256 metadata; a matching single-part ETag counts as unchanged."""
    same = (static_dir / "robots.txt").read_bytes()
    s3.put_object(
        Bucket=BUCKET, Key=prefix + "robots.txt", Body=same, ContentType="text/plain; charset=utf-8", CacheControl=SHORT
    )
    s3.put_object(
        Bucket=BUCKET,
        Key=prefix + "js/app.js",
        Body=b"console.log('yo');\n",
        ContentType="application/javascript; charset=utf-8",
        CacheControl=SHORT,
    )

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert "uploaded 4 files" in result.stdout
    assert "1 unchanged" in result.stdout
    assert "sha256" not in s3.head_object(Bucket=BUCKET, Key=prefix + "robots.txt")["Metadata"]


def test_changed_headers_uploaded_again(sync_env, s3, static_dir, prefix):
    run_sync(sync_env, str(static_dir), "--prefix", prefix)
    s3.copy_object(
        Bucket=BUCKET,
        Key=prefix + "robots.txt",
        CopySource={"Bucket": BUCKET, "Key": prefix + "robots.txt"},
        MetadataDirective="REPLACE",
        ContentType="application/octet-stream",
        Metadata={"sha256": hashlib.sha256(b"User-agent: *\n").hexdigest()},
    )

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert "uploaded 1 file" in result.stdout
    assert s3.head_object(Bucket=BUCKET, Key=prefix + "robots.txt")["ContentType"] == "text/plain; charset=utf-8"


def test_dry_run_changes_nothing(sync_env, s3, static_dir, prefix):
    s3.put_object(Bucket=BUCKET, Key=prefix + "old.css", Body=b"stale")

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix, "--dry-run", "--delete")

    assert result.returncode == 0, result.stderr
    assert f"would upload {prefix}css/app.3f2a9c1b0e1d.css (text/css; charset=utf-8; {IMMUTABLE})" in result.stdout
    assert f"would delete {prefix}old.css" in result.stdout
    assert "dry run: 5 to upload, 0 unchanged, 1 to delete; nothing changed" in result.stdout
    assert keys_under(s3, prefix) == [prefix + "old.css"]


def test_stale_kept_without_delete(sync_env, s3, static_dir, prefix):
    s3.put_object(Bucket=BUCKET, Key=prefix + "old.css", Body=b"stale")

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert prefix + "old.css" in keys_under(s3, prefix)
    assert "deleted 0" in result.stdout
    assert f"kept 1 object under {prefix} with no local file; pass --delete to remove them" in result.stdout


def test_delete_removes_only_stale_under_prefix(sync_env, s3, static_dir, prefix):
    folder = prefix.rstrip("/")
    outside = [f"{folder}-sibling/old.css", f"{folder}old.css", "media/keep-me.png"]
    for key in [prefix + "old.css", prefix + "css/gone.css", *outside]:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"stale")

    result = run_sync(sync_env, str(static_dir), "--prefix", prefix, "--delete")

    assert result.returncode == 0, result.stderr
    assert f"deleted {prefix}old.css" in result.stdout
    assert f"deleted {prefix}css/gone.css" in result.stdout
    assert "deleted 2" in result.stdout
    assert len(keys_under(s3, prefix)) == 5
    assert prefix + "old.css" not in keys_under(s3, prefix)
    for key in outside:
        assert keys_under(s3, key) == [key], key


def test_delete_with_empty_dir_rejected(sync_env, s3, tmp_path, prefix):
    s3.put_object(Bucket=BUCKET, Key=prefix + "keep.css", Body=b"x")

    result = run_sync(sync_env, str(tmp_path), "--prefix", prefix, "--delete")

    assert result.returncode == 1
    assert "has no files, so --delete would remove every object" in result.stderr
    assert keys_under(s3, prefix) == [prefix + "keep.css"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{missing}"], "does not exist"),
        (["{file}"], "is not a directory"),
        (["{dir}", "--prefix", "static"], "must end with /"),
        (["{dir}", "--prefix", "/static/"], "is invalid"),
        (["{dir}", "--prefix", "a//b/"], "is invalid"),
        (["{dir}", "--prefix", "../static/"], "is invalid"),
        (["{dir}", "--prefix", "/"], "is invalid"),
        (["{dir}", "--prefix", "media/static/"], "overlaps MEDIA_PREFIX"),
        (["{dir}", "--jobs", "0"], "invalid job count"),
    ],
)
def test_bad_arguments_one_line_error(sync_env, static_dir, tmp_path, args, message):
    paths = {"missing": tmp_path / "nope", "file": static_dir / "robots.txt", "dir": static_dir}
    argv = [arg.format(**paths) for arg in args]

    result = run_sync(sync_env, *argv)

    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_bucket_setting(sync_env, static_dir):
    env = {name: value for name, value in sync_env.items() if name != "S3_BUCKET"}

    result = run_sync(env, str(static_dir))

    assert result.returncode == 1
    assert result.stderr.startswith("media-gateway: error: S3_BUCKET: missing")
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_bucket_one_line_error(sync_env, static_dir):
    result = run_sync({**sync_env, "S3_BUCKET": "no-such-bucket-here"}, str(static_dir))

    assert result.returncode == 1
    assert "cannot read bucket 'no-such-bucket-here'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_progress_bar_on_terminal(sync_env, static_dir, prefix):
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(
            [sys.executable, "-m", "gateway", "sync-static", str(static_dir), "--prefix", prefix],
            env=sync_env,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
        )
        os.close(terminal)
        terminal = -1
        shown = _read_all(controller)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)

    assert process.returncode == 0
    assert "\r[" in shown
    assert "5/5 files 100%" in shown


def test_no_progress_bar_when_piped(sync_env, static_dir, prefix):
    result = run_sync(sync_env, str(static_dir), "--prefix", prefix)

    assert result.stderr == ""


def _read_all(descriptor: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(descriptor, 4096)
        except OSError:  # Linux raises EIO once the other side of the pseudo-terminal is closed.
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("static/app.3f2a9c1b0e1d.css", IMMUTABLE),
        ("static/admin/js/core.0123456789ab.js", IMMUTABLE),
        ("static/app.css.3f2a9c1b0e1d.map", IMMUTABLE),
        ("static/app.css", SHORT),
        ("static/app.3F2A9C1B0E1D.css", SHORT),
        ("static/app.3f2a9c1b0e.css", SHORT),
        ("static/3f2a9c1b0e1d.css/readme", SHORT),
        ("static/staticfiles.json", SHORT),
    ],
)
def test_cache_control_by_name(key, expected):
    assert cache_control(key) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("static/app.css", "text/css; charset=utf-8"),
        ("static/app.js", "application/javascript; charset=utf-8"),
        ("static/logo.svg", "image/svg+xml; charset=utf-8"),
        ("static/font.woff2", "font/woff2"),
        ("static/photo.webp", "image/webp"),
        ("static/app.css.gz", "application/gzip"),
        ("static/LICENSE", "application/octet-stream"),
    ],
)
def test_content_type_guess(key, expected):
    assert guess_content_type(key) == expected
