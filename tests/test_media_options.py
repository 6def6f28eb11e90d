"""Query options and headers of the media route: downloads, overrides, JSON mode and caching."""

import datetime
import re
from urllib.parse import quote, unquote

import pytest

from .conftest import BUCKET
from .media_support import add_object, fetch, send, verify

DISPOSITION = re.compile(r"^(inline|attachment); filename=\"([^\"]*)\"; filename\*=UTF-8''([^\s\"]*)$")
# RFC 5987 attr-char, plus the percent sign of its pct-encoded bytes.
ENCODED_FILENAME = re.compile(r"^[A-Za-z0-9!#$&+\-.^_`|~%]+$")
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
JSON = {"Accept": "application/json"}


def parse_disposition(value: str) -> tuple[str, str, str]:
    """Split a Content-Disposition value into its kind, ASCII fallback and still-encoded filename*."""
    match = DISPOSITION.match(value)
    assert match is not None, f"unexpected Content-Disposition {value!r}"
    return match.group(1), match.group(2), match.group(3)


async def signed_overrides(gateway, target: str, token: str) -> dict[str, str]:
    response = await send(gateway, target, bearer=token)
    assert response.status == 302
    return verify(response.headers["Location"]).overrides


# ?download and the stored filename.


async def test_download_uses_stored_filename(gateway, db, token):
    await add_object(db, "docs/x1.pdf", filename="Report.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf?download", token("alice"))
    assert parse_disposition(overrides["response-content-disposition"]) == ("attachment", "Report.pdf", "Report.pdf")


async def test_download_defaults_to_last_segment(gateway, db, token):
    await add_object(db, "docs/x1.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf?download", token("alice"))
    assert parse_disposition(overrides["response-content-disposition"]) == ("attachment", "x1.pdf", "x1.pdf")


async def test_download_empty_value_is_default(gateway, db, token):
    await add_object(db, "docs/x1.pdf", filename="Report.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf?download=", token("alice"))
    assert parse_disposition(overrides["response-content-disposition"]) == ("attachment", "Report.pdf", "Report.pdf")


async def test_download_name_wins(gateway, db, token):
    await add_object(db, "docs/x1.pdf", filename="Report.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf?download=Q3.pdf", token("alice"))
    assert parse_disposition(overrides["response-content-disposition"]) == ("attachment", "Q3.pdf", "Q3.pdf")


async def test_stored_filename_inline(gateway, db, token):
    await add_object(db, "docs/x1.pdf", filename="Report.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf", token("alice"))
    assert parse_disposition(overrides["response-content-disposition"]) == ("inline", "Report.pdf", "Report.pdf")


async def test_no_filename_no_disposition(gateway, db, token):
    await add_object(db, "docs/x1.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf", token("alice"))
    assert "response-content-disposition" not in overrides


async def test_stored_content_type_signed(gateway, db, token):
    await add_object(db, "docs/x1.pdf", content_type="application/pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf", token("alice"))
    assert overrides["response-content-type"] == "application/pdf"


async def test_no_content_type_no_override(gateway, db, token):
    await add_object(db, "docs/x1.pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf", token("alice"))
    assert "response-content-type" not in overrides


async def test_download_keeps_content_type(gateway, db, token):
    await add_object(db, "docs/x1.pdf", content_type="application/pdf")
    overrides = await signed_overrides(gateway, "/media/docs/x1.pdf?download", token("alice"))
    assert overrides["response-content-type"] == "application/pdf"


async def test_head_with_download_signed(gateway, db, token):
    await add_object(db, "docs/x1.pdf", content_type="application/pdf", filename="Report.pdf")
    response = await send(gateway, "/media/docs/x1.pdf?download", "HEAD", bearer=token("alice"))
    assert verify(response.headers["Location"], "HEAD").key == "media/docs/x1.pdf"


async def test_overrides_reach_the_browser(gateway, db, s3, token):
    s3.put_object(Bucket=BUCKET, Key="media/docs/x1.pdf", Body=b"%PDF-1.7", ContentType="application/octet-stream")
    await add_object(db, "docs/x1.pdf", content_type="application/pdf", filename="Report.pdf")
    response = await send(gateway, "/media/docs/x1.pdf?download", bearer=token("alice"))
    fetched = await fetch(response.headers["Location"])
    assert (fetched.status, fetched.headers["Content-Type"], fetched.headers["Content-Disposition"]) == (
        200,
        "application/pdf",
        "attachment; filename=\"Report.pdf\"; filename*=UTF-8''Report.pdf",
    )


# Hard filenames: the disposition decodes back to the name and cannot inject a header.

