import json
import logging
import os
import stat
import sys
import textwrap

import pytest

from gateway.errors import ConfigError
from gateway.logs import JsonFormatter, LogfmtFormatter, RateLimitedLog, RequestIdFilter
from gateway.settings import load_settings

from .conftest import ACCESS_KEY, SECRET_KEY
from .helpers import bearer, metric_value, scrape
from .logcheck import find_credentials
from .servers import free_port

METRICS_TOKEN = "metrics-token-0123456789abcdef"


def _request_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "gateway.request" and record.msg == "request"]


async def test_metrics_count_requests_by_route_and_status(gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")

    await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    await gateway.get("/media/a.jpg", allow_redirects=False)
    exposition = await scrape(gateway)

    assert metric_value(exposition, "gateway_requests_total", route="/media/{tail}", status="302") == 2
    assert metric_value(exposition, "gateway_requests_total", route="/media/{tail}", status="401") == 1
    assert metric_value(exposition, "gateway_request_duration_seconds_count", route="/media/{tail}") == 3


async def test_metrics_label_unknown_methods_other(gateway):
    await gateway.request("PURGE", "/media/a.jpg")
    await gateway.request("PROPFIND", "/media/a.jpg")
    await gateway.request("PURGE", "/media/a.jpg")
    exposition = await scrape(gateway)

    assert metric_value(exposition, "gateway_requests_total", route="/media/{tail}", method="other") == 3
    assert metric_value(exposition, "gateway_requests_total", route="/media/{tail}", method="PURGE") is None


async def test_metrics_count_each_decision(gateway, db, token):
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")

    await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    await gateway.get("/media/a.jpg", headers=bearer(token("bob")), allow_redirects=False)
    await gateway.get("/media/a.jpg", allow_redirects=False)
    await gateway.get("/media/a%00.jpg", allow_redirects=False)
    exposition = await scrape(gateway)

    for decision in ("allowed", "denied", "anonymous", "malformed"):
        assert metric_value(exposition, "gateway_media_decisions_total", decision=decision) == 1, decision


async def test_metrics_show_pool_gauges(gateway, db, token):
    await gateway.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    exposition = await scrape(gateway)

    assert metric_value(exposition, "gateway_db_pool_connections") >= 1
    assert metric_value(exposition, "gateway_db_pool_in_use") == 0
    assert metric_value(exposition, "gateway_db_pool_waiting") == 0
    assert metric_value(exposition, "gateway_db_pool_max") == 10


async def test_metrics_unmatched_route_is_one_label(gateway):
    await gateway.get("/nope/1")
    await gateway.get("/nope/2")
    exposition = await scrape(gateway)

    assert metric_value(exposition, "gateway_requests_total", route="unmatched", status="404") == 2


async def test_metrics_token_required_when_set(start_gateway, db):
    client = await start_gateway(METRICS_TOKEN=METRICS_TOKEN)

    anonymous = await client.get("/metrics")
    wrong = await client.get("/metrics", headers=bearer("x" * 30))
    right = await client.get("/metrics", headers=bearer(METRICS_TOKEN))

    assert anonymous.status == 401
    assert (await anonymous.json())["error"] == "unauthenticated"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status == 401
    assert right.status == 200
    assert right.headers["Content-Type"].startswith("text/plain; version=")


async def test_metrics_openmetrics_on_request(gateway):
    response = await gateway.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    body = await response.text()

    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REQUEST_TIMEOUT", "0"),
        ("REQUEST_TIMEOUT", "30"),
        ("REQUEST_TIMEOUT", "ten"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_TOKEN", "short"),
        ("METRICS_TOKEN", "has a space in it somewhere"),
    ],
)
def test_settings_reject_invalid_value(variable, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})

    assert raised.value.variable == variable


def test_settings_reject_unknown_sslmode():
    url = "postgres://user:hunter2@db.example:5432/app?sslmode=requir"

    with pytest.raises(ConfigError) as raised:
        load_settings({"DATABASE_URL": url})

    assert raised.value.variable == "DATABASE_URL"
    assert "requir" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_settings_metrics_token_not_in_error():
    with pytest.raises(ConfigError) as raised:
        load_settings({"METRICS_TOKEN": "secret zzz"})

    assert "secret zzz" not in str(raised.value)


