"""Shared parts of cached keys (gateway.keys.sharing): keys that hold equal values hold one
copy, and a principal built from shared parts decides exactly as one built alone."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.keys.sharing import Sharing
from gateway.keys.state import KeyState, principal_for, shared_state
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
    """Two keys of one owner with equal permissions share strings, tuples, parsed grants,
    permissions and the decision memo; their own ids stay their own."""
    sharing = Sharing(CATALOG)
    perms = ("demo.reports.read",)
    a = shared_state(state("apk_a", "o1", perms, "/api"), sharing)
    b = shared_state(state("apk_b", "o1", perms, "/api"), sharing)
    assert a.user_id is b.user_id
    assert a.email is b.email
    assert a.grants is b.grants
    assert a.permissions is b.permissions
    assert a.status is b.status
    pa, pb = principal_for(a, CATALOG, sharing), principal_for(b, CATALOG, sharing)
    assert pa.grants is pb.grants
    assert pa.key_permissions is pb.key_permissions
    assert pa.path_rule is pb.path_rule
    assert pa._memo is pb._memo
    assert (pa.key_id, pb.key_id) == ("apk_a", "apk_b")


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
    """For any keys and questions, a principal made of shared parts equals the one built on
    its own and answers every `may` alike, in any order of asking."""
    sharing = Sharing(CATALOG)
    for n, (owner, perms) in enumerate(keys):
        alone = principal_for(state(f"apk_{n}", owner, perms, None), CATALOG)
        shared = principal_for(
            shared_state(state(f"apk_{n}", owner, perms, None), sharing), CATALOG, sharing
        )
        assert shared == alone
        for need in asked:
            assert shared.may(CATALOG, need) == alone.may(CATALOG, need)
