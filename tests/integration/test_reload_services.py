"""`reload_policy` on real services (SQLite): what is cached follows the new policy, a
decision waiting for its lookup keeps the policy it started under, a broken file changes
nothing, and unchanged upstreams keep their objects (and so their connection pools)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from gateway import reload
from gateway.policy.loader import PolicyError
from gateway.proxy.decision import Allowed, HeaderValues, NeedsLookup, Refused, decide
from gateway.proxy.handler import finish
from gateway.services import Services, open_services
from tests.conftest import make_settings
from tests.integration.test_auth_support import new_key, new_user

CATALOG = """
permissions:
  - {{name: t.read, title: Read}}
  - {{name: t.admin, title: Administer{implies}}}
upstreams:
  main: {{url: "http://127.0.0.1:9"}}
  other: {{url: "{other}"}}
routes:
  - {{path: /r/**, upstream: main, permission: t.read}}
{extra}
"""


def policy_text(
    *, implies: bool = False, other: str = "http://127.0.0.1:10", extra: str = ""
) -> str:
    return CATALOG.format(
        implies=", implies: [t.read]" if implies else "", other=other, extra=extra
    )


@pytest.fixture
async def served(tmp_path: Path, sqlite_url: str) -> AsyncIterator[tuple[Services, Path]]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text())
    async with open_services(make_settings(sqlite_url, policy=(policy,))) as services:
        yield services, policy


def _headers(key: str) -> HeaderValues:
    def values(name: str) -> Sequence[str]:
        return [key] if name == "X-API-KEY" else []

    return values


async def _admin_key(services: Services) -> str:
    owner = await new_user(services, "ops@example.com", ["t.admin"], password=None)
    return (await new_key(services, owner, ["t.admin"])).text


def _peer() -> str:
    return "127.0.0.1"


async def test_a_cached_key_is_judged_by_the_new_catalog_without_a_lookup(
    served: tuple[Services, Path],
) -> None:
    """t.admin gains `implies: [t.read]`: the key cached before the reload is allowed on a
    t.read route at once, from memory (no database lookup)."""
    services, policy = served
    key = await _admin_key(services)
    await services.verifier.verify(key)  # cached now
    lookups = services.verifier.lookups
    before = decide(services.policy, services.verifier, "GET", "/r/x", _headers(key), _peer)
    assert isinstance(before, Refused)
    assert before.outcome == "missing-permission"

    policy.write_text(policy_text(implies=True))
    assert await reload.reload_policy(services) is True
    after = decide(services.policy, services.verifier, "GET", "/r/x", _headers(key), _peer)
    assert isinstance(after, Allowed)
    assert services.verifier.lookups == lookups


async def test_a_decision_waiting_for_its_lookup_keeps_its_policy(
    served: tuple[Services, Path],
) -> None:
    """A request that started under policy A (its key not cached) and is finished after the
    swap to B (which drops its route) is still decided under A."""
    services, policy = served
    owner = await new_user(services, "reader@example.com", ["t.read"], password=None)
    key = (await new_key(services, owner, ["t.read"])).text
    needs = decide(services.policy, services.verifier, "GET", "/r/x", _headers(key), _peer)
    assert isinstance(needs, NeedsLookup)

    policy.write_text(
        policy_text().replace("  - {path: /r/**, upstream: main, permission: t.read}\n", "")
    )
    assert await reload.reload_policy(services) is True
    assert services.policy.match("GET", "/r/x") is None
    finished = await finish(services, needs, _headers(key), "127.0.0.1")
    assert isinstance(finished, Allowed)
    assert finished.route.path == "/r/**"


async def test_a_broken_policy_changes_nothing_and_is_counted(
    served: tuple[Services, Path],
) -> None:
    """A file that does not validate: PolicyError, the same policy object and load time,
    one more failure counted."""
    services, policy = served
    active, loaded, failed = services.policy, services.policy_loaded_at, reload.COUNTS.failed
    policy.write_text(policy_text(extra="  - {path: /y, upstream: missing}"))
    with pytest.raises(PolicyError, match="missing"):
        await reload.reload_policy(services)
    assert services.policy is active
    assert services.policy_loaded_at == loaded
    assert reload.COUNTS.failed == failed + 1


async def test_an_unchanged_policy_is_not_swapped(served: tuple[Services, Path]) -> None:
    """Reloading the same files: False, and the active policy object stays."""
    services, _ = served
    active, succeeded = services.policy, reload.COUNTS.succeeded
    assert await reload.reload_policy(services) is False
    assert services.policy is active
    assert reload.COUNTS.succeeded == succeeded


async def test_unchanged_upstreams_keep_their_objects(served: tuple[Services, Path]) -> None:
    """Only the upstream whose URL changed is a new object: pools are kept by object."""
    services, policy = served
    old = services.policy.upstreams
    policy.write_text(policy_text(other="http://127.0.0.1:11"))
    assert await reload.reload_policy(services) is True
    new = services.policy.upstreams
    assert new["main"] is old["main"]
    assert new["other"] is not old["other"]
    assert new["other"].url == "http://127.0.0.1:11"
