"""The do-it-yourself alternative's key service: what nginx `auth_request` asks per request.

    python -m bench.keyservice PORT KEYFILE

A small aiohttp app, as a Python team would write it next to nginx: `GET /auth` reads the
`X-API-KEY` header, looks its SHA-256 up in a dictionary loaded from KEYFILE (one key per
line) and answers 204 with `X-User` (nginx passes it on as an identity header) or 401. No
database, no cache misses, no permissions beyond "the key exists": the cheapest version of
what Keygate decides, so the comparison flatters this side.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from aiohttp import web


def app(keyfile: Path) -> web.Application:
    known = {
        hashlib.sha256(line.strip().encode()).digest(): f"user-{n}"
        for n, line in enumerate(keyfile.read_text().splitlines())
        if line.strip()
    }

    async def auth(request: web.Request) -> web.Response:
        key = request.headers.get("X-API-KEY", "")
        user = known.get(hashlib.sha256(key.encode()).digest())
        if user is None:
            return web.Response(status=401)
        return web.Response(status=204, headers={"X-User": user})

    application = web.Application()
    application.router.add_get("/auth", auth)
    return application


def main() -> None:
    port, keyfile = int(sys.argv[1]), Path(sys.argv[2])
    web.run_app(app(keyfile), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
