"""The build hook for a compiled data plane (setuptools reads pyproject.toml for the rest).

`KEYGATE_COMPILE=1` (as `make build-fast` sets it) compiles the modules a proxied request
runs through with mypyc into the wheel, as black and mypy ship themselves. The Python sources
stay the truth: without the switch, or when mypyc or a C compiler is missing, the build is
pure Python (the same package, only slower). Development and `make test` use the sources.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from setuptools import setup

# The request path of the fast front: HTTP/1.1 core, driver, exchange, upstream connection and
# client, header rules, the decision and what it calls per request (key verification and its
# cache, permission-use notes, the data plane's metric tallies, the upstream head).
HOT = [
    "gateway/proxy/h1/chunked.py",
    "gateway/proxy/h1/heads.py",
    "gateway/proxy/h1/request_head.py",
    "gateway/proxy/h1/server.py",
    "gateway/proxy/h1/client.py",
    "gateway/proxy/headers.py",
    "gateway/proxy/outbox.py",
    "gateway/proxy/response.py",
    "gateway/proxy/upstream_request.py",
    "gateway/proxy/connection.py",
    "gateway/proxy/client.py",
    "gateway/proxy/front_body.py",
    "gateway/proxy/front_exchange.py",
    "gateway/proxy/front_deadlines.py",
    "gateway/proxy/front_connection.py",
    "gateway/proxy/front.py",
    "gateway/proxy/front_context.py",
    "gateway/proxy/busy_poll.py",
    "gateway/proxy/decision.py",
    "gateway/policy/evaluate.py",
    "gateway/policy/paths.py",
    "gateway/policy/routes.py",
    "gateway/credentials.py",
    "gateway/access.py",
    "gateway/proxy/handler.py",
    "gateway/proxy/forward.py",
    "gateway/keys/verify.py",
    "gateway/keys/state.py",
    "gateway/keys/usage.py",
    "gateway/cache/local.py",
    "gateway/metrics.py",
]


def compiled() -> list[Any]:
    if os.environ.get("KEYGATE_COMPILE") != "1" or "dist_info" in sys.argv:
        return []  # (the metadata step needs no compiling)
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("KEYGATE_COMPILE=1: mypyc is not installed, building pure Python", file=sys.stderr)
        return []
    if not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        print("KEYGATE_COMPILE=1: no C compiler found, building pure Python", file=sys.stderr)
        return []
    return mypycify(HOT, opt_level="3", debug_level="0")


setup(ext_modules=compiled())
