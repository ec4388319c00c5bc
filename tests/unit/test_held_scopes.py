"""Unscoped store permissions mean "every store the owner holds it on" (BTCPay's meaning).

Pure: the catalog's `beyond` and `held_on`, a principal's `missing` and `effective`, the
consent page's offers, store picker and replacement rule.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.pages.authorize_request import AuthorizeRequest
from gateway.pages.consent import Granted, consent_view, decide, picker_stores, replaceable
from gateway.pages.redirect_url import Redirect
from gateway.policy.evaluate import Principal
from gateway.policy.model import UNRESTRICTED, Catalog, Perm, PermissionDef
from gateway.store.base import ApiKey, Resource

VIEW, MODIFY, REPORTS, TEAM = "shop.invoices.view", "shop.settings", "shop.reports", "org.member"
DEFS = [
    PermissionDef(VIEW, "View invoices", scope="store"),
    PermissionDef(MODIFY, "Settings", scope="store", implies=(VIEW,)),
    PermissionDef(REPORTS, "Reports"),
    PermissionDef(TEAM, "Team member", scope="team"),
]
HELD = Catalog.build(DEFS, {"store": "Store", "team": "Team"}, held_types=["store"])
ALL = Catalog.build(DEFS, {"store": "Store", "team": "Team"})
OWNER = (Perm(MODIFY, "S1"), Perm(VIEW, "S2"), Perm(TEAM, "T1"))
APP = Redirect("https://app.example/cb", "https://app.example")
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def user(grants: tuple[Perm, ...] = OWNER) -> Principal:
    return Principal.of("u1", "owner@example.com", grants, via="session")


def test_owner_with_per_store_grants_may_grant_unscoped_store_permission() -> None:
    """Held on S1 and S2: the unscoped permission may go on a key; not when held nowhere."""
    assert HELD.beyond(OWNER, [Perm(VIEW)]) == ()
    assert HELD.beyond(OWNER, [Perm(MODIFY)]) == ()
    assert HELD.beyond((Perm(REPORTS),), [Perm(VIEW)]) == (Perm(VIEW),)
    assert user().missing(HELD, [Perm(VIEW), Perm(MODIFY)]) == ()


def test_unscoped_means_all_unless_the_type_says_held() -> None:
    """Without `unscoped: held` the old meaning stands: every store, so scoped grants fall short."""
    assert ALL.beyond(OWNER, [Perm(VIEW)]) == (Perm(VIEW),)
    assert user().missing(ALL, [Perm(VIEW)]) == (Perm(VIEW),)
    assert HELD.beyond(OWNER, [Perm(TEAM)]) == (Perm(TEAM),)  # team is not a held type


def test_held_on_lists_the_stores_in_grant_order_through_implication() -> None:
    """The stores where a scoped grant covers the permission, the implying ones included."""
    assert HELD.held_on(OWNER, VIEW) == ("S1", "S2")
    assert HELD.held_on(OWNER, MODIFY) == ("S1",)
    assert HELD.held_on(OWNER, REPORTS) == ()


def test_key_with_unscoped_permission_reaches_only_the_owners_stores() -> None:
    """Per request: S1 and S2 allowed (S2 view only), S3 refused; a key never exceeds its owner."""
    key = Principal.of("u1", "o@example.com", OWNER, key_id="k1", key_permissions=(Perm(VIEW),))
    assert key.may(HELD, Perm(VIEW, "S1"))
    assert key.may(HELD, Perm(VIEW, "S2"))
    assert not key.may(HELD, Perm(VIEW, "S3"))
    assert not key.may(HELD, Perm(MODIFY, "S1"))


def test_effective_names_the_stores_rather_than_all() -> None:
    """Identity headers say `view:S1, view:S2`, never an unscoped permission the owner lacks."""
    key = Principal.of("u1", "o@example.com", OWNER, key_id="k1", key_permissions=(Perm(VIEW),))
    assert key.effective(HELD) == (Perm(VIEW, "S1"), Perm(VIEW, "S2"))
    unscoped_owner = (Perm(VIEW),)
    key2 = Principal.of(
        "u1", "o@example.com", unscoped_owner, key_id="k2", key_permissions=(Perm(VIEW),)
    )
    assert key2.effective(HELD) == (Perm(VIEW),)


def test_key_scoped_to_one_store_cannot_mint_an_all_stores_key() -> None:
    """A key holding view:S1 only must not mint unscoped view reaching S2 through the owner."""
    scoped = Principal.of(
        "u1", "o@example.com", OWNER, key_id="k1", key_permissions=(Perm(VIEW, "S1"),)
    )
    assert scoped.missing(HELD, [Perm(VIEW)]) == (Perm(VIEW),)
    unscoped = Principal.of(
        "u1", "o@example.com", OWNER, key_id="k2", key_permissions=(Perm(VIEW),)
    )
    assert unscoped.missing(HELD, [Perm(VIEW)]) == ()


@given(
    grants=st.lists(
        st.tuples(st.sampled_from([VIEW, MODIFY, REPORTS]), st.sampled_from([None, "S1", "S2"])),
        max_size=5,
    ),
    store=st.sampled_from(["S1", "S2", "S3"]),
)
def test_unscoped_key_never_exceeds_owner(grants: list[tuple[str, str | None]], store: str) -> None:
    """Property: whatever the owner holds, an unscoped key reaches a store only where he does."""
    owner = tuple(Perm(n, r if n != REPORTS else None) for n, r in grants)
    key = Principal.of("u", "e", owner, key_id="k", key_permissions=(Perm(VIEW), Perm(MODIFY)))
    for name in (VIEW, MODIFY):
        need = Perm(name, store)
        assert key.may(HELD, need) == HELD.satisfies(owner, need)


def request(*perms: Perm, selective: bool = False, strict: bool = True) -> AuthorizeRequest:
    return AuthorizeRequest("App", APP, "app", perms, strict=strict, selective_stores=selective)


def test_consent_offers_unscoped_permission_naming_the_stores() -> None:
    """The page marks it available and says on which stores: "on the stores you manage"."""
    view = consent_view(request(Perm(VIEW), Perm(MODIFY)), OWNER, HELD, [])
    assert [(o.available, o.reach) for o in view.requested] == [
        (True, ("S1", "S2")),
        (True, ("S1",)),
    ]
    assert not view.blocked
    out = decide(request(Perm(VIEW)), OWNER, HELD, [], chosen_permissions=[], chosen_stores=[])
    assert out == Granted((Perm(VIEW),))


def test_consent_reach_is_empty_for_an_unscoped_holder() -> None:
    """Someone holding the permission unscoped reaches every store: no list is shown."""
    view = consent_view(request(Perm(VIEW)), [Perm(VIEW)], HELD, [])
    assert view.requested[0].reach == ()
    assert view.requested[0].available


def test_picker_lists_stores_from_grants_named_where_registered() -> None:
    """Stores come from the user's grants; names from registered resources, else the id."""
    registered = [Resource("store", "S1", "Main shop"), Resource("store", "S9", "Other")]
    assert picker_stores(OWNER, HELD, registered) == [
        Resource("store", "S1", "Main shop"),
        Resource("store", "S2", "S2"),
    ]


