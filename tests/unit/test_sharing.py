"""Shared parts of cached keys (gateway.keys.sharing): keys that hold equal values hold one
copy, and a cached key built from shared parts decides exactly as a principal built alone."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys.sharing import Sharing
from gateway.keys.state import KeyState, principal_for, verified_key
from gateway.policy.loader import load_policy
from gateway.policy.model import Perm

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
POLICY = load_policy([EXAMPLE])
CATALOG = POLICY.catalog


def state(key_id: str, owner: str, permissions: tuple[str, ...], rule: str | None) -> KeyState:
    # "".join: new string objects each time, as a database row gives them
    return KeyState(
        key_id=key_id,
        user_id="".join(["user-", owner]),
        email="".join([owner, "@example.com"]),
        label="".join(["label ", key_id]),
        status="".join(["act", "ive"]),
        expires_at=None,
        owner_disabled=False,
        is_admin=False,
        permissions=tuple("".join([p]) for p in permissions),
        grants=tuple(
            "".join([p]) for p in ("demo.reports.read", "demo.store.canmodifystoresettings")
        ),
        path_rule=rule,
    )


def test_keys_of_one_owner_share_their_owners_parts() -> None:
    """Two keys of one owner with equal permissions share one authority (strings, tuples,
    parsed grants and permissions, path rule, decision memo) and one set of facts; their own
    ids stay their own."""
    sharing = Sharing(CATALOG)
    perms = ("demo.reports.read",)
    a = verified_key(state("apk_a", "o1", perms, "/api"), CATALOG, sharing)
    b = verified_key(state("apk_b", "o1", perms, "/api"), CATALOG, sharing)
    assert a.authority is b.authority
    assert a.facts is b.facts
    assert a.facts.permissions == perms
    assert a.facts.status == "active"
    assert (a.key_id, b.key_id) == ("apk_a", "apk_b")
    # Equal values from different rows: the second key holds the first key's objects.
    c = verified_key(state("apk_c", "o1", ("demo.legacy.access",), None), CATALOG, sharing)
    assert c.authority is not a.authority  # other permissions, no path rule
    assert c.user_id is a.user_id
    assert c.email is a.email
    assert c.grants is a.grants
    assert c.facts.grants is a.facts.grants
    other = verified_key(state("apk_d", "o2", perms, "/api"), CATALOG, sharing)
    assert other.authority is not a.authority  # another owner
    assert other.key_permissions is a.key_permissions
    assert other.path_rule is a.path_rule
    assert other.authority._memo is a.authority._memo  # same grants and permissions


def test_the_table_starts_afresh_past_its_limit() -> None:
    """Past `limit` values the table is emptied: later values are no longer shared with
    earlier ones, and nothing else changes."""
    sharing = Sharing(CATALOG, limit=2)
    first = sharing.one("".join(["x", "1"]))
    sharing.one("y")
    sharing.one("z")  # the limit is reached: a fresh table
    again = sharing.one("".join(["x", "1"]))
    assert again == first
    assert again is not first


perm_texts = st.lists(
    st.sampled_from(
        ["demo.reports.read", "demo.store.canviewinvoices:S1", "demo.legacy.access", "no.such"]
    ),
    max_size=3,
).map(tuple)
needs = st.sampled_from(
    [
        Perm("demo.reports.read"),
        Perm("demo.store.canviewinvoices", "S1"),
        Perm("demo.store.canviewinvoices", "S2"),
        Perm("demo.legacy.access"),
    ]
)


@given(
    st.lists(st.tuples(st.sampled_from(["o1", "o2"]), perm_texts), min_size=1, max_size=6),
    st.lists(needs, min_size=1, max_size=5),
)
@settings(max_examples=100, deadline=None)
def test_shared_principals_decide_as_unshared_ones(
    keys: list[tuple[str, tuple[str, ...]]], asked: list[Perm]
) -> None:
    """For any keys and questions, a cached key made of shared parts has the authority of
    the principal built on its own and answers every `may` alike, in any order of asking."""
    sharing = Sharing(CATALOG)
    for n, (owner, perms) in enumerate(keys):
        alone = principal_for(state(f"apk_{n}", owner, perms, None), CATALOG)
        shared = verified_key(state(f"apk_{n}", owner, perms, None), CATALOG, sharing)
        assert shared.authority == alone.authority
        assert shared.key_id == alone.key_id == f"apk_{n}"
        for need in asked:
            assert shared.may(CATALOG, need) == alone.may(CATALOG, need)
