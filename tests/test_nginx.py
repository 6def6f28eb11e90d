"""The gateway behind a real nginx configured from deploy/nginx.conf, in each media mode."""

import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.app import create_app
from gateway.logs import LogfmtFormatter
from gateway.settings import load_settings

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY
from .nginx import DEPLOY_CONF, MODES, Nginx, NginxError, find_nginx, render_site
from .s3_front import checking_s3_front
from .servers import free_port

ACCEL_LOCATION = "@media_s3"
OWNER = "owner-1"
OTHER = "other-2"
KEY = "clips/intro.mp4"
CONTENT_TYPE = "video/mp4"
DATA = bytes((index * 7 + index // 256) % 256 for index in range(5000))
UNTRUSTED_ADDRESS = "127.0.0.2"
DOCUMENTATION_ADDRESS = "203.0.113.7"  # TEST-NET-3: never a real client.
S3_CACHE_CONTROL = "public, max-age=31536000"
PRIVATE_MAX_AGE = re.compile(r"private, max-age=\d+")


@dataclass
class Stack:
    nginx_url: str
    gateway_url: str
    s3_url: str
    nginx: Nginx


@pytest.fixture
def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        pytest.fail("nginx is not installed; run apt-get install -y --no-install-recommends nginx-light (.ci/run does)")
    return binary


@pytest.fixture
async def start_stack(gateway_env, db, s3, moto, tmp_path: Path, nginx_binary: str):
    """Start the gateway, a stand-in app and nginx in front of both; returns a starter taking the mode.

    URLs are signed for a front that checks signatures before it forwards to moto,
    so a URL changed on its way through nginx fails as it would on real S3.
    """
    runners: list[web.AppRunner] = []
    proxies: list[Nginx] = []

    async def start(mode: str, **overrides: str) -> Stack:
        s3_port = await _serve(checking_s3_front(moto.endpoint_url, ACCESS_KEY, SECRET_KEY), runners)
        s3_url = f"http://127.0.0.1:{s3_port}"

        env = {**gateway_env, "FORWARDED_ALLOW_IPS": "127.0.0.1", "S3_PUBLIC_ENDPOINT_URL": s3_url, **overrides}
        if mode != "redirect":
            env["ACCEL_REDIRECT_LOCATION"] = ACCEL_LOCATION
        settings = load_settings(env, require=("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET"))

        gateway_port = await _serve(create_app(settings), runners)
        app_port = await _serve(_stand_in_app(), runners)

        listen_port = free_port()
        site = render_site(mode, gateway_port, app_port, listen_port)
        nginx = Nginx(nginx_binary, tmp_path / f"nginx-{mode}", site, listen_port)
        proxies.append(nginx)
        nginx.start()
        return Stack(nginx_url=nginx.url, gateway_url=f"http://127.0.0.1:{gateway_port}", s3_url=s3_url, nginx=nginx)

    await _add_object(db, s3, KEY, OWNER, CONTENT_TYPE)
    yield start

    for nginx in proxies:
        nginx.stop()
    for runner in reversed(runners):
        await runner.cleanup()


async def _serve(app: web.Application, runners: list[web.AppRunner]) -> int:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)

    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return port


def _stand_in_app() -> web.Application:
    """The site's own app: returns "app" and echoes the proxy headers it received."""

    async def answer(request: web.Request) -> web.Response:
        echoed = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Request-ID")
        headers = {f"Echo-{name}": request.headers.get(name, "-") for name in echoed}
        return web.Response(text="app", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def _add_object(db, s3, key: str, owner: str, content_type: str) -> None:
    # S3 sends this with the object; a per-user response must never carry it.
    s3.put_object(Bucket=BUCKET, Key="media/" + key, Body=DATA, CacheControl=S3_CACHE_CONTROL)
    await db.execute(
        "INSERT INTO media_objects (key, owner_id, content_type) VALUES ($1, $2, $3)", key, owner, content_type
    )


def _session(token: str) -> dict[str, str]:
    return {"Cookie": f"gateway_session={token}"}


async def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET", local_address: str | None = None):
    """Send one request without following redirects; return (status, headers, body)."""
    connector = aiohttp.TCPConnector(local_addr=(local_address, 0) if local_address else None)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        async with session.request(method, URL(url, encoded=True), headers=headers, allow_redirects=False) as response:
            return response.status, response.headers, await response.read()


def _request_log_line(caplog, request_id: str) -> str:
    # The request line keeps its fields on the record; the logfmt formatter writes them out.
    formatter = LogfmtFormatter()
    lines = [formatter.format(record) for record in caplog.records if record.name == "gateway.request"]
    matching = [line for line in lines if f"request_id={request_id} " in line]
    assert len(matching) == 1, f"expected one request line for {request_id}, got {lines}"
    return matching[0]


@pytest.mark.parametrize("mode", MODES)
def test_shipped_config_passes_nginx_check(mode, tmp_path, nginx_binary):
    listen_port = free_port()
    site = render_site(mode, free_port(), free_port(), listen_port)

    Nginx(nginx_binary, tmp_path, site, listen_port).check()


def test_rendering_fails_when_markers_are_missing(tmp_path, monkeypatch):
    shipped = DEPLOY_CONF.read_text()
    edited = tmp_path / "nginx.conf"
    edited.write_text(shipped.replace("# --- accel mode: to here ---", ""))
    monkeypatch.setattr("tests.nginx.DEPLOY_CONF", edited)

    with pytest.raises(NginxError):
        render_site("accel", 1, 2, 3)


# Redirect mode: the gateway's 302 passes through nginx untouched.


async def test_redirect_mode_owner_gets_presigned_redirect(start_stack, token):
    stack = await start_stack("redirect")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 302
    assert headers["Location"].startswith(f"{stack.s3_url}/{BUCKET}/media/{KEY}?")

    s3_status, _, body = await _get(headers["Location"])
    assert s3_status == 200
    assert body == DATA


async def test_s3_front_rejects_edited_url(start_stack, token):
    stack = await start_stack("redirect")

    _, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    edited = headers["Location"].replace("response-content-type=video%2Fmp4", "response-content-type=text%2Fhtml")
    assert edited != headers["Location"]

    status, _, _ = await _get(edited)
    assert status == 403


async def test_redirect_mode_keeps_cache_headers(start_stack, token):
    stack = await start_stack("redirect")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 302
    assert len(headers.getall("Cache-Control")) == 1
    assert PRIVATE_MAX_AGE.fullmatch(headers["Cache-Control"])
    assert headers.getall("Vary") == ["Cookie, Authorization, Accept"]


async def test_redirect_mode_other_user_gets_403(start_stack, token):
    stack = await start_stack("redirect")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OTHER)))
    assert status == 403
    assert json.loads(body)["error"] == "forbidden"
    assert headers["Cache-Control"] == "private, no-store"