HARD_FILENAMES = {
    "accents": "résumé final.pdf",
    "double quotes": 'say "hi".txt',
    "single quotes": "it's 'here'.txt",
    "commas": "a, b, c.csv",
    "registered sign": "Brand® logo.png",
    "backslash": "back\\slash.txt",
    "percent": "100% done %41.txt",
    "CR LF": "line\r\nX-Injected: yes.txt",
    "LF only": "line\nX-Injected: yes.txt",
    "semicolon": "a; filename=evil.exe",
    "tab": "tab\tname.txt",
    "Japanese": "日本語の名前.pdf",
    "emoji": "party 🎉.png",
    "star and equals": "x*=UTF-8''evil.txt",
}


async def hard_filename_disposition(gateway, db, token, name: str, via: str) -> str:
    if via == "stored":
        await add_object(db, "f/a.bin", filename=name)
        target = "/media/f/a.bin?download"
    else:
        await add_object(db, "f/a.bin")
        target = "/media/f/a.bin?download=" + quote(name, safe="")
    overrides = await signed_overrides(gateway, target, token("alice"))
    return overrides["response-content-disposition"]


VIAS = ["stored", "query"]


@pytest.mark.parametrize("via", VIAS)
@pytest.mark.parametrize("name", HARD_FILENAMES.values(), ids=HARD_FILENAMES.keys())
async def test_hard_filename(gateway, db, token, name, via):
    disposition = await hard_filename_disposition(gateway, db, token, name, via)
    _, fallback, encoded = parse_disposition(disposition)

    assert unquote(encoded, errors="strict") == name
    assert ENCODED_FILENAME.match(encoded)
    assert re.fullmatch(r"[\x20-\x7e]*", fallback)
    assert set(fallback).isdisjoint('"\\%')


@pytest.mark.parametrize("name", ["résumé.pdf", "line\r\nX-Injected: yes.txt", 'a";b=c.txt', "日本.pdf"])
async def test_fetched_disposition_single_line(gateway, db, s3, token, name):
    s3.put_object(Bucket=BUCKET, Key="media/f/a.bin", Body=b"bytes")
    await add_object(db, "f/a.bin", filename=name)
    response = await send(gateway, "/media/f/a.bin?download", bearer=token("alice"))
    fetched = await fetch(response.headers["Location"])
    assert re.search(r"[\r\n]", fetched.headers["Content-Disposition"]) is None


@pytest.mark.parametrize(
    "target", ["/media/f/a.bin?download", "/media/f/a.bin?download=x%0D%0AX-Injected:%20yes"], ids=VIAS
)
async def test_fetch_has_no_injected_header(gateway, db, s3, token, target):
    s3.put_object(Bucket=BUCKET, Key="media/f/a.bin", Body=b"bytes")
    await add_object(db, "f/a.bin", filename="x\r\nX-Injected: yes")
    response = await send(gateway, target, bearer=token("alice"))
    fetched = await fetch(response.headers["Location"])
    assert "X-Injected" not in fetched.headers


async def test_download_name_too_long(gateway, db, token):
    await add_object(db, "f/a.bin")
    response = await send(gateway, "/media/f/a.bin?download=" + "n" * 5000, bearer=token("alice"))
    assert response.status == 400


# Option values must be valid UTF-8 once percent-decoded. The check reads the raw query string.

INVALID_UTF8_OPTIONS = {
    "lone byte": ("/media/f/a.bin?download=%FF.pdf", "download"),
    "truncated sequence": ("/media/f/a.bin?download=r%C3sum.pdf", "download"),
    "overlong slash": ("/media/f/a.bin?download=a%C0%AFb.pdf", "download"),
    "encoded surrogate": ("/media/f/a.bin?download=%ED%A0%80.pdf", "download"),
    "second download": ("/media/f/a.bin?download=ok.pdf&download=%FF", "download"),
    "encoded option name": ("/media/f/a.bin?d%6Fwnload=%FF", "download"),
    "format": ("/media/f/a.bin?format=%FF", "format"),
}


@pytest.mark.parametrize("target, option", INVALID_UTF8_OPTIONS.values(), ids=INVALID_UTF8_OPTIONS.keys())
async def test_invalid_utf8_option_400(gateway, db, token, target, option):
    await add_object(db, "f/a.bin", filename="Report.pdf")

    response = await send(gateway, target, bearer=token("alice"))
    body = response.json()

    assert response.status == 400
    assert body == {"error": "invalid_option", "message": body["message"]}
    assert f"The value of {option} is not valid UTF-8" in body["message"]
    assert "%C3%A9" in body["message"]
    assert "Location" not in response.headers
    assert response.headers["Cache-Control"] == "private, no-store"
    assert response.headers["Vary"] == "Cookie, Authorization"
    assert await db.fetchval("SELECT filename FROM media_objects WHERE key = 'f/a.bin'") == "Report.pdf"