def test_settings_repr_hides_metrics_token():
    settings = load_settings({"METRICS_TOKEN": "metrics-token-0123456789abcdef"})

    assert "metrics-token-0123456789abcdef" not in repr(settings)


def test_settings_accept_heroku_url_and_defaults():
    settings = load_settings({"DATABASE_URL": "postgres://u:p@host:5432/d?sslmode=require"})

    assert settings.database_url.startswith("postgres://")
    assert settings.request_timeout == 10
    assert settings.log_format == "logfmt"
    assert settings.metrics_token is None


async def test_request_id_echoed_and_logged(gateway, caplog):
    caplog.set_level(logging.INFO, logger="gateway")

    response = await gateway.get("/healthz", headers={"X-Request-ID": "req-abc.123"})

    assert response.headers["X-Request-ID"] == "req-abc.123"
    assert [record.request_id for record in _request_records(caplog)] == ["req-abc.123"]


@pytest.mark.parametrize("sent", [None, "", "bad id with spaces", "x" * 200, "inj\u00e9cted"])
async def test_request_id_generated_when_absent_or_invalid(gateway, caplog, sent):
    caplog.set_level(logging.INFO, logger="gateway")
    headers = {} if sent is None else {"X-Request-ID": sent}

    response = await gateway.get("/healthz", headers=headers)
    generated = response.headers["X-Request-ID"]

    assert len(generated) == 32
    assert generated != sent
    assert [record.request_id for record in _request_records(caplog)] == [generated]


async def test_nested_log_lines_get_request_id(gateway):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    handler.addFilter(RequestIdFilter())
    logging.getLogger().addHandler(handler)
    try:
        await gateway.get("/media/a.jpg", headers={"Authorization": "Bearer junk", "X-Request-ID": "rid-7"})
    finally:
        logging.getLogger().removeHandler(handler)
    rejected = [record for record in records if record.getMessage().startswith("session token rejected")]

    assert len(rejected) == 1
    assert rejected[0].request_id == "rid-7"


