"""The demo page in a real headless Chromium: sign in, upload an image straight to S3, open it through /media."""

import os

import pytest
from playwright.async_api import Browser, Page, async_playwright

from gateway.demo import create_demo_app
from gateway.demo_data import png
from gateway.settings import load_settings

from .conftest import BUCKET

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGE = png(24, 16)

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM}; install Debian's chromium package (.ci/run does) to run the browser tests",
)


@pytest.fixture
async def browser() -> Browser:
    # Playwright drives the system browser; it never downloads one of its own.
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def demo_url(aiohttp_client, gateway_env, db) -> str:
    settings = load_settings(gateway_env, require=("DATABASE_URL", "S3_BUCKET", "SESSION_SECRET"))
    client = await aiohttp_client(create_demo_app(settings))
    return str(client.make_url("")).rstrip("/")


@pytest.fixture
async def page(browser: Browser, demo_url: str) -> Page:
    context = await browser.new_context(base_url=demo_url)
    page = await context.new_page()
    yield page
    await context.close()


async def upload_through_page(page: Page, name: str, content_type: str, data: bytes) -> None:
    await page.set_input_files("#file", files=[{"name": name, "mimeType": content_type, "buffer": data}])
    await page.click("#upload-form button")


async def test_page_without_session_offers_sign_in(page):
    await page.goto("/")

    assert await page.locator("a[href='/demo/login/alice']").count() == 1
    assert await page.locator("#upload-form").count() == 0


async def test_sign_in_shows_user(page):
    await page.goto("/demo/login/alice")

    assert await page.text_content("#user") == "alice"
    assert await page.text_content("#own-files") == "You have no files yet."


async def test_upload_lists_and_serves_image(page, db, s3):
    await page.goto("/demo/login/alice")

    await upload_through_page(page, "photo.png", "image/png", IMAGE)
    link = page.locator("#own-files a", has_text="photo.png")
    await link.wait_for(timeout=15_000)

    assert await page.text_content("#status") == "Uploaded photo.png."
    key = await page.locator("#own-files li", has_text="photo.png").get_attribute("data-key")
    row = await db.fetchrow("SELECT owner_id, status, size FROM media_objects WHERE key = $1", key)
    assert row["owner_id"] == "alice"
    assert row["status"] == "ready"
    assert row["size"] == len(IMAGE)
    assert s3.get_object(Bucket=BUCKET, Key="media/" + key)["Body"].read() == IMAGE

    await link.click()
    await page.wait_for_load_state("load")
    image = page.locator("img")
    await image.wait_for()

    assert page.url.startswith("http://127.0.0.1:")
    assert "X-Amz-Signature=" in page.url
    assert await image.evaluate("element => element.complete") is True
    assert await image.evaluate("element => element.naturalWidth") == 24
    assert await image.evaluate("element => element.naturalHeight") == 16


async def test_media_link_loads_in_img_element(page):
    await page.goto("/demo/login/alice")
    await upload_through_page(page, "inline.png", "image/png", IMAGE)
    link = page.locator("#own-files a", has_text="inline.png")
    await link.wait_for(timeout=15_000)
    href = await link.get_attribute("href")

    width = await page.evaluate(
        """href => new Promise((resolve, reject) => {
            const image = new Image();
            image.onload = () => resolve(image.naturalWidth);
            image.onerror = () => reject(new Error("the image did not load"));
            image.src = href;
        })""",
        href,
    )

    assert width == 24


async def test_rejected_type_shows_message(page, db):
    await page.goto("/demo/login/alice")

    await upload_through_page(page, "tool.exe", "application/x-msdownload", b"MZ" + b"\x00" * 30)
    status = page.locator("#status", has_text="Upload failed")
    await status.wait_for(timeout=15_000)

    assert "application/x-msdownload" in await status.text_content()
    assert await db.fetchval("SELECT count(*) FROM media_objects") == 0


async def test_other_user_does_not_see_upload(page, browser, demo_url):
    await page.goto("/demo/login/alice")
    await upload_through_page(page, "private.png", "image/png", IMAGE)
    link = page.locator("#own-files a", has_text="private.png")
    await link.wait_for(timeout=15_000)
    href = await link.get_attribute("href")

    context = await browser.new_context(base_url=demo_url)
    try:
        bob = await context.new_page()
        await bob.goto("/demo/login/bob")
        listed = await bob.locator("#own-files a", has_text="private.png").count()
        response = await bob.goto(href)

        assert listed == 0
        assert response.status == 403
    finally:
        await context.close()
