"""What the consent page offers and what a consent grants (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.pages.authorize_request import AuthorizeRequest
from gateway.pages.consent import ConsentRefused, Granted, consent_view, decide, replaceable
from gateway.pages.redirect_url import Redirect
from gateway.policy.model import Catalog, Perm, PermissionDef
from gateway.store.base import ApiKey, Resource

CATALOG = Catalog.build(
    [
        PermissionDef("shop.invoices.view", "View invoices", scope="store"),
        PermissionDef("shop.settings", "Settings", scope="store", implies=("shop.invoices.view",)),
        PermissionDef("shop.reports", "Reports"),
    ],
    {"store": "Store"},
)
STORES = [Resource("store", "S1", "One"), Resource("store", "S2", "Two")]
VIEW, REPORTS, SETTINGS = Perm("shop.invoices.view"), Perm("shop.reports"), Perm("shop.settings")
NOW = datetime(2030, 1, 1, tzinfo=UTC)
APP = Redirect("https://app.example/cb", "https://app.example")


def request(*perms: Perm, strict: bool = True, selective: bool = False) -> AuthorizeRequest:
    return AuthorizeRequest(
        application_name="App",
        redirect=APP,
        application_identifier="app",
        permissions=perms,
        strict=strict,
        selective_stores=selective,
    )


def test_strict_grants_exactly_the_request_whatever_the_form_says() -> None:
    """Under strict the form's permission fields are ignored."""
    out = decide(
        request(VIEW),
        [SETTINGS, REPORTS],
        CATALOG,
        STORES,
        chosen_permissions=["shop.reports", "unrestricted"],
        chosen_stores=[],
    )
    assert out == Granted((VIEW,))


def test_strict_with_a_permission_the_user_lacks_is_blocked() -> None:
    """A requested permission the user does not hold blocks a strict consent."""
    req = request(VIEW, REPORTS)
    view = consent_view(req, [VIEW], CATALOG, STORES)
    assert view.blocked
    assert view.unavailable == (REPORTS,)
    out = decide(req, [VIEW], CATALOG, STORES, chosen_permissions=[], chosen_stores=[])
    assert isinstance(out, ConsentRefused)


def test_non_strict_may_remove_and_add_held_permissions_only() -> None:
    """strict=false: the user's choices count, within what he holds."""
    req = request(VIEW, strict=False)
    view = consent_view(req, [SETTINGS, REPORTS], CATALOG, STORES)
    assert not view.blocked
    assert {o.perm for o in view.extra} == {SETTINGS, REPORTS}
    out = decide(
        req,
        [SETTINGS, REPORTS],
        CATALOG,
        STORES,
        chosen_permissions=["shop.reports"],
        chosen_stores=[],
    )
    assert out == Granted((REPORTS,))
    refused = decide(
        req, [VIEW], CATALOG, STORES, chosen_permissions=["unrestricted"], chosen_stores=[]
    )
    assert isinstance(refused, ConsentRefused)


def test_selective_stores_scopes_store_permissions_to_the_chosen_stores() -> None:
    """selectiveStores: store permissions are granted per chosen store, others unchanged."""
    req = request(VIEW, REPORTS, selective=True)
    out = decide(
        req, [VIEW, REPORTS], CATALOG, STORES, chosen_permissions=[], chosen_stores=["S2", "S9"]
    )
    assert out == Granted((REPORTS, Perm("shop.invoices.view", "S2")))
    none = decide(req, [VIEW, REPORTS], CATALOG, STORES, chosen_permissions=[], chosen_stores=[])
    assert isinstance(none, ConsentRefused)


def test_selective_stores_offers_only_stores_the_user_holds() -> None:
    """A user holding a store permission on S1 only may pick S1, not S2."""
    held = [Perm("shop.invoices.view", "S1")]
    req = request(VIEW, selective=True)
    view = consent_view(req, held, CATALOG, STORES)
    assert not view.blocked
    assert [(s.id, s.available) for s in view.stores] == [("S1", True), ("S2", False)]
    assert decide(req, held, CATALOG, STORES, chosen_permissions=[], chosen_stores=["S1"]) == (
        Granted((Perm("shop.invoices.view", "S1"),))
    )
    assert isinstance(
        decide(req, held, CATALOG, STORES, chosen_permissions=[], chosen_stores=["S2"]),
        ConsentRefused,
    )


def key(**changes: object) -> ApiKey:
    values: dict[str, object] = {
        "id": "apk_0000000000000001",
        "key_hash": b"x",
        "user_id": "u",
        "label": "App",
        "permissions": ("shop.settings",),
        "path_rule": None,
        "status": "active",
        "created_at": NOW - timedelta(days=1),
        "application_identifier": "app",
        "redirect_origin": "https://app.example",
    }
    values.update(changes)
    return ApiKey(**values)  # type: ignore[arg-type]


def test_replaceable_needs_same_identifier_origin_and_covering_permissions() -> None:
    """Only an active key of the same app and origin that covers the request matches."""
    req = request(VIEW)
    assert replaceable([key()], req, CATALOG, NOW) is not None
    assert replaceable([key(redirect_origin="https://evil.example")], req, CATALOG, NOW) is None
    assert replaceable([key(application_identifier="other")], req, CATALOG, NOW) is None
    assert replaceable([key(permissions=("shop.reports",))], req, CATALOG, NOW) is None
    assert replaceable([key(status="disabled")], req, CATALOG, NOW) is None
    assert replaceable([key(expires_at=NOW)], req, CATALOG, NOW) is None
