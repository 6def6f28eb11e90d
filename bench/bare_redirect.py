"""The reference: aiohttp on uvloop responding to every request with a fixed 302, nothing else."""

import sys

import uvloop
from aiohttp import web

LOCATION = "http://127.0.0.1:9/media-gateway-bench/media/reference.png?X-Amz-Signature=0"


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": LOCATION})


def main() -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", redirect)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
