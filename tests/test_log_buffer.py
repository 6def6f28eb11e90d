"""The buffered log handler: one write per loop turn, nothing lost or doubled, and the request line's fast path."""

import asyncio
import io
import json
import logging
import os
import sys
import threading

import pytest

from gateway.logs import (
    BufferedLineHandler,
    JsonFormatter,
    LogfmtFormatter,
    RequestIdFilter,
    configure_logging,
    direct_handler,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def handler():
    stream = CountingStream()
    handler = BufferedLineHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test.buffer")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield handler, stream, logger
    logger.removeHandler(handler)
    logger.propagate = True


@pytest.fixture
def root_logging(monkeypatch):
    """Run configure_logging() on a captured stdout, and put the root logger back afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


async def test_lines_of_one_turn_written_once(handler):
    handler, stream, logger = handler

    for number in range(5):
        logger.info("line %d", number)
    assert stream.getvalue() == ""

    await asyncio.sleep(0)
    assert stream.getvalue() == "".join(f"line {number}\n" for number in range(5))
    assert stream.writes == 1


async def test_each_turn_flushed(handler):
    handler, stream, logger = handler

    logger.info("first")
    await asyncio.sleep(0)
    logger.info("second")
    await asyncio.sleep(0)

    assert stream.getvalue() == "first\nsecond\n"
    assert stream.writes == 2


def test_without_loop_written_at_once(handler):
    handler, stream, logger = handler

    logger.info("no loop here")

    assert stream.getvalue() == "no loop here\n"


def test_pending_lines_of_stopped_loop_not_lost(handler):
    handler, stream, logger = handler

    def log_and_stop(loop: asyncio.AbstractEventLoop) -> None:
        logger.info("last line of the loop")
        loop.stop()

    loop = asyncio.new_event_loop()
    loop.call_soon(log_and_stop, loop)
    loop.run_forever()
    loop.close()
    # The loop stopped before the turn that would have written the line.
    assert stream.getvalue() == ""

    async def log_in_new_loop() -> None:
        logger.info("first line of the next loop")

    asyncio.run(log_in_new_loop())
    assert stream.getvalue() == "last line of the loop\nfirst line of the next loop\n"

    logger.info("after")
    assert stream.getvalue().endswith("first line of the next loop\nafter\n")


async def test_broken_stream_drops_lines_quietly(handler):
    handler, stream, logger = handler
    logger.info("lost")
    stream.close()

    await asyncio.sleep(0)

    logger.info("also lost")
    await asyncio.sleep(0)


def test_direct_handler_after_configure(root_logging):
    configure_logging("INFO")

    handler = direct_handler(logging.getLogger("gateway.request"))

    assert type(handler) is BufferedLineHandler
    assert handler is logging.getLogger().handlers[0]


def test_direct_handler_none_with_other_handler(root_logging):
    configure_logging("INFO")
    extra = logging.Handler()
    logging.getLogger().addHandler(extra)

    assert direct_handler(logging.getLogger("gateway.request")) is None


def test_direct_handler_none_with_logger_filter(root_logging):
    configure_logging("INFO")
    logger = logging.getLogger("gateway")
    hide = logging.Filter("nothing")
    logger.addFilter(hide)
    try:
        assert direct_handler(logging.getLogger("gateway.request")) is None
    finally:
        logger.removeFilter(hide)


def test_direct_handler_none_with_quiet_handler(root_logging):
    configure_logging("INFO")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)

    assert direct_handler(logging.getLogger("gateway.request")) is None


def test_direct_handler_none_with_other_formatter(root_logging):
    configure_logging("INFO")
    logging.getLogger().handlers[0].setFormatter(logging.Formatter("%(message)s"))

    assert direct_handler(logging.getLogger("gateway.request")) is None


@pytest.mark.parametrize("formatter_class", [LogfmtFormatter, JsonFormatter])
def test_direct_line_matches_record_line(formatter_class):
    fields = {"method": "GET", "path": "/media/a b.jpg", "status": 302, "user": None, "duration_ms": 1.25}
    record = logging.LogRecord("gateway.request", logging.INFO, __file__, 1, "request", None, None)
    record.__dict__.update(fields)
    formatter = formatter_class()

    direct = formatter.format_line(record.created, "INFO", "gateway.request", "request", fields)

    assert direct == formatter.format(record)


def test_record_line_escapes_and_redacts():
    record = logging.LogRecord("gateway", logging.WARNING, __file__, 1, "saw %s", ("X-Amz-Signature=abcdef",), None)
    record.detail = 'two words "quoted"'

    line = LogfmtFormatter().format(record)

    assert "abcdef" not in line
    assert 'detail="two words \\"quoted\\""' in line
    assert f" pid={os.getpid()} " in line


def test_json_line_is_one_object():
    fields = {"status": 403, "user": "7", "decision": "denied"}

    line = JsonFormatter.format_line(0.0, "INFO", "gateway.request", "request", fields)

    document = json.loads(line)
    assert document["time"] == "1970-01-01T00:00:00.000Z"
    assert document["level"] == "info"
    assert document["status"] == 403
    assert document["decision"] == "denied"


def test_fork_does_not_write_lines_twice(root_logging, tmp_path):
    configure_logging("INFO")
    output = tmp_path / "out.log"
    with open(output, "w", encoding="utf-8") as sink:
        logging.getLogger().handlers[0].setStream(sink)

        async def log_then_fork() -> int:
            logging.getLogger("gateway").info("before fork")
            pid = os.fork()
            if pid == 0:
                # The child leaves without flushing, as a multiprocessing worker does.
                os._exit(0)
            return pid

        pid = asyncio.run(log_then_fork())
        os.waitpid(pid, 0)
        logging.getLogger().handlers[0].flush()

    assert output.read_text(encoding="utf-8").count("msg=\"before fork\"") == 1


def test_request_id_filter_kept(root_logging):
    configure_logging("INFO")

    filters = logging.getLogger().handlers[0].filters

    assert [type(one) for one in filters] == [RequestIdFilter]


async def test_lines_from_another_thread_kept(handler):
    handler, stream, logger = handler

    def log_from_thread() -> None:
        for number in range(2000):
            logger.info("thread %d", number)

    thread = threading.Thread(target=log_from_thread)
    thread.start()
    for number in range(2000):
        logger.info("loop %d", number)
        if number % 50 == 0:
            await asyncio.sleep(0)
    thread.join()
    handler.flush()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 4000
    assert sum(line.startswith("thread ") for line in lines) == 2000
