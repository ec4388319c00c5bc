"""The data plane's problem+json answer as an aiohttp response (the fast front writes the same
`errors.problem_parts` itself)."""

from __future__ import annotations

from aiohttp import web

from gateway.errors import GatewayError, problem_parts


def problem_response(error: GatewayError, instance: str | None = None) -> web.Response:
    status, headers, body = problem_parts(error, instance)
    return web.Response(status=status, body=body, headers=headers)