async def test_invalid_utf8_option_anonymous_400(gateway, db):
    await add_object(db, "f/a.bin")

    response = await send(gateway, "/media/f/a.bin?download=%FF")

    assert response.status == 400
    assert response.json()["error"] == "invalid_option"


# Query strings that were valid before the UTF-8 check keep their meaning.
DOWNLOAD_NAMES = {
    "plus is a space": ("?download=a+b.pdf", "a b.pdf"),
    "encoded plus": ("?download=a%2Bb.pdf", "a+b.pdf"),
    "encoded UTF-8": ("?download=r%C3%A9sum%C3%A9.pdf", "résumé.pdf"),
    "encoded four-byte letter": ("?download=%F0%9F%8E%89.png", "🎉.png"),
    "other parameter not UTF-8": ("?x=%FF&download=ok.pdf", "ok.pdf"),
    "invalid escape kept": ("?download=100%zz.pdf", "100%zz.pdf"),
    "empty value": ("?download=", "Report.pdf"),
    "no equals sign": ("?download", "Report.pdf"),
}


@pytest.mark.parametrize("query, name", DOWNLOAD_NAMES.values(), ids=DOWNLOAD_NAMES.keys())
async def test_download_name_decoding(gateway, db, token, query, name):
    await add_object(db, "f/a.bin", filename="Report.pdf")

    overrides = await signed_overrides(gateway, "/media/f/a.bin" + query, token("alice"))
    _, _, encoded = parse_disposition(overrides["response-content-disposition"])

    assert unquote(encoded, errors="strict") == name


# JSON mode.


@pytest.mark.parametrize(
    "target, headers",
    [("/media/a.bin", JSON), ("/media/a.bin?format=json", None), ("/media/a.bin?format=json", HTML)],
    ids=["Accept", "format", "format beats text/html"],
)
async def test_json_status(gateway, db, token, target, headers):
    await add_object(db, "a.bin")
    response = await send(gateway, target, bearer=token("alice"), headers=headers)
    assert response.status == 200


