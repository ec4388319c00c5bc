"""Account pages: a key's own rate limit chosen at creation (only those the policy allows the
user's keys), and its limit and credits shown in the key list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.state import SERVICES
from gateway.store.base import Audit, KeyQuota
from tests.conftest import EXAMPLE_POLICY, make_settings
from tests.e2e.support import form, login, make_user

LIMITS = """
limits:
  slow: 2/m
  ceiling: 10/m
  fast: 100/s
key_limits: {max: ceiling}
"""


@pytest.fixture
async def client(aiohttp_client: Any, sqlite_url: str, tmp_path: Path) -> Any:
    extra = tmp_path / "limits.yaml"
    extra.write_text(LIMITS)
    settings = make_settings(sqlite_url, policy=(EXAMPLE_POLICY, extra))
    client = await aiohttp_client(create_app(settings))
    await make_user(client.app[SERVICES], "alice@example.com", grants=["demo.reports.read"])
    await login(client)
    return client


async def _create(client: Any, **fields: Any) -> Any:
    page = await client.get("/account/api-keys/new")
    html = await page.text()
    data = form(html, "/account/api-keys").data(**fields)
    return html, await client.post("/account/api-keys", data=data, allow_redirects=False)


async def test_the_form_offers_only_limits_within_the_ceiling(client: Any) -> None:
    """The select lists `slow` and `ceiling`, not `fast` (above key_limits.max)."""
    html, _ = await _create(client, label="x", limit="slow", permission=["demo.reports.read"])
    assert 'value="slow"' in html
    assert 'value="ceiling"' in html
    assert 'value="fast"' not in html


async def test_a_key_made_with_a_limit_shows_it_with_its_credits(client: Any) -> None:
    """A key created with `slow` lists it; credits an administrator set show as a balance."""
    _, response = await _create(
        client, label="Nightly", limit="slow", permission=["demo.reports.read"]
    )
    assert response.status == 201
    services = client.app[SERVICES]
    alice = await services.users.find("alice@example.com")
    key = (await services.keys.list_for(alice.id))[0]
    quota = await services.store.get_quota(key.id)
    assert quota is not None
    assert quota.limits == ("slow",)
    await services.store.set_quota(
        KeyQuota(key.id, ("slow",), 42, "daily", 50), Audit("test", "key.quota", "k")
    )
    page = await (await client.get("/account/api-keys")).text()
    assert "slow (2/m)" in page
    assert "42 left, refilled daily" in page


async def test_a_limit_above_the_ceiling_is_refused_with_a_readable_page(client: Any) -> None:
    """A forged `fast` choice: 422 with the reason on the form page, and no key."""
    _, response = await _create(client, label="x", limit="fast", permission=["demo.reports.read"])
    assert response.status == 422
    assert "above what the owner" in (await response.text()).replace("&#39;", "'")
    services = client.app[SERVICES]
    alice = await services.users.find("alice@example.com")
    assert await services.keys.list_for(alice.id) == []