async def test_request_line_fields(gateway, db, token, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")

    await gateway.get("/media/a.jpg?download=x", headers=bearer(token("alice")), allow_redirects=False)
    [record] = _request_records(caplog)

    assert record.method == "GET"
    assert record.path == "/media/a.jpg"
    assert record.status == 302
    assert record.user == "alice"
    assert record.decision == "allowed"
    assert record.duration_ms >= 0


async def test_forwarded_for_used_from_trusted_proxy(gateway, caplog):
    caplog.set_level(logging.INFO, logger="gateway")

    await gateway.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.1"})
    [record] = _request_records(caplog)

    assert record.remote == "203.0.113.9"


async def test_forwarded_for_ignored_from_untrusted_peer(start_gateway, db, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    client = await start_gateway(FORWARDED_ALLOW_IPS="10.0.0.0/8")

    await client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    [record] = _request_records(caplog)

    assert record.remote == "127.0.0.1"


async def test_forwarded_for_spoofed_left_entries_skipped(start_gateway, db, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    client = await start_gateway(FORWARDED_ALLOW_IPS="127.0.0.1,10.0.0.0/8")

    # The client forged the first entry; the trusted proxy 10.1.1.1 appended the address it saw.
    await client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.1.1.1"})
    [record] = _request_records(caplog)

    assert record.remote == "203.0.113.9"


async def test_forwarded_garbage_keeps_peer(gateway, caplog):
    caplog.set_level(logging.INFO, logger="gateway")

    await gateway.get("/healthz", headers={"X-Forwarded-For": "not-an-ip, <script>"})
    [record] = _request_records(caplog)

    assert record.remote == "127.0.0.1"


def _record(message: str = "request", **fields) -> logging.LogRecord:
    record = logging.LogRecord("gateway.request", logging.INFO, __file__, 1, message, None, None)
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def test_logfmt_one_line_with_fields():
    line = LogfmtFormatter().format(_record(method="GET", path="/media/a b", status=302, user=None))

    assert "\n" not in line
    assert " level=info pid=" in line
    assert " logger=gateway.request msg=request method=GET " in line
    assert 'path="/media/a b"' in line
    assert "status=302" in line
    assert "user=-" in line


def test_logfmt_escapes_quotes_and_newlines():
    line = LogfmtFormatter().format(_record('say "hi"\nnext=line'))

    assert "\n" not in line
    assert 'msg="say \\"hi\\"\\nnext=line"' in line


def test_logfmt_traceback_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()

    line = LogfmtFormatter().format(record)

    assert "\n" not in line
    assert "ValueError: boom" in line


def test_json_format_parses_with_fields():
    line = JsonFormatter().format(_record(method="GET", status=302, user=None, request_id="r1"))
    document = json.loads(line)

    assert document["msg"] == "request"
    assert document["status"] == 302
    assert document["user"] is None
    assert document["request_id"] == "r1"
    assert document["level"] == "info"


def test_formatters_redact_signature():
    url = "https://s3/x?X-Amz-Signature=0123456789abcdef0123"

    logfmt = LogfmtFormatter().format(_record(url))
    json_line = JsonFormatter().format(_record("m", location=url))

    assert "0123456789abcdef0123" not in logfmt
    assert "0123456789abcdef0123" not in json_line


def test_rate_limited_log_counts_suppressed(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.test")
    logger = logging.getLogger("gateway.test")
    now = [100.0]
    limiter = RateLimitedLog(interval=10, clock=lambda: now[0])

    emitted = [limiter.log(logger, logging.WARNING, "db", "down") for _ in range(5)]
    now[0] += 10
    emitted.append(limiter.log(logger, logging.WARNING, "db", "down"))

    assert emitted == [True, False, False, False, False, True]
    assert [getattr(record, "suppressed", 0) for record in caplog.records] == [0, 4]


def test_rate_limited_log_keys_independent(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.test")
    logger = logging.getLogger("gateway.test")
    limiter = RateLimitedLog(interval=10, clock=lambda: 0.0)

    limiter.log(logger, logging.WARNING, "postgres", "down")
    limiter.log(logger, logging.WARNING, "s3", "down")

    assert len(caplog.records) == 2


def _failing_credential_process(directory) -> str:
    """Write a credential_process that succeeds once (at start-up) and fails on every refresh after."""
    script = directory / "credentials.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import datetime, json, pathlib, sys
            calls = pathlib.Path({str(directory / "calls")!r})
            count = int(calls.read_text()) if calls.exists() else 0
            calls.write_text(str(count + 1))
            if count >= 1:
                sys.exit("the identity provider is down")
            expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
            print(json.dumps({{
                "Version": 1, "AccessKeyId": {ACCESS_KEY!r}, "SecretAccessKey": {SECRET_KEY!r},
                "SessionToken": "session-token", "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }}))
            """
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    config = directory / "config"
    config.write_text(f"[profile failing]\ncredential_process = {sys.executable} {script}\n")
    return str(config)


async def test_failing_signer_answers_503_and_logs(start_gateway, db, token, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_CONFIG_FILE", _failing_credential_process(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_PROFILE", "failing")
    client = await start_gateway()
    await db.execute("INSERT INTO media_objects (key, owner_id) VALUES ('a.jpg', 'alice')")

    response = await client.get("/media/a.jpg", headers=bearer(token("alice")), allow_redirects=False)
    body = await response.json()
    errors = [record for record in caplog.records if record.name == "gateway.errors"]
    exposition = await scrape(client)

    assert response.status == 503
    assert body["error"] == "unavailable"
    assert response.headers["Cache-Control"].startswith("private")
    assert [record.kind for record in errors] == ["s3_signing"]
    assert errors[0].request_id == response.headers["X-Request-ID"]
    assert metric_value(exposition, "gateway_errors_total", kind="s3_signing") == 1


def test_credential_check_finds_leaks(token):
    leaked_token = token("alice")
    signed = "https://s3/x?X-Amz-Signature=" + "ab12" * 16

    assert find_credentials(f"cookie={leaked_token}") == [leaked_token]
    assert find_credentials(signed) != []
    assert find_credentials(f"key={SECRET_KEY}") == [SECRET_KEY]
    assert find_credentials("X-Amz-Signature=[redacted] gAAAAA") == []


async def test_s3_retry_logged(start_gateway, db, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    client = await start_gateway(S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    response = await client.get("/readyz")
    body = await response.json()
    retries = [record for record in caplog.records if record.getMessage() == "retrying an S3 request"]

    assert response.status == 503
    assert body["checks"]["s3"]["status"] == "fail"
    assert [record.attempt for record in retries] == [2]
    assert retries[0].operation == "HeadBucket"
