"""The classic Django design as a comparison point: run by bench/run.py when Django and gunicorn are installed."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "bench-only-django-secret-key-not-for-production"
WORKERS = 2


def available() -> bool:
    return all(importlib.util.find_spec(name) for name in ("django", "gunicorn", "psycopg"))


def environment(database_url: str, moto) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.djangoapp.settings",
        "DJANGO_SECRET_KEY": SECRET_KEY,
        "DATABASE_URL": database_url,
        "S3_ENDPOINT_URL": moto.endpoint_url,
        "S3_BUCKET": "media-gateway-bench",
        "AWS_ACCESS_KEY_ID": "AKIDBENCHMARK",
        "AWS_SECRET_ACCESS_KEY": "bench-secret-key",
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def prepare(database_url: str, users: int, objects_per_user: int) -> None:
    """Create Django's tables, one user and one session per gateway user, in the benchmark database."""
    env = environment(database_url, _NoMoto())
    subprocess.run([sys.executable, "-m", "django", "migrate", "--verbosity", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run(
        [sys.executable, "-m", "bench.django_seed", str(users), str(objects_per_user), str(_sessions_file())],
        cwd=ROOT,
        env=env,
        check=True,
    )


def requests_file(workdir: Path, users: int) -> Path:
    lines = _sessions_file().read_text(encoding="utf-8")
    path = workdir / "django.txt"
    path.write_text(lines, encoding="utf-8")
    return path


def command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--bind",
        "127.0.0.1:{port}",
        "--log-level",
        "warning",
        "bench.djangoapp.wsgi",
    ]


def worker_rss_mb(master_pid: int) -> float:
    """Return the largest resident size among gunicorn's workers."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    sizes = []
    for pid in children:
        status = Path(f"/proc/{pid}/status").read_text()
        sizes.append(int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024)
    return max(sizes)


def _sessions_file() -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / "media-gateway-bench-django.txt"


class _NoMoto:
    endpoint_url = "http://127.0.0.1:1"
