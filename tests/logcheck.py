"""A pytest plugin: every test's log records, before any redaction, must hold no credential."""

import logging
import re
from collections.abc import Iterator

import pytest

from gateway.logs import logfmt_value, record_fields

from .conftest import SECRET_KEY, SESSION_SECRET

# A Fernet session token, a SigV4 signature value, or one of the tests' secrets.
CREDENTIAL = re.compile(
    r"gAAAAA[A-Za-z0-9_=-]{20,}|X-Amz-Signature=[0-9a-f]{8,}|" + re.escape(SESSION_SECRET) + "|" + re.escape(SECRET_KEY)
)


def find_credentials(text: str) -> list[str]:
    return CREDENTIAL.findall(text)


def raw_record_text(record: logging.LogRecord) -> str:
    """Return a record's message, `key=value` fields and traceback as the code produced them, unredacted."""
    parts = [record.getMessage(), *(f"{name}={logfmt_value(value)}" for name, value in record_fields(record).items())]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    return " ".join(parts)


class _RawCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(raw_record_text(record))


@pytest.fixture(autouse=True)
def no_credentials_in_logs() -> Iterator[None]:
    capture = _RawCapture()
    root = logging.getLogger()
    gateway = logging.getLogger("gateway")
    previous_level = gateway.level

    root.addHandler(capture)
    gateway.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(capture)
        gateway.setLevel(previous_level)

    leaked = [line for line in capture.lines if find_credentials(line)]
    assert leaked == [], f"log records contain a credential: {leaked[:3]}"
