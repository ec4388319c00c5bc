"""Forwarding an allowed request to its upstream (first version: aiohttp ClientSession).

Interface used by the handler: `Forwarder.forward(request, target, upstream, route, principal)`.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.errors import BadGateway, GatewayTimeout
from gateway.policy.evaluate import Principal
from gateway.policy.model import Route, Upstream
from gateway.policy.paths import CanonicalTarget

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


class Forwarder:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self,
        request: web.Request,
        target: CanonicalTarget,
        upstream: Upstream,
        route: Route,
        principal: Principal | None,
    ) -> web.StreamResponse:
        from gateway.proxy.handler import problem_response

        assert self._session is not None
        url = upstream.url + target.path + ("?" + target.query if target.query else "")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in HOP_BY_HOP
            and k.lower() not in {"authorization", "x-api-key"}
            and not k.lower().replace("_", "-").startswith("x-gateway-")
        }
        if principal is not None:
            headers["X-Gateway-User"] = principal.user_id
            if principal.key_id:
                headers["X-Gateway-Key-Id"] = principal.key_id
        timeout = aiohttp.ClientTimeout(
            sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
        )
        try:
            async with self._session.request(
                request.method,
                URL(url, encoded=True),
                headers=headers,
                data=request.content if request.body_exists else None,
                allow_redirects=False,
                timeout=timeout,
            ) as upstream_response:
                response = web.StreamResponse(status=upstream_response.status)
                for k, v in upstream_response.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        response.headers.add(k, v)
                await response.prepare(request)
                async for chunk in upstream_response.content.iter_chunked(65536):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except TimeoutError:
            return problem_response(GatewayTimeout("the upstream did not answer in time"))
        except aiohttp.ClientError:
            return problem_response(BadGateway("the upstream could not be reached"))