def test_picker_lists_every_registered_store_for_an_unscoped_holder() -> None:
    """An admin (or anyone holding a store permission unscoped) may pick any registered store."""
    registered = [Resource("store", "S1", "Main shop"), Resource("store", "S9", "Other")]
    ids = [r.id for r in picker_stores((Perm(UNRESTRICTED), Perm(VIEW, "S2")), HELD, registered)]
    assert ids == ["S1", "S9", "S2"]
    assert picker_stores((Perm(REPORTS),), HELD, registered) == []


def test_selective_consent_grants_on_picked_stores_from_grants() -> None:
    """With the picker fed from grants, an unregistered store can be picked and granted."""
    stores = picker_stores(OWNER, HELD, [])
    out = decide(
        request(Perm(VIEW), selective=True),
        OWNER,
        HELD,
        stores,
        chosen_permissions=[],
        chosen_stores=["S2"],
    )
    assert out == Granted((Perm(VIEW, "S2"),))


def _key(perms: tuple[str, ...]) -> ApiKey:
    return ApiKey(
        id="k1",
        key_hash=b"h",
        secret_fingerprint="f",
        user_id="u1",
        label="App",
        permissions=perms,
        path_rule=None,
        status="active",
        created_at=NOW,
        application_identifier="app",
        redirect_origin=APP.origin,
    )


def test_selective_reauthorization_offers_the_store_scoped_key_for_replacement() -> None:
    """An app's key made from an earlier store pick is replaceable like any other."""
    key = _key((f"{VIEW}:S1",))
    assert replaceable([key], request(Perm(VIEW), selective=True), HELD, NOW) == key
    # Without the picker an unscoped request is not covered by a one-store key.
    assert replaceable([key], request(Perm(VIEW)), HELD, NOW) is None
    # The store-scoped key must hold every selective permission on some store.
    assert replaceable([key], request(Perm(VIEW), Perm(MODIFY), selective=True), HELD, NOW) is None
