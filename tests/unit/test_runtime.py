"""The pure parts of the runtime: the master's restart back-off, the policy digest that
/readyz shows, and `adopt` (which upstream objects a reload keeps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy.loader import load_policy
from gateway.policy.model import Policy, Upstream
from gateway.reload import adopt
from gateway.settings import Settings
from gateway.supervisor import BACKOFF_FIRST, BACKOFF_MAX, STOP_GRACE, backoff

POLICY = """
permissions:
  - {{name: t.read, title: "{title}"}}
upstreams:
{upstreams}
routes:
  - {{path: /r/**, upstream: u0, permission: t.read}}
"""
TITLES = st.text(st.characters(codec="utf-8", categories=("L", "N")), min_size=1, max_size=20)
PORTS = st.lists(st.integers(1, 65535), min_size=1, max_size=4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policy")


def _load(folder: Path, title: str, ports: list[int]) -> Policy:
    """The policy from one file, always at the same path (its name is part of the digest)."""
    upstreams = "\n".join(
        f'  u{i}: {{url: "http://127.0.0.1:{port}"}}' for i, port in enumerate(ports)
    )
    path = folder / "policy.yaml"
    path.write_text(POLICY.format(title=title, upstreams=upstreams), encoding="utf-8")
    return load_policy([path])


@given(st.integers(0, 10_000))
def test_the_back_off_grows_to_its_cap(failures: int) -> None:
    """Starts at BACKOFF_FIRST, never shrinks with more failures, never exceeds the cap."""
    assert backoff(0) == BACKOFF_FIRST
    assert BACKOFF_FIRST <= backoff(failures) <= BACKOFF_MAX
    assert backoff(failures + 1) >= backoff(failures)


@given(TITLES, TITLES)
def test_the_digest_tells_contents_apart(folder: Path, first: str, second: str) -> None:
    """The same files give the same digest; any change to them gives another."""
    one, two = _load(folder, first, [1]), _load(folder, second, [1])
    assert (one.digest == two.digest) is (first == second)
    assert len(one.digest) == 64


@given(PORTS, PORTS)
def test_adopt_keeps_exactly_the_unchanged_upstreams(
    folder: Path, before: list[int], after: list[int]
) -> None:
    """An upstream equal to the old one under its name is the old object; any other is new."""
    old, new = _load(folder, "t", before), _load(folder, "t", after)
    adopted = adopt(old, new)
    for name, upstream in adopted.upstreams.items():
        previous: Upstream | None = old.upstreams.get(name)
        assert upstream == new.upstreams[name]
        assert (upstream is previous) is (previous == upstream)
    assert adopted.routes is new.routes
    assert adopted.digest == new.digest


def test_the_systemd_unit_reloads_with_sighup_and_outwaits_the_drain() -> None:
    """deploy/keygate.service: `systemctl reload` sends SIGHUP to the master, and systemd
    waits longer than the default drain plus the master's grace before SIGKILL."""
    unit = Path(__file__).resolve().parents[2] / "deploy" / "keygate.service"
    entries = dict(line.split("=", 1) for line in unit.read_text().splitlines() if "=" in line[:40])
    assert entries["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert float(entries["TimeoutStopSec"]) > Settings().shutdown_timeout + STOP_GRACE