async def test_redirect_mode_anonymous_gets_401(start_stack):
    stack = await start_stack("redirect")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(body)["error"] == "unauthenticated"


# Accel mode: the gateway decides, nginx fetches the bytes from S3.


async def test_accel_mode_owner_gets_file(start_stack, token):
    stack = await start_stack("accel")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 200
    assert body == DATA
    assert headers["Content-Type"] == CONTENT_TYPE


async def test_accel_mode_never_sends_presigned_url(start_stack, token):
    stack = await start_stack("accel")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 200
    assert "X-Media-Url" not in headers
    assert "X-Accel-Redirect" not in headers
    assert "Location" not in headers
    assert not [value for value in headers.values() if "X-Amz-Signature" in value]


async def test_accel_mode_keeps_gateway_cache_headers(start_stack, token):
    stack = await start_stack("accel")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 200
    assert len(headers.getall("Cache-Control")) == 1
    assert PRIVATE_MAX_AGE.fullmatch(headers["Cache-Control"])
    assert headers.getall("Vary") == ["Cookie, Authorization, Accept"]


async def test_accel_mode_with_bearer_token(start_stack, token):
    stack = await start_stack("accel")

    authorization = {"Authorization": f"Bearer {token(OWNER)}"}
    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}", authorization)
    assert status == 200
    assert body == DATA


