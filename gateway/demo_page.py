"""The demo's home page: the signed-in user's files, and a form that uploads straight from the browser to S3.

The page's script requests a presigned form from POST MEDIA_ROUTE/uploads, posts the file to the bucket with
it, calls the complete URL and then reloads the file list, so no byte of the file reaches the gateway.
"""

import html
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import quote

import asyncpg
from aiohttp import web

from . import database, state
from .errors import BackendUnavailable
from .responses import MEDIA_VARY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_LISTED = 200

_OWN_FILES = """
SELECT key, filename, content_type, status FROM media_objects
WHERE owner_id = $1
ORDER BY created_at DESC, key
LIMIT $2
"""

_SHARED_FILES = """
SELECT o.key, o.filename, o.content_type, o.status
FROM media_grants g JOIN media_objects o ON o.key = g.key
WHERE g.grantee_id = $1 AND (g.expires_at IS NULL OR g.expires_at > now()) AND o.status = 'ready'
ORDER BY o.created_at DESC, o.key
LIMIT $2
"""

_BROWSER_UPLOAD_CORS_RULE = {
    "AllowedMethods": ["POST"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag", "Location"],
    "MaxAgeSeconds": 3000,
}


def add_demo_page(app: web.Application, anonymous_page: Handler | None = None) -> None:
    """Serve the page at GET /; `anonymous_page` serves callers without a session (e.g. with sign-in links)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        user_id = await request.app[state.SESSIONS].user_id(request)
        request[state.USER_ID] = user_id
        if user_id is None:
            if anonymous_page is not None:
                return await anonymous_page(request)
            return _page("<p>Sign in to see your files and upload new ones.</p>")

        try:
            own, shared = await _list_files(request.app[state.POOL], user_id)
        except BackendUnavailable:
            return _page("<p>The database is not answering; reload in a few seconds.</p>", status=503)

        return _page(_user_section(user_id, own, shared, request.app[state.SETTINGS].media_route))

    app.router.add_get("/", handle)


async def allow_browser_uploads(client, bucket: str, origins: Sequence[str]) -> None:
    """Put the CORS rule that lets pages from `origins` POST presigned upload forms to `bucket`.

    NOTE: moto's server adds permissive CORS headers to every response unless MOTO_DISABLE_GLOBAL_CORS
    is set, so with the demo's embedded S3 this rule is not what lets the browser through.
    """
    rule = {**_BROWSER_UPLOAD_CORS_RULE, "AllowedOrigins": list(origins)}
    await client.put_bucket_cors(Bucket=bucket, CORSConfiguration={"CORSRules": [rule]})


async def _list_files(pool: asyncpg.Pool, user_id: str) -> tuple[list, list]:
    async def query(connection: asyncpg.Connection) -> tuple[list, list]:
        own = await connection.fetch(_OWN_FILES, user_id, MAX_LISTED)
        shared = await connection.fetch(_SHARED_FILES, user_id, MAX_LISTED)
        return own, shared

    return await database.run(pool, query)


def _user_section(user_id: str, own: list, shared: list, media_route: str) -> str:
    uploads_url = f"{media_route}/uploads"
    return (
        f"<p>Signed in as <strong id=user>{html.escape(user_id)}</strong>.</p>"
        f'<form id=upload-form data-uploads-url="{html.escape(uploads_url)}">'
        "<label>File <input type=file id=file name=file required></label> "
        "<button type=submit>Upload</button></form>"
        "<p id=status role=status aria-live=polite></p>"
        "<div id=files>"
        f"<h2>Your files</h2>{_file_list(own, media_route, 'own-files', 'You have no files yet.')}"
        f"<h2>Shared with you</h2>{_file_list(shared, media_route, 'shared-files', 'Nothing is shared with you.')}"
        "</div>"
        f"<script>{_SCRIPT}</script>"
    )


def _file_list(rows: list, media_route: str, element_id: str, empty_text: str) -> str:
    if not rows:
        return f"<p id={element_id}>{html.escape(empty_text)}</p>"

    items = "".join(_file_item(row, media_route) for row in rows)
    return f"<ul id={element_id}>{items}</ul>"


def _file_item(row, media_route: str) -> str:
    key = row["key"]
    name = html.escape(row["filename"] or key.rsplit("/", 1)[-1])
    details = html.escape(f"{row['content_type'] or 'unknown type'}, {key}")

    if row["status"] != "ready":
        return f'<li data-key="{html.escape(key)}">{name} <small>(pending upload: {details})</small></li>'

    url = html.escape(f"{media_route}/{quote(key)}")
    return f'<li data-key="{html.escape(key)}"><a href="{url}">{name}</a> <small>({details})</small></li>'


def _page(body: str, status: int = 200) -> web.Response:
    document = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>media-gateway demo</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}"
        "small{color:#555}#status{min-height:1.5em}</style>"
        f"<h1>media-gateway demo</h1>{body}</html>"
    )
    headers = {"Cache-Control": "private, no-store", "Vary": MEDIA_VARY}
    return web.Response(text=document, content_type="text/html", status=status, headers=headers)


# The browser side of an upload: declare, post the file to S3 with the presigned form, complete, refresh.
_SCRIPT = """
"use strict";
const form = document.getElementById("upload-form");
const statusLine = document.getElementById("status");

function show(message) {
  statusLine.textContent = message;
}

async function postToGateway(url, body) {
  const options = {method: "POST", credentials: "same-origin", headers: {}};
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(url, options);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(answer.message || `The gateway returned HTTP ${response.status}.`);
  }
  return answer;
}

async function postToBucket(upload, file) {
  const data = new FormData();
  for (const [name, value] of Object.entries(upload.fields)) {
    data.append(name, value);
  }
  data.append("file", file);
  const response = await fetch(upload.url, {method: "POST", body: data});
  if (!response.ok) {
    throw new Error(`S3 rejected the upload with HTTP ${response.status}.`);
  }
}

async function refreshFiles() {
  const response = await fetch("/", {credentials: "same-origin", cache: "no-store"});
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const files = page.getElementById("files");
  if (files) {
    document.getElementById("files").replaceWith(files);
  }
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = document.getElementById("file").files[0];
  if (!file) {
    show("Choose a file first.");
    return;
  }
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    show(`Asking for an upload form for ${file.name}...`);
    const declared = await postToGateway(form.dataset.uploadsUrl, {
      filename: file.name,
      content_type: file.type || "application/octet-stream",
      size: file.size,
    });
    show(`Sending ${file.name} to S3...`);
    await postToBucket(declared.upload, file);
    show(`Checking ${file.name}...`);
    await postToGateway(declared.complete_url);
    await refreshFiles();
    show(`Uploaded ${file.name}.`);
    form.reset();
  } catch (error) {
    show(`Upload failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
});
"""
