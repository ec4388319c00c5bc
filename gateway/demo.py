"""A tiny demo upstream for `make run`: it answers every request with what it received.

`python -m gateway.demo [--listen 127.0.0.1:8081]`. It shows, in the first minute, what the
gateway forwards: the canonical path, the verbatim query, and the identity headers it adds.
"""

from __future__ import annotations

import argparse

from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "upstream": "keygate demo",
            "method": request.method,
            "path": request.raw_path.split("?", 1)[0],
            "query": request.query_string,
            "identity": {
                k: v for k, v in request.headers.items() if k.lower().startswith("x-gateway-")
            },
            "forwarded": {
                k: v for k, v in request.headers.items() if k.lower().startswith("x-forwarded-")
            },
            "body_bytes": len(body),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.demo")
    parser.add_argument("--listen", default="127.0.0.1:8081")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