async def test_json_fields(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"), headers=JSON)
    assert set(response.json()) == {"url", "expires_at"}


async def test_json_content_type(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"), headers=JSON)
    assert response.headers["Content-Type"].startswith("application/json")


async def test_json_no_location(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin", bearer=token("alice"), headers=JSON)
    assert "Location" not in response.headers


async def test_json_url_signed(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin?format=json", bearer=token("alice"))
    assert verify(response.json()["url"]).key == "media/a.bin"


async def test_json_url_keeps_overrides(gateway, db, token):
    await add_object(db, "a.bin", content_type="image/png")
    response = await send(gateway, "/media/a.bin?format=json&download=x.png", bearer=token("alice"))
    assert verify(response.json()["url"]).overrides["response-content-type"] == "image/png"


async def expires_at_of(gateway, db, token) -> tuple[datetime.datetime, str, datetime.datetime]:
    await add_object(db, "a.bin")
    before = datetime.datetime.now(datetime.UTC)
    response = await send(gateway, "/media/a.bin?format=json", bearer=token("alice"))
    body = response.json()
    return datetime.datetime.fromisoformat(body["expires_at"]), body["url"], before


async def test_json_expires_at_utc(gateway, db, token):
    expires_at, _, _ = await expires_at_of(gateway, db, token)
    assert expires_at.utcoffset() == datetime.timedelta(0)


async def test_json_expires_at_iso_8601(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin?format=json", bearer=token("alice"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", response.json()["expires_at"])


async def test_json_expires_at_in_future(gateway, db, token):
    expires_at, _, before = await expires_at_of(gateway, db, token)
    assert expires_at > before


async def test_json_expires_at_within_ttl(gateway, db, token):
    expires_at, _, before = await expires_at_of(gateway, db, token)
    assert expires_at <= before + datetime.timedelta(seconds=3600 + 1)


async def test_json_expires_at_not_after_url(gateway, db, token):
    expires_at, url, _ = await expires_at_of(gateway, db, token)
    assert expires_at <= verify(url).expires_at


async def test_json_forbidden_is_403(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin?format=json", bearer=token("bob"))
    assert response.status == 403


async def test_json_anonymous_is_401(start_gateway, db):
    gateway = await start_gateway(LOGIN_URL="/accounts/login/")
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin", headers=JSON)
    assert response.status == 401


async def test_unknown_format_400(gateway, db, token):
    await add_object(db, "a.bin")
    response = await send(gateway, "/media/a.bin?format=xml", bearer=token("alice"))
    assert response.status == 400


# Cache-Control and Vary on every response.

CACHE_CASES = {
    "302 owner": ("GET", "/media/own.bin", "alice", None, 302),
    "302 public anonymous": ("GET", "/media/pub.png", None, None, 302),
    "302 HEAD": ("HEAD", "/media/own.bin", "alice", None, 302),
    "200 JSON": ("GET", "/media/own.bin?format=json", "alice", None, 200),
    "302 login": ("GET", "/media/own.bin", None, HTML, 302),
    "400 anonymous": ("GET", "/media/a/../b", None, None, 400),
    "400 session": ("GET", "/media/a%00", "alice", None, 400),
    "400 option": ("GET", "/media/own.bin?format=xml", "alice", None, 400),
    "401": ("GET", "/media/own.bin", None, None, 401),
    "403": ("GET", "/media/own.bin", "bob", None, 403),
    "403 missing": ("GET", "/media/missing.bin", "bob", None, 403),
    "405 anonymous": ("POST", "/media/own.bin", None, None, 405),
    "405 session": ("DELETE", "/media/own.bin", "alice", None, 405),
    "405 OPTIONS": ("OPTIONS", "/media/own.bin", None, None, 405),
}
ALLOWED_CASES = ["302 owner", "302 public anonymous", "302 HEAD", "200 JSON"]


async def cache_case_response(start_gateway, db, token, case: str, **env: str):
    method, target, user, headers, status = CACHE_CASES[case]
    gateway = await start_gateway(LOGIN_URL="/accounts/login/", **env)
    await add_object(db, "own.bin", owner="alice")
    await add_object(db, "pub.png", public=True)

    response = await send(gateway, target, method, bearer=token(user) if user else None, headers=headers)
    assert response.status == status
    return response


def vary_tokens(response) -> set[str]:
    return {part.strip().lower() for part in response.headers.get("Vary", "").split(",")}


def remaining_life(location: str, method: str, ttl: int = 3600) -> float:
    signed = verify(location, method, ttl=ttl)
    return (signed.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()


@pytest.mark.parametrize("case", CACHE_CASES)
async def test_vary_cookie_authorization(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    assert {"cookie", "authorization"} <= vary_tokens(response)


@pytest.mark.parametrize("case", ALLOWED_CASES)
async def test_vary_accept_when_allowed(start_gateway, db, token, case):
    # The same URL gives JSON or a redirect depending on Accept, and both may be cached.
    response = await cache_case_response(start_gateway, db, token, case)
    assert "accept" in vary_tokens(response)


@pytest.mark.parametrize("case", CACHE_CASES)
async def test_cache_control_private(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    assert "private" in response.headers["Cache-Control"]


@pytest.mark.parametrize("case", CACHE_CASES.keys() - ALLOWED_CASES)
async def test_refusal_not_cached(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.parametrize("case", [case for case, values in CACHE_CASES.items() if values[-1] >= 400])
async def test_error_body_json(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    assert set(response.json()) == {"error", "message"}


@pytest.mark.parametrize("case", ALLOWED_CASES)
async def test_max_age_within_ttl(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    assert response.max_age <= 3600


def signed_url(response) -> str:
    return response.json()["url"] if response.status == 200 else response.headers["Location"]


@pytest.mark.parametrize("case", ALLOWED_CASES)
async def test_max_age_below_url_life(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case)
    method = CACHE_CASES[case][0]
    assert response.max_age < remaining_life(signed_url(response), method)


@pytest.mark.parametrize("case", ALLOWED_CASES)
async def test_short_ttl_in_expires(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case, MEDIA_URL_TTL="60")
    method = CACHE_CASES[case][0]
    assert verify(signed_url(response), method, ttl=60).expires_in == 60


@pytest.mark.parametrize("case", ALLOWED_CASES)
async def test_short_ttl_max_age(start_gateway, db, token, case):
    response = await cache_case_response(start_gateway, db, token, case, MEDIA_URL_TTL="60")
    method = CACHE_CASES[case][0]
    assert response.max_age < remaining_life(signed_url(response), method, ttl=60)


async def test_one_second_ttl_not_cached(start_gateway, db, token):
    response = await cache_case_response(start_gateway, db, token, "302 owner", MEDIA_URL_TTL="1")
    assert "no-store" in response.headers["Cache-Control"]


async def test_short_ttl_json_expires_at(start_gateway, db, token):
    response = await cache_case_response(start_gateway, db, token, "200 JSON", MEDIA_URL_TTL="60")
    expires_at = datetime.datetime.fromisoformat(response.json()["expires_at"])
    assert expires_at <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=61)


async def test_unrelated_path_has_no_media_headers(gateway):
    # A control for the cases above: the headers come from the media route, not from every response.
    response = await send(gateway, "/healthz")
    assert "Vary" not in response.headers