@pytest.mark.parametrize("mode", ["accel", "auth_request"])
async def test_key_with_reserved_characters(start_stack, db, s3, token, mode):
    key = "clips/100% fun ü+(1).mp4"
    await _add_object(db, s3, key, OWNER, "video/webm")
    stack = await start_stack(mode)

    path = "/media/" + quote(key, safe="/")
    status, headers, body = await _get(stack.nginx_url + path, _session(token(OWNER)))
    assert status == 200
    assert body == DATA
    assert headers["Content-Type"] == "video/webm"


async def test_accel_mode_download_name(start_stack, token):
    stack = await start_stack("accel")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}?download=talk.mp4", _session(token(OWNER)))
    assert status == 200
    assert headers["Content-Disposition"].startswith('attachment; filename="talk.mp4"')


async def test_accel_mode_range_request(start_stack, token):
    stack = await start_stack("accel")

    headers = {**_session(token(OWNER)), "Range": "bytes=0-99"}
    status, response_headers, body = await _get(f"{stack.nginx_url}/media/{KEY}", headers)
    assert status == 206
    assert body == DATA[:100]
    assert response_headers["Content-Range"] == f"bytes 0-99/{len(DATA)}"


async def test_accel_mode_range_request_in_the_middle(start_stack, token):
    stack = await start_stack("accel")

    headers = {**_session(token(OWNER)), "Range": "bytes=1000-1999"}
    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}", headers)
    assert status == 206
    assert body == DATA[1000:2000]


async def test_accel_mode_head(start_stack, token):
    stack = await start_stack("accel")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)), method="HEAD")
    assert status == 200
    assert headers["Content-Length"] == str(len(DATA))
    assert body == b""


async def test_accel_mode_other_user_gets_403(start_stack, token):
    stack = await start_stack("accel")

    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OTHER)))
    assert status == 403
    assert json.loads(body)["error"] == "forbidden"


async def test_accel_mode_anonymous_gets_401(start_stack):
    stack = await start_stack("accel")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(body)["error"] == "unauthenticated"


async def test_accel_mode_rejects_format_json(start_stack, token):
    stack = await start_stack("accel")

    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}?format=json", _session(token(OWNER)))
    assert status == 400
    assert json.loads(body)["error"] == "invalid_option"


# auth_request mode: nginx requests only a decision from the gateway.


async def test_auth_request_mode_owner_gets_file(start_stack, token):
    stack = await start_stack("auth_request")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    assert status == 200
    assert body == DATA
    assert headers["Content-Type"] == CONTENT_TYPE
    assert "X-Media-Url" not in headers
    assert len(headers.getall("Cache-Control")) == 1
    assert PRIVATE_MAX_AGE.fullmatch(headers["Cache-Control"])
    assert headers.getall("Vary") == ["Cookie, Authorization, Accept"]


async def test_auth_request_mode_range_request(start_stack, token):
    stack = await start_stack("auth_request")

    headers = {**_session(token(OWNER)), "Range": "bytes=0-99"}
    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}", headers)
    assert status == 206
    assert body == DATA[:100]


async def test_auth_request_mode_head(start_stack, token):
    stack = await start_stack("auth_request")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)), method="HEAD")
    assert status == 200
    assert headers["Content-Length"] == str(len(DATA))


async def test_auth_request_mode_other_user_gets_gateway_403(start_stack, token):
    stack = await start_stack("auth_request")

    status, _, body = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OTHER)))
    assert status == 403
    assert json.loads(body)["error"] == "forbidden"


async def test_auth_request_mode_anonymous_gets_gateway_401(start_stack):
    stack = await start_stack("auth_request")

    status, headers, body = await _get(f"{stack.nginx_url}/media/{KEY}")
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert json.loads(body)["error"] == "unauthenticated"


async def test_auth_request_mode_malformed_key_gets_400(start_stack, token):
    stack = await start_stack("auth_request")

    status, _, body = await _get(f"{stack.nginx_url}/media/clips//intro.mp4", _session(token(OWNER)))
    assert status == 400
    assert json.loads(body)["error"] == "malformed_key"


