"""Operating a running gateway: metrics summed across workers, the admin listener apart from
the public one, JSON access lines with request ids (and never a key), trusted request ids."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.keys.format import generate
from gateway.logs import JsonFormatter
from tests.integration.gateways import MakeGateway, front_gateways
from tests.integration.upstream import free_port

ALLOWED = re.compile(
    r'^keygate_requests_total\{method="GET",outcome="allowed",route="/api/\*\*",'
    r'status="2xx"\} (\S+)$',
    re.M,
)
ACCESS_FIELDS = {
    "time",
    "request_id",
    "client",
    "method",
    "target",
    "route",
    "status",
    "outcome",
    "key_id",
    "user_id",
    "upstream_status",
    "bytes",
    "duration_ms",
    "upstream_ms",
    "auth_ms",
}


async def fetch(url: str, **kwargs: Any) -> tuple[int, CIMultiDict[str], str]:
    """One request on a connection of its own (so SO_REUSEPORT can pick any worker)."""
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.get(url, **kwargs) as response,
    ):
        return response.status, CIMultiDict(response.headers), await response.text()


async def allowed_count(admin: str) -> float:
    status, _, text = await fetch(f"{admin}/metrics")
    assert status == 200
    return sum(float(value) for value in ALLOWED.findall(text))


def served_by(log: Path, ids: list[str]) -> set[int]:
    """The workers whose access lines name these request ids (in the lines written whole so
    far: a worker may be writing one)."""
    text = log.read_text()
    wanted = set(ids)
    lines = (json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line)
    return {
        line["worker"]
        for line in lines
        if line.get("logger") == "aiohttp.access" and line.get("request_id") in wanted
    }


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every log line, each of which must be one JSON object."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


async def test_two_workers_sum_metrics_split_the_admin_listener_and_log_json(
    tmp_path: Path,
) -> None:
    """With two workers: /metrics (only on the admin listener) is the sum of both workers, a
    counter read twice without traffic reads the same, and N requests add exactly N; each
    request is one JSON access line with its fields, its id matches the client's and the
    upstream's, and no key appears anywhere in the log."""
    log = tmp_path / "gateway.log"
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    async with front_gateways(tmp_path) as make:
        gw = await make(
            log_to=log,
            workers=2,
            admin_listen=f"127.0.0.1:{admin_port}",
            log_format="json",
            access_log="true",
            log_level="INFO",
        )
        public = f"http://127.0.0.1:{gw.port}"
        for path in ("/metrics", "/docs", "/openapi.json", "/v1/admin/users"):
            status, headers, _ = await fetch(public + path)
            assert status == 404, path  # the data plane's: no policy route there
            assert headers["Content-Type"].startswith("application/problem+json")
        for path in ("/metrics", "/openapi.json", "/healthz"):
            assert (await fetch(admin + path))[0] == 200, path
        assert (await fetch(admin + "/v1/admin/users"))[0] == 401  # served, wants a credential
        assert (await fetch(admin + "/api/x"))[0] == 404  # no data plane on the admin port
        assert (await fetch(public + "/healthz"))[0] == 200  # probes stay on both

        # Warm up both workers' series, then: every scrape sees every worker.
        for _ in range(4):
            assert (await fetch(public + "/api/x", headers=gw.auth))[0] == 200
        await asyncio.sleep(1.5)
        first = await allowed_count(admin)
        assert first >= 4
        for _ in range(8):
            assert await allowed_count(admin) == first
        # Both workers wait on the one listening socket and the kernel wakes either for a new
        # connection: requests one after another can all land on the same one. Batches of ten
        # at once (each on a connection of its own) keep one busy while the other accepts,
        # until the access lines show both (at most 20 batches).
        ids: list[str] = []
        for batch in range(20):
            answers = await asyncio.gather(
                *(fetch(public + f"/api/x?n={batch}-{i}", headers=gw.auth) for i in range(10))
            )
            for status, headers, _ in answers:
                assert status == 200
                ids.append(headers["X-Request-Id"])
            await asyncio.sleep(0.2)  # the workers write their access lines as they go
            if served_by(log, ids) == {0, 1}:
                break
        n = len(ids)
        assert len(set(ids)) == n
        # Each worker hands its counts over every second (metrics.Tally): within 5 s the sum
        # is exactly n, never more, and stays there.
        for _ in range(50):
            added = await allowed_count(admin) - first
            assert added <= n
            if added == n:
                break
            await asyncio.sleep(0.1)
        assert added == n
        await asyncio.sleep(1.5)
        for _ in range(3):
            assert await allowed_count(admin) - first == n
        # Refused keys are security events; the key itself is never logged.
        unknown = generate().text
        for _ in range(3):
            assert (await fetch(public + "/api/x", headers={"X-API-KEY": unknown}))[0] == 401
        status, _, _ = await fetch(public + "/admin/x", headers=gw.auth)
        assert status == 403

        sent = {r.header("X-Request-Id")[0] for r in gw.upstream.received}
        assert set(ids) <= sent
        for _ in range(100):  # the workers write as they go: up to 5 s
            lines = json_lines(log)
            access = [line for line in lines if line.get("logger") == "aiohttp.access"]
            if len([a for a in access if a.get("route") == "/api/**"]) >= n + 3:
                break
            await asyncio.sleep(0.05)
    text = log.read_text()
    for key in (gw.key, unknown):
        assert key not in text
        assert key[: len(key) - 8] not in text
    lines = json_lines(log)
    access = {a["request_id"]: a for a in lines if a.get("logger") == "aiohttp.access"}
    for rid in ids:
        line = access[rid]
        assert set(line) >= ACCESS_FIELDS, line
        assert (line["method"], line["route"], line["status"], line["outcome"]) == (
            "GET",
            "/api/**",
            200,
            "allowed",
        )
        assert (line["key_id"], line["user_id"], line["upstream_status"]) == (
            gw.key_id,
            gw.user_id,
            200,
        )
        assert line["client"] == "127.0.0.1"
        assert line["bytes"] > 0
        assert line["duration_ms"] >= line["upstream_ms"] >= 0
        assert line["auth_ms"] >= 0
    assert {access[rid]["worker"] for rid in ids} == {0, 1}  # both workers served
    refused = [a for a in access.values() if a["outcome"] == "key-unknown"]
    assert len(refused) == 3
    assert all(a["status"] == 401 and a["key_id"] is None for a in refused)
    denied = [a for a in access.values() if a["route"] == "/admin/**"]
    assert denied[0]["outcome"] == "missing-permission"
    assert denied[0]["key_id"] == gw.key_id
    events = [line for line in lines if line.get("event") == "key-refused"]
    assert len(events) == 3
    assert all(e["client"] == "127.0.0.1" and e["outcome"] == "key-unknown" for e in events)


