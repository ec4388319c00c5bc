"""The forwarding behaviours of `test_forwarding.py`, `test_forward_streaming.py` and
`test_forward_websocket.py`, run again against a real `gateway serve` process with the fast
front (`GATEWAY_FAST_DATA_PLANE=true`).

The test functions are imported, so both servers are held to the very same assertions; only the
`make_gateway` fixture differs: here it starts the gateway as a subprocess on a SQLite database
prepared (user and key) before the process starts. Streaming tests that measure the memory of
the test process itself are not imported; `test_front_streaming.py` measures the subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.services import open_services
from gateway.settings import load_settings
from tests.integration.test_forward_streaming import (
    test_close_delimited_upstream_body_is_relayed,
    test_idempotent_request_on_a_stale_connection_is_retried_once,
    test_non_idempotent_request_on_a_stale_connection_is_not_retried,
    test_upstream_closing_mid_body_truncates_visibly,
    test_upstream_connection_close_is_honoured,
    test_upstream_connections_are_reused,
    test_upstream_stalling_mid_body_aborts_the_response_only,
)
from tests.integration.test_forward_websocket import (
    test_close_codes_are_relayed_from_the_client,
    test_close_codes_are_relayed_from_the_upstream,
    test_upstream_refusing_the_upgrade_is_a_502,
    test_websocket_handshake_carries_identity_not_the_key,
    test_websocket_messages_flow_both_ways,
    test_websocket_without_key_is_refused_before_the_upstream,
)
from tests.integration.test_forwarding import (
    request,
    split_responses,
    test_ambiguous_upstream_framing_is_a_502,
    test_canonical_path_and_verbatim_query_reach_the_upstream,
    test_chunked_upstream_response_is_relayed,
    test_compressed_bodies_pass_through_untouched,
    test_connection_header_cannot_drop_the_gateways_headers,
    test_credential_never_reaches_the_upstream_on_protected_routes,
    test_credential_never_reaches_the_upstream_on_public_routes,
    test_each_request_on_a_connection_is_authenticated_afresh,
    test_expect_continue_upload_is_forwarded_without_expect,
    test_full_connection_pool_answers_504_after_waiting,
    test_head_and_no_content_responses_have_no_body,
    test_identity_headers_name_the_user_key_and_permissions,
    test_non_websocket_route_forwards_upgrade_as_plain_http,
    test_outcomes_are_counted_in_metrics,
    test_pipelined_attack_requests_are_refused_independently,
    test_rerouting_and_underscore_headers_never_reach_the_upstream,
    test_response_carries_exactly_one_date,
    test_slow_answer_on_a_reused_connection_is_relayed_whole,
    test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream,
    test_trusted_proxy_forwarded_for_is_appended,
    test_upstream_cookies_reach_the_client_but_are_never_replayed,
    test_upstream_not_accepting_connections_is_a_504,
    test_upstream_not_answering_in_time_is_a_504_problem,
    test_upstream_redirect_is_passed_back_not_followed,
    test_upstream_refusing_connections_is_a_502_problem,
    test_upstream_stalling_on_a_reused_connection_is_a_504,
    write_policy,
)
from tests.integration.upstream import EchoUpstream, RawUpstream, free_port

ROOT = Path(__file__).resolve().parents[2]

REUSED = (
    test_ambiguous_upstream_framing_is_a_502,
    test_canonical_path_and_verbatim_query_reach_the_upstream,
    test_chunked_upstream_response_is_relayed,
    test_compressed_bodies_pass_through_untouched,
    test_connection_header_cannot_drop_the_gateways_headers,
    test_credential_never_reaches_the_upstream_on_protected_routes,
    test_credential_never_reaches_the_upstream_on_public_routes,
    test_each_request_on_a_connection_is_authenticated_afresh,
    test_expect_continue_upload_is_forwarded_without_expect,
    test_full_connection_pool_answers_504_after_waiting,
    test_head_and_no_content_responses_have_no_body,
    test_identity_headers_name_the_user_key_and_permissions,
    test_non_websocket_route_forwards_upgrade_as_plain_http,
    test_outcomes_are_counted_in_metrics,
    test_pipelined_attack_requests_are_refused_independently,
    test_rerouting_and_underscore_headers_never_reach_the_upstream,
    test_response_carries_exactly_one_date,
    test_spoofed_identity_and_forwarding_headers_never_reach_the_upstream,
    test_trusted_proxy_forwarded_for_is_appended,
    test_upstream_cookies_reach_the_client_but_are_never_replayed,
    test_upstream_not_accepting_connections_is_a_504,
    test_upstream_not_answering_in_time_is_a_504_problem,
    test_upstream_redirect_is_passed_back_not_followed,
    test_upstream_refusing_connections_is_a_502_problem,
    test_upstream_stalling_on_a_reused_connection_is_a_504,
    test_slow_answer_on_a_reused_connection_is_relayed_whole,
    test_close_delimited_upstream_body_is_relayed,
    test_idempotent_request_on_a_stale_connection_is_retried_once,
    test_non_idempotent_request_on_a_stale_connection_is_not_retried,
    test_upstream_closing_mid_body_truncates_visibly,
    test_upstream_connection_close_is_honoured,
    test_upstream_connections_are_reused,
    test_upstream_stalling_mid_body_aborts_the_response_only,
    test_close_codes_are_relayed_from_the_client,
    test_close_codes_are_relayed_from_the_upstream,
    test_upstream_refusing_the_upgrade_is_a_502,
    test_websocket_handshake_carries_identity_not_the_key,
    test_websocket_messages_flow_both_ways,
    test_websocket_without_key_is_refused_before_the_upstream,
)


class Client:
    """The subset of pytest-aiohttp's TestClient the forwarding tests use, on a real port."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self._session = session
        self.port = port

    def _url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._session.get(self._url(path), **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self._session.post(self._url(path), **kwargs)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._session.request(method, self._url(path), **kwargs)

    def ws_connect(self, path: str, **kwargs: Any) -> Any:
        return self._session.ws_connect(self._url(path), **kwargs)


@dataclass
class FrontGateway:
    """A `gateway serve` process with the fast front, its upstream and a `t.read` key."""

    client: Client
    upstream: EchoUpstream
    key: str
    key_id: str
    user_id: str
    port: int
    pid: int
    process: asyncio.subprocess.Process

    @property
    def auth(self) -> dict[str, str]:
        return {"X-API-KEY": self.key}

    async def raw(self, data: bytes, *, seconds: float = 10) -> bytes:
        """Send raw bytes on one connection; read until the gateway closes it."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(seconds):
                return await reader.read()
        finally:
            writer.close()


def _env(tmp_path: Path, policy: Path, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(
        {
            "GATEWAY_MODE": "production",
            "GATEWAY_SECRET": secrets.token_hex(32),
            "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'keygate.db'}",
            "GATEWAY_POLICY": str(policy),
            "GATEWAY_DATA_DIR": str(tmp_path),
            "GATEWAY_FAST_DATA_PLANE": "true",
            "GATEWAY_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
    )
    for name, value in settings.items():
        if name == "trusted_proxies":
            value = ",".join(str(ipaddress.ip_network(n)) for n in value)
        elif isinstance(value, tuple):
            value = ",".join(map(str, value))
        env["GATEWAY_" + name.upper()] = str(value)
    return env


async def _create_key(env: dict[str, str]) -> tuple[str, str, str]:
    async with open_services(load_settings(environ=env)) as services:
        user = await services.users.create(
            email="reader@example.com",
            password=None,
            actor="test",
            is_service=True,
            grants=["t.read"],
        )
        new = await services.keys.create(
            owner=user, creator=None, label="reader", permissions=["t.read"]
        )
        return new.text, new.record.id, user.id


async def _wait_until_serving(port: int, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30), aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"gateway exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)


MakeFront = Callable[..., Any]


@pytest.fixture(name="make_gateway")
async def make_front_gateway(tmp_path: Path) -> AsyncIterator[MakeFront]:
    """Start `gateway serve` (fast front) in front of `upstream`, like test_forwarding's."""
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def make(
            upstream: EchoUpstream | None = None,
            raw: RawUpstream | None = None,
            unaccepting: int | None = None,
            log_to: Path | None = None,  # the process's stderr (its log), else inherited
            **settings: Any,
        ) -> FrontGateway:
            upstream = await stack.enter_async_context(upstream or EchoUpstream())
            policy = write_policy(tmp_path, upstream, raw, unaccepting)
            env = _env(tmp_path, policy, settings)
            key, key_id, user_id = await _create_key(env)
            port = free_port()
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "gateway", "serve", "--listen", f"127.0.0.1:{port}"),
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stack.enter_context(log_to.open("wb")) if log_to else None,
            )

            async def stop() -> None:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        async with asyncio.timeout(15):
                            await proc.wait()
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()

            stack.push_async_callback(stop)
            await _wait_until_serving(port, proc)
            return FrontGateway(
                Client(session, port), upstream, key, key_id, user_id, port, proc.pid, proc
            )

        yield make


async def test_a_client_that_half_closes_still_gets_its_answers(
    make_gateway: MakeFront,
) -> None:
    """A request sent, then the sending side shut (FIN): the answer still arrives whole.

    The front holds small answers until the end of the loop's pass (outbox.py); the EOF must
    not close the connection under a held answer. Fast front only: aiohttp closes the
    connection on EOF and drops the answer in flight. Pipelined requests after the one in
    flight are not answered once the client has shut its side."""
    gw = await make_gateway()
    for headers in ([f"X-API-KEY: {gw.key}"], []):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(request("/api/one", *headers))
            writer.write_eof()
            async with asyncio.timeout(10):
                raw = await reader.read()
        finally:
            writer.close()
        [(status, _, body)] = split_responses(raw)
        assert status == (200 if headers else 401)
        assert body
    assert [r.target for r in gw.upstream.received] == ["/api/one"]