async def test_auth_request_mode_browser_goes_to_login(start_stack):
    stack = await start_stack("auth_request", LOGIN_URL="/accounts/login/")

    status, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", {"Accept": "text/html"})
    assert status == 302
    assert headers["Location"] == f"/accounts/login/?next=/media/{KEY}"


# The rest of the site, and the headers nginx adds.


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/mediakit", "/auth/media/" + KEY])
async def test_other_paths_go_to_app(start_stack, path):
    stack = await start_stack("redirect")

    status, _, body = await _get(stack.nginx_url + path)
    assert status == 200
    assert body == b"app"


async def test_app_gets_forwarded_headers(start_stack):
    stack = await start_stack("redirect")
    host = URL(stack.nginx_url).authority

    _, headers, _ = await _get(stack.nginx_url + "/page", local_address=UNTRUSTED_ADDRESS)
    assert headers["Echo-X-Forwarded-For"] == UNTRUSTED_ADDRESS
    assert headers["Echo-X-Forwarded-Proto"] == "http"
    assert headers["Echo-X-Forwarded-Host"] == host.split(":")[0]
    assert re.fullmatch(r"[0-9a-f]{32}", headers["Echo-X-Request-ID"])


async def test_request_id_made_by_nginx_reaches_gateway(start_stack, caplog, token):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("redirect")

    _, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", _session(token(OWNER)))
    request_id = headers["X-Request-ID"]
    assert stack.nginx.access_log_lines() == [f'{request_id} 302 "GET /media/{KEY} HTTP/1.1"']
    assert "status=302" in _request_log_line(caplog, request_id)


async def test_request_id_from_client_is_kept(start_stack, caplog, token):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("redirect")
    request_id = f"client-{uuid.uuid4().hex}"

    _, headers, _ = await _get(f"{stack.nginx_url}/media/{KEY}", {"X-Request-ID": request_id})
    assert headers["X-Request-ID"] == request_id
    assert "status=401" in _request_log_line(caplog, request_id)


async def test_forwarded_for_from_nginx_is_logged(start_stack, caplog, token):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("accel")
    request_id = uuid.uuid4().hex

    headers = {**_session(token(OWNER)), "X-Request-ID": request_id}
    await _get(f"{stack.nginx_url}/media/{KEY}", headers, local_address=UNTRUSTED_ADDRESS)
    assert f"remote={UNTRUSTED_ADDRESS}" in _request_log_line(caplog, request_id)


async def test_forwarded_for_spoofed_through_nginx(start_stack, caplog):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("redirect")
    request_id = uuid.uuid4().hex

    headers = {"X-Forwarded-For": DOCUMENTATION_ADDRESS, "X-Request-ID": request_id}
    await _get(f"{stack.nginx_url}/media/{KEY}", headers, local_address=UNTRUSTED_ADDRESS)
    assert f"remote={UNTRUSTED_ADDRESS}" in _request_log_line(caplog, request_id)


async def test_forwarded_for_straight_from_untrusted_peer_is_ignored(start_stack, caplog):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("redirect")
    request_id = uuid.uuid4().hex

    headers = {"X-Forwarded-For": DOCUMENTATION_ADDRESS, "X-Request-ID": request_id}
    await _get(f"{stack.gateway_url}/media/{KEY}", headers, local_address=UNTRUSTED_ADDRESS)
    assert f"remote={UNTRUSTED_ADDRESS}" in _request_log_line(caplog, request_id)


async def test_forwarded_for_straight_from_trusted_peer_is_used(start_stack, caplog):
    caplog.set_level(logging.INFO, logger="gateway.request")
    stack = await start_stack("redirect")
    request_id = uuid.uuid4().hex

    headers = {"X-Forwarded-For": DOCUMENTATION_ADDRESS, "X-Request-ID": request_id}
    await _get(f"{stack.gateway_url}/media/{KEY}", headers, local_address="127.0.0.1")
    assert f"remote={DOCUMENTATION_ADDRESS}" in _request_log_line(caplog, request_id)
