"""`gateway keys create --limit` and `gateway keys quota`: a key's own limits and credits from
the command line, with one-line errors and a non-zero exit for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import Gateway, base_env, create_user, fails, ok, runner

POLICY = """
permissions:
  - {name: demo.read, title: Read}
upstreams:
  demo: {url: "http://127.0.0.1:9"}
limits:
  slow: 2/m
  ceiling: 10/m
  fast: 100/s
key_limits: {max: ceiling}
routes:
  - {path: /api/**, upstream: demo, permission: demo.read}
"""


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = base_env(tmp_path, f"sqlite:///{tmp_path / 'db'}")
    env["GATEWAY_POLICY"] = str(policy)
    return runner(tmp_path, env)


def new_key(gateway: Gateway, *flags: str) -> str:
    create_user(gateway, "u@example.com", "--grant", "demo.read")
    ok(gateway("keys", "create", "--user", "u@example.com", "--permission", "demo.read", *flags))
    listed = ok(gateway("keys", "list", "--user", "u@example.com"))
    return listed.split()[0]


def test_create_with_a_limit_and_show_it(gateway: Gateway) -> None:
    """`--limit slow` at creation: `keys quota` shows it, and no credits."""
    key_id = new_key(gateway, "--limit", "slow")
    shown = ok(gateway("keys", "quota", key_id))
    assert f"{key_id}  limits: slow" in shown
    assert "credits: none" in shown


def test_create_with_a_limit_above_the_ceiling_fails_and_makes_no_key(gateway: Gateway) -> None:
    """`--limit fast` (above key_limits.max): one line naming it, exit non-zero, no key."""
    create_user(gateway, "u@example.com", "--grant", "demo.read")
    result = gateway(
        "keys", "create", "--user", "u@example.com", "--permission", "demo.read", "--limit", "fast"
    )
    fails(result, "--limit", "'fast'", "above what the owner's keys may carry")
    assert ok(gateway("keys", "list", "--user", "u@example.com")).strip() == ""


def test_set_credits_and_refill_then_remove(gateway: Gateway) -> None:
    """`--credits 500 --refill daily --refill-amount 500 --refill-mode add` is shown back;
    `--no-credits` removes them; `--no-limits` the limits."""
    key_id = new_key(gateway, "--limit", "slow")
    shown = ok(
        gateway(
            "keys",
            "quota",
            key_id,
            "--credits",
            "500",
            "--refill",
            "daily",
            "--refill-amount",
            "500",
            "--refill-mode",
            "add",
        )
    )
    assert "credits: 500 left, refill daily 500 (add)" in shown
    shown = ok(gateway("keys", "quota", key_id, "--no-credits", "--no-limits"))
    assert "limits: none of its own" in shown
    assert "credits: none" in shown


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--credits", "-5"), ("--credits", "from 0")),
        (("--credits", "99999999999"), ("--credits", "from 0")),
        (("--credits", "5", "--refill", "daily"), ("--credits", "needs its amount")),
        (("--limit", "nope"), ("--limit", "unknown limit 'nope'")),
        (("--credits", "ten"), ("invalid int value",)),
    ],
)
def test_bad_quota_input_is_one_line(
    gateway: Gateway, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    """Negative, huge, non-numeric credits, a refill without amount, an unknown limit."""
    key_id = new_key(gateway)
    fails(gateway("keys", "quota", key_id, *args), *fragments)
