"""Benchmark the redirect path side by side with wrk, and write docs/benchmarks.md.

Starts an embedded PostgreSQL (or uses DATABASE_URL's server) and moto's S3
server, seeds users, objects and grants, and starts every server under test.
wrk then runs against each in turn, ROUNDS times, so that a change in machine
load hits all of them alike. Reported numbers are the median over rounds.

Run it with `make bench`. BENCH_DURATION (seconds per run, default 10) and
BENCH_ROUNDS (default 3) shorten or lengthen it.
"""

import asyncio
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import asyncpg
import boto3
from cryptography.fernet import Fernet

from gateway.admin import schema_sql
from gateway.sessions.cookie import issue_token
from tests.servers import MotoServer, Postgres, free_port

from . import django_site

ROOT = Path(__file__).resolve().parent.parent
LUA_SCRIPT = Path(__file__).with_name("requests.lua")
RESULTS_PAGE = ROOT / "docs" / "benchmarks.md"
LOG_DIR = Path(tempfile.gettempdir()) / "media-gateway-bench-logs"

CONNECTIONS = 64
WRK_THREADS = 1
DURATION = int(os.environ.get("BENCH_DURATION", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BUCKET = "media-gateway-bench"
ACCESS_KEY = "AKIDBENCHMARK"
SECRET_KEY = "bench-secret-key"
USERS = 500
OBJECTS_PER_USER = 4
HOT_PAIRS = 200
READY_TIMEOUT = 30.0

# Targets as ratios of the bare aiohttp redirect's requests/s, measured in the same run.
COLD_TARGET = 0.35
HOT_TARGET = 0.60
DJANGO_FACTOR_TARGET = 25
P99_TARGET_MS = 10.0
BOOT_TARGET_S = 1.0
RSS_TARGET_MB = 80.0


@dataclass
class Server:
    name: str
    process: subprocess.Popen
    url: str
    boot_seconds: float


@dataclass
class Scenario:
    name: str
    server: str
    requests_file: Path
    expected_status: int


@dataclass
class Measurement:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float = 0.0  # CPU time the server's processes spent per request.


def main() -> int:
    if shutil.which("wrk") is None:
        print("bench: error: wrk is not installed; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 1

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    postgres = Postgres()
    moto = MotoServer()
    servers: dict[str, Server] = {}
    try:
        secret = Fernet.generate_key().decode()
        asyncio.run(_seed(postgres.url))
        _create_bucket(moto.endpoint_url)
        env = _gateway_env(postgres.url, moto.endpoint_url, secret)

        servers["bare"] = _start("bare", [sys.executable, "-m", "bench.bare_redirect", "{port}"], os.environ)
        # Cold: no decision or session cache and no URL reuse, so every request decrypts, queries and signs.
        cold_env = {**env, "DECISION_CACHE_SIZE": "0", "MEDIA_URL_STABLE_WINDOW": "0"}
        servers["cold"] = _start("cold", _gateway_command(), cold_env)
        servers["hot"] = _start("hot", _gateway_command(), {**env, "DECISION_CACHE_SIZE": "100000"})
        # The same hot gateway without its per-request log line, to show what that line costs.
        quiet_env = {**env, "DECISION_CACHE_SIZE": "100000", "LOG_LEVEL": "WARNING"}
        servers["hot-quiet"] = _start("hot-quiet", _gateway_command(), quiet_env)
        # Two worker processes, as the Django design below runs two gunicorn workers.
        servers["cold-2"] = _start("cold-2", _gateway_command(), {**cold_env, "WEB_CONCURRENCY": "2"})
        servers["hot-2"] = _start(
            "hot-2", _gateway_command(), {**env, "DECISION_CACHE_SIZE": "100000", "WEB_CONCURRENCY": "2"}
        )
        scenarios = _scenarios(workdir, secret)

        django_note = None
        if django_site.available():
            django_site.prepare(postgres.url, USERS, OBJECTS_PER_USER)
            servers["django"] = _start("django", django_site.command(), django_site.environment(postgres.url, moto))
            scenarios.append(
                Scenario("Django + gunicorn (2 workers)", "django", django_site.requests_file(workdir, USERS), 302)
            )
        else:
            django_note = "Django or gunicorn is not installed (pip install -e '.[bench]'), so it was not measured."

        for scenario in scenarios:
            _check_status(servers[scenario.server].url, scenario)

        # One short run fills the hot gateway's decision cache and warms every server.
        for scenario in scenarios:
            _wrk(servers[scenario.server].url, scenario.requests_file, 2)

        results: dict[str, list[Measurement]] = {scenario.name: [] for scenario in scenarios}
        for round_number in range(1, ROUNDS + 1):
            for scenario in scenarios:
                server = servers[scenario.server]
                cpu_before = _cpu_seconds(server.process.pid)
                measurement = _wrk(server.url, scenario.requests_file, DURATION)
                cpu = _cpu_seconds(server.process.pid) - cpu_before
                measurement.cpu_us_per_request = cpu / (measurement.requests_per_second * DURATION) * 1e6
                results[scenario.name].append(measurement)
                print(
                    f"round {round_number}/{ROUNDS} {scenario.name}: {measurement.requests_per_second:,.0f} req/s, "
                    f"p50 {measurement.p50_ms:.2f} ms, p99 {measurement.p99_ms:.2f} ms, "
                    f"{measurement.cpu_us_per_request:.0f} us CPU per request",
                    flush=True,
                )

        memory = {name: _rss_mb(server.process.pid) for name, server in servers.items()}
        # For the servers with worker processes, the largest worker's size, since each serves on its own.
        for name in ("cold-2", "hot-2", "django"):
            if name in servers:
                memory[name] = django_site.worker_rss_mb(servers[name].process.pid)
        load_after = os.getloadavg()
        page = _report(scenarios, results, servers, memory, asyncio.run(_postgres_version(postgres.url)))
        page += _context(load_before, load_after, django_note)
        page += _component_costs()
        RESULTS_PAGE.parent.mkdir(exist_ok=True)
        RESULTS_PAGE.write_text(page, encoding="utf-8")
        print(page)
        print(f"written to {RESULTS_PAGE.relative_to(ROOT)}")
        return 0
    finally:
        for server in servers.values():
            _stop(server.process)
        moto.stop()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def _seed(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(schema_sql())
        await connection.execute("TRUNCATE media_objects, media_grants")
        objects = [
            (_object_key(user, number), _user_id(user)) for user in range(USERS) for number in range(OBJECTS_PER_USER)
        ]
        await connection.copy_records_to_table("media_objects", records=objects, columns=["key", "owner_id"])
        # Every object is also shared with the next user, so grants take part in the lookups.
        grants = [
            (_object_key(user, number), _user_id((user + 1) % USERS))
            for user in range(USERS)
            for number in range(OBJECTS_PER_USER)
        ]
        await connection.copy_records_to_table("media_grants", records=grants, columns=["key", "grantee_id"])
        await connection.execute("ANALYZE media_objects, media_grants")
    finally:
        await connection.close()


def _user_id(user: int) -> str:
    return f"user-{user}"


def _object_key(user: int, number: int) -> str:
    return f"{_user_id(user)}/photo {number}.jpg"


def _create_bucket(endpoint_url: str) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    client.create_bucket(Bucket=BUCKET)


def _gateway_env(database_url: str, endpoint_url: str, secret: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": endpoint_url,
        "S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SESSION_SECRET": secret,
        "WEB_CONCURRENCY": "1",
    }


def _gateway_command() -> list[str]:
    return [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", "{port}"]


def _scenarios(workdir: Path, secret: str) -> list[Scenario]:
    tokens = {user: issue_token(secret.encode(), _user_id(user)) for user in range(USERS)}

    def line(user: int, owner: int, number: int) -> str:
        path = "/media/" + urllib.request.quote(_object_key(owner, number))
        return f"{path}\tAuthorization: Bearer {tokens[user]}"

    # Owners and grantees over every object: 2 x USERS x OBJECTS_PER_USER distinct (user, key) pairs.
    cold = [line(user, user, number) for user in range(USERS) for number in range(OBJECTS_PER_USER)]
    cold += [line((user + 1) % USERS, user, number) for user in range(USERS) for number in range(OBJECTS_PER_USER)]
    hot = cold[:HOT_PAIRS]
    forbidden = [line(user, (user + 2) % USERS, number) for user in range(USERS) for number in range(OBJECTS_PER_USER)]

    return [
        Scenario("bare aiohttp + uvloop 302", "bare", _write(workdir / "bare.txt", ["/media/reference.png\t"]), 302),
        Scenario("gateway cold path (cache off)", "cold", _write(workdir / "cold.txt", cold), 302),
        Scenario("gateway hot path (cache on)", "hot", _write(workdir / "hot.txt", hot), 302),
        Scenario("gateway 403 path (cache off)", "cold", _write(workdir / "forbidden.txt", forbidden), 403),
        Scenario("gateway hot path, LOG_LEVEL=WARNING", "hot-quiet", workdir / "hot.txt", 302),
        Scenario("gateway cold path, 2 workers", "cold-2", workdir / "cold.txt", 302),
        Scenario("gateway hot path, 2 workers", "hot-2", workdir / "hot.txt", 302),
    ]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _start(name: str, command: list[str], env) -> Server:
    """Start a server with its output in LOG_DIR/NAME.log, and time it until it responds to HTTP."""
    port = free_port()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{name}.log", "wb") as log_file:
        started = time.perf_counter()
        process = subprocess.Popen(
            [part.format(port=port) for part in command], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    probe = url + ("/healthz" if name.startswith(("cold", "hot")) else "/")
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} server exited with code {process.returncode} during start")
        try:
            _NO_REDIRECT.open(probe, timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server not ready after {READY_TIMEOUT:.0f} s") from None
            time.sleep(0.005)
    return Server(name, process, url, time.perf_counter() - started)


def _check_status(url: str, scenario: Scenario) -> None:
    path, _, header = scenario.requests_file.read_text(encoding="utf-8").splitlines()[0].partition("\t")
    name, _, value = header.partition(": ")
    request = urllib.request.Request(url + path, headers={name: value} if name else {})
    try:
        status = _NO_REDIRECT.open(request, timeout=5).status
    except urllib.error.HTTPError as error:
        status = error.code
    if status != scenario.expected_status:
        raise RuntimeError(f"{scenario.name}: expected status {scenario.expected_status}, got {status}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the Location points at S3 hosts this benchmark must not contact."""

    def redirect_request(self, *args, **kwargs):
        return None


_NO_REDIRECT = urllib.request.build_opener(_NoRedirect)


def _wrk(url: str, requests_file: Path, duration: int) -> Measurement:
    output = subprocess.run(
        [
            "wrk",
            f"-t{WRK_THREADS}",
            f"-c{CONNECTIONS}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(LUA_SCRIPT),
            url,
            "--",
            str(requests_file),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return Measurement(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        p50_ms=_milliseconds(re.search(r"50%\s+([\d.]+\w+)", output).group(1)),
        p99_ms=_milliseconds(re.search(r"99%\s+([\d.]+\w+)", output).group(1)),
        errors=sum(int(count) for count in errors.groups()) if errors else 0,
    )


def _milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of `pid` and its direct children (gunicorn's workers)."""
    pids = [str(pid), *Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    ticks = 0
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


async def _postgres_version(url: str) -> str:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _report(scenarios, results, servers, memory, postgres_version: str) -> str:
    medians = {
        name: Measurement(
            requests_per_second=statistics.median(m.requests_per_second for m in runs),
            p50_ms=statistics.median(m.p50_ms for m in runs),
            p99_ms=statistics.median(m.p99_ms for m in runs),
            errors=sum(m.errors for m in runs),
            cpu_us_per_request=statistics.median(m.cpu_us_per_request for m in runs),
        )
        for name, runs in results.items()
    }
    reference = medians[scenarios[0].name].requests_per_second
    by_server = {scenario.server: medians[scenario.name] for scenario in reversed(scenarios)}

    lines = [
        "# Benchmarks",
        "",
        f"Produced by `make bench` (bench/run.py) on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"wrk, {WRK_THREADS} thread, {CONNECTIONS} connections, {DURATION} s per run, {ROUNDS} rounds interleaved, "
        "each column the median of the rounds. Every server runs on the same machine as wrk, PostgreSQL and moto.",
        "",
        "| scenario | requests/s | p50 ms | p99 ms | ratio to bare 302 | server CPU us/request | socket errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario in scenarios:
        m = medians[scenario.name]
        lines.append(
            f"| {scenario.name} | {m.requests_per_second:,.0f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
            f"| {m.requests_per_second / reference:.2f} | {m.cpu_us_per_request:.0f} | {m.errors} |"
        )

    lines += ["", "## Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    cold = by_server["cold"]
    hot = by_server["hot"]
    lines.append(_target_row("cold path >= 35% of bare", cold.requests_per_second / reference, COLD_TARGET, "{:.0%}"))
    lines.append(_target_row("hot path >= 60% of bare", hot.requests_per_second / reference, HOT_TARGET, "{:.0%}"))
    worst_p99 = max(cold.p99_ms, hot.p99_ms)
    p99_met = _yes(worst_p99 < P99_TARGET_MS)
    lines.append(f"| p99 < {P99_TARGET_MS:.0f} ms on both paths | {worst_p99:.2f} ms | {p99_met} |")
    if "django" in by_server:
        django = by_server["django"].requests_per_second
        for label, server in (("cold path, 1 process", "cold"), ("cold path, 2 workers", "cold-2")):
            factor = by_server[server].requests_per_second / django
            lines.append(f"| {label} >= 25x Django | {factor:.1f}x | {_yes(factor >= DJANGO_FACTOR_TARGET)} |")
    else:
        lines.append("| cold path >= 25x Django | not measured | - |")
    boot = max(servers["cold"].boot_seconds, servers["hot"].boot_seconds)
    lines.append(f"| boot to ready < 1 s | {boot:.2f} s | {_yes(boot < BOOT_TARGET_S)} |")
    rss = max(memory["cold"], memory["hot"])
    lines.append(f"| < 80 MB resident per process | {rss:.0f} MB | {_yes(rss < RSS_TARGET_MB)} |")

    lines += ["", "## Processes", "", "| server | boot to ready s | resident MB (after load) |"]
    lines.append("| --- | ---: | ---: |")
    for name, server in servers.items():
        lines.append(f"| {name} | {server.boot_seconds:.2f} | {memory[name]:.0f} |")

    lines += [
        "",
        "## Machine and versions",
        "",
        f"- CPU: {_cpu_model()}, nproc {os.cpu_count()}; {platform.platform()}",
        f"- Python {platform.python_version()}; " + ", ".join(f"{name} {_version(name)}" for name in _PACKAGES),
        f"- PostgreSQL {postgres_version}; {_wrk_version()}",
    ]
    return "\n".join(lines) + "\n"


_PACKAGES = ("aiohttp", "uvloop", "asyncpg", "aiobotocore", "botocore", "cryptography", "moto", "django", "gunicorn")


def _context(load_before, load_after, django_note: str | None) -> str:
    lines = [
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after: {', '.join(f'{x:.2f}' for x in load_after)}",
    ]
    if django_note:
        lines.append(f"- {django_note}")
    return "\n".join(lines) + "\n"


def _component_costs() -> str:
    table = subprocess.run(
        [sys.executable, "-m", "bench.components"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return (
        "\n## Per-step costs\n\n"
        "In-process timings of single steps (bench/components.py, best of 3 x 2000 calls, after the load):\n\n" + table
    )


def _target_row(label: str, value: float, target: float, form: str) -> str:
    return f"| {label} | {form.format(value)} | {_yes(value >= target)} |"


def _yes(met: bool) -> str:
    return "yes" if met else "no"


def _cpu_model() -> str:
    match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _wrk_version() -> str:
    result = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (result.stdout or result.stderr).splitlines()[0].split(" Copyright")[0]


if __name__ == "__main__":
    sys.exit(main())