async def test_admin_listener_on_the_aiohttp_server(tmp_path: Path) -> None:
    """With `fast_data_plane: false` the split is the same: admin paths answer only on the
    admin port; a policy route to an admin path is served on the public one."""
    admin_port = free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    async with front_gateways(tmp_path) as make:
        gw = await make(fast_data_plane="false", admin_listen=f"127.0.0.1:{admin_port}")
        public = f"http://127.0.0.1:{gw.port}"
        assert (await fetch(public + "/metrics"))[0] == 404
        assert (await fetch(public + "/docs"))[0] == 404
        assert (await fetch(admin + "/metrics"))[0] == 200
        assert (await fetch(admin + "/docs"))[0] == 200
        assert (await fetch(admin + "/api/x", headers=gw.auth))[0] == 404
        status, headers, _ = await fetch(public + "/api/x", headers=gw.auth)
        assert status == 200
        assert headers["X-Request-Id"] == gw.upstream.received[-1].header("X-Request-Id")[0]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("req-7f3a.b_c:1", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("two words", False),
        ("a<script>", False),
        ("x" * 5_000, False),  # 10 KB and more: 431 from the head limits first
    ],
)
async def test_request_id_from_a_trusted_proxy_is_kept_when_well_formed(
    make_gateway: MakeGateway, sent: str, kept: bool
) -> None:
    """A trusted proxy's X-Request-Id is forwarded and returned as is when it is 1-128 safe
    characters; anything else (too long, spaces, markup) is replaced by a new id."""
    gw = await make_gateway(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    async with gw.client.get("/api/x", headers={**gw.auth, "X-Request-Id": sent}) as response:
        assert response.status == 200
        returned = response.headers.getall("X-Request-Id")
    upstream = gw.upstream.received[-1].header("X-Request-Id")
    assert upstream == returned
    assert len(returned) == 1
    assert (returned[0] == sent) is kept
    assert re.fullmatch(r"[A-Za-z0-9._:@+=/-]{1,128}", returned[0])


async def test_request_id_from_an_untrusted_client_is_replaced(make_gateway: MakeGateway) -> None:
    """Without trusted proxies, a client's X-Request-Id is never believed nor passed on; the
    gateway's own id is, also on refusals and on its own pages."""
    gw = await make_gateway()
    async with gw.client.get("/api/x", headers={**gw.auth, "X-Request-Id": "mine"}) as response:
        assert response.status == 200
        rid = response.headers["X-Request-Id"]
    assert rid != "mine"
    assert gw.upstream.received[-1].header("X-Request-Id") == [rid]
    for path in ("/api/x", "/healthz", "/nowhere"):
        async with gw.client.get(path) as response:
            assert response.headers["X-Request-Id"] not in ("", rid)


@pytest.mark.server("aiohttp", reason="its records are read in this process (the front's above)")
async def test_access_lines_on_the_aiohttp_server(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """The aiohttp server writes the same access fields as the fast front, for the data plane
    and for its own pages, and they format as one JSON object."""
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    gw = await make_gateway(access_log=True)
    async with gw.client.get("/api/x", headers=gw.auth) as response:
        assert response.status == 200
        rid = response.headers["X-Request-Id"]
        size = len(await response.read())
    async with gw.client.get("/healthz") as response:
        page = response.headers["X-Request-Id"]
    records = {r.access["request_id"]: r for r in caplog.records if hasattr(r, "access")}
    line = json.loads(JsonFormatter().format(records[rid]))
    assert set(line) >= ACCESS_FIELDS
    assert (line["route"], line["outcome"], line["status"], line["bytes"]) == (
        "/api/**",
        "allowed",
        200,
        size,
    )
    assert (line["key_id"], line["user_id"], line["upstream_status"]) == (
        gw.key_id,
        gw.user_id,
        200,
    )
    assert line["duration_ms"] >= line["upstream_ms"] >= 0
    assert line["auth_ms"] >= 0
    health = records[page].access
    assert (health["route"], health["outcome"], health["status"]) == ("/healthz", "ok", 200)
    assert gw.key not in caplog.text
