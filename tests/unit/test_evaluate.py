"""The authorization decision: principal, route and canonical path in, Permitted or a Denied with
its reason out. Pure: no I/O, no fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import denial_error
from gateway.policy.evaluate import (
    Denied,
    Permitted,
    Principal,
    authorize,
    owner_grants,
    route_for,
)
from gateway.policy.loader import load_policy
from gateway.policy.model import (
    UNRESTRICTED,
    Catalog,
    Perm,
    PermissionDef,
    Requirement,
    Route,
    RouteMatch,
)
from gateway.policy.pathrule import parse_path_rule

EXAMPLE = Path(__file__).resolve().parents[2] / "policies" / "example.yaml"
VIEW = "shop.store.canviewinvoices"
MODIFY = "shop.store.canmodifystoresettings"
REPORTS = "shop.reports.read"

CATALOG = Catalog.build(
    [
        PermissionDef(VIEW, "View invoices", scope="store"),
        PermissionDef(MODIFY, "Modify store", implies=(VIEW,), scope="store"),
        PermissionDef(REPORTS, "Reports"),
    ],
    {"store": "Store"},
)

PUBLIC = Route("/public/**", ("*",), "shop", None, auth_none=True)
REPORTS_ROUTE = Route("/api/reports/**", ("GET",), "shop", Requirement(REPORTS))
INVOICES = Route(
    "/api/v1/stores/{storeId}/invoices",
    ("GET",),
    "shop",
    Requirement(VIEW, resource_param="storeId"),
)
STORE = Route(
    "/api/v1/stores/{storeId}/**", ("*",), "shop", Requirement(MODIFY, resource_param="storeId")
)
FIXED = Route("/api/main/invoices", ("GET",), "shop", Requirement(VIEW, resource="S1"))


def invoices(store: str) -> tuple[RouteMatch, str]:
    return RouteMatch(INVOICES, {"storeId": store}), f"/api/v1/stores/{store}/invoices"


def reports(path: str = "/api/reports/daily") -> tuple[RouteMatch, str]:
    return RouteMatch(REPORTS_ROUTE, {}), path


def key(
    grants: list[str],
    permissions: list[str] | None,
    *,
    path_rule: str | None = None,
    is_admin: bool = False,
) -> Principal:
    """A principal as the verifier builds it: owner grants, key permissions, path rule."""
    return Principal.of(
        user_id="u1",
        email="u1@example.com",
        grants=owner_grants(CATALOG, grants, is_admin=is_admin),
        key_id="apk_0123456789abcdef" if permissions is not None else None,
        key_permissions=CATALOG.parse_all(permissions) if permissions is not None else None,
        path_rule=parse_path_rule(path_rule) if path_rule is not None else None,
        is_admin=is_admin,
        via="key" if permissions is not None else "password",
    )


def decide(principal: Principal | None, target: tuple[RouteMatch, str]) -> Permitted | Denied:
    match, path = target
    return authorize(principal, match, path, CATALOG)


# ---- authentication --------------------------------------------------------------------


def test_auth_none_route_needs_no_principal() -> None:
    """An `auth: none` route is allowed with no credential at all, and with a weak one."""
    match = RouteMatch(PUBLIC, {})
    assert isinstance(authorize(None, match, "/public/a", CATALOG), Permitted)
    assert isinstance(authorize(key([], []), match, "/public/a", CATALOG), Permitted)


def test_auth_none_ignores_the_key_path_rule() -> None:
    """A public route stays public even for a key limited to another path."""
    limited = key([REPORTS], [REPORTS], path_rule="/api/reports")
    assert isinstance(authorize(limited, RouteMatch(PUBLIC, {}), "/public/x", CATALOG), Permitted)


def test_protected_route_without_principal_is_401() -> None:
    """A protected route with no principal is denied as unauthenticated, status 401."""
    decision = decide(None, reports())
    assert isinstance(decision, Denied)
    assert (decision.reason, denial_error(decision).status, decision.allowed) == (
        "unauthenticated",
        401,
        False,
    )


# ---- path rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "allowed"),
    [
        ("/api/reports", "/api/reports/daily", True),
        ("/api/reports", "/api/reports", True),
        ("/api/reports", "/api/reportsX", False),
        ("/api/reports/daily", "/api/reports/daily/2024", True),
        ("/api/reports/daily", "/api/reports/weekly", False),
        ("=/api/reports/daily", "/api/reports/daily", True),
        ("=/api/reports/daily", "/api/reports/daily/2024", False),
        ("=/api/reports/daily", "/api/reports/daily/", False),
        ("/", "/api/reports/anything", True),
    ],
)
def test_path_rule_prefix_and_exact(rule: str, path: str, allowed: bool) -> None:
    """A key's path rule admits its prefix on whole segments, or exactly one path."""
    decision = decide(key([REPORTS], [REPORTS], path_rule=rule), reports(path))
    assert decision.allowed is allowed
    if not allowed:
        assert isinstance(decision, Denied)
        assert (decision.reason, denial_error(decision).status) == ("path-not-allowed", 403)
        assert rule in decision.detail


def test_path_rule_is_checked_before_the_permission() -> None:
    """Outside its path a key is refused for the path, even if it also lacks the permission."""
    decision = decide(key([], [], path_rule="/elsewhere"), reports())
    assert isinstance(decision, Denied)
    assert decision.reason == "path-not-allowed"


# ---- permissions ------------------------------------------------------------------------


def test_allowed_carries_the_route_and_its_parameters() -> None:
    """Permitted names the route and the path parameters it bound."""
    decision = decide(key([VIEW], [VIEW]), invoices("S1"))
    assert isinstance(decision, Permitted)
    assert decision.route is INVOICES
    assert decision.params == {"storeId": "S1"}


def test_missing_permission_names_it() -> None:
    """Without the route's permission the denial is 403 and names the permission."""
    decision = decide(key([REPORTS, VIEW], [VIEW]), reports())
    assert isinstance(decision, Denied)
    assert (decision.reason, denial_error(decision).status) == ("missing-permission", 403)
    assert decision.missing == Perm(REPORTS)
    assert REPORTS in decision.detail


@pytest.mark.parametrize(
    ("held", "store", "allowed"),
    [
        (f"{VIEW}:S1", "S1", True),
        (f"{VIEW}:S1", "S2", False),
        (f"{VIEW}:S1", "s1", False),
        (VIEW, "S2", True),
        (f"{MODIFY}:S1", "S1", True),
        (f"{MODIFY}:S2", "S1", False),
        (MODIFY, "S7", True),
    ],
)
def test_scoped_permission_binds_the_path_parameter(held: str, store: str, allowed: bool) -> None:
    """`{storeId}` in the requirement is the store in the path; the scope must match it."""
    decision = decide(key([held], [held]), invoices(store))
    assert decision.allowed is allowed
    if not allowed:
        assert isinstance(decision, Denied)
        assert decision.missing == Perm(VIEW, store)
        assert f"{VIEW}:{store}" in decision.detail


def test_fixed_resource_requirement() -> None:
    """A requirement with a literal resource needs that resource (or an unscoped grant)."""
    match = RouteMatch(FIXED, {})
    assert authorize(key([f"{VIEW}:S1"], [f"{VIEW}:S1"]), match, FIXED.path, CATALOG).allowed
    denied = authorize(key([f"{VIEW}:S2"], [f"{VIEW}:S2"]), match, FIXED.path, CATALOG)
    assert isinstance(denied, Denied)
    assert denied.missing == Perm(VIEW, "S1")


def test_owner_grants_narrower_than_the_key_limit_it() -> None:
    """A key holding all stores works only for the stores its owner holds."""
    principal = key([f"{VIEW}:S1"], [VIEW])
    assert decide(principal, invoices("S1")).allowed
    denied = decide(principal, invoices("S2"))
    assert isinstance(denied, Denied)
    assert denied.missing == Perm(VIEW, "S2")


def test_key_never_widens_its_owner() -> None:
    """A key's permission the owner no longer holds grants nothing."""
    assert not decide(key([], [REPORTS]), reports()).allowed
    principal = key([VIEW], [MODIFY])
    assert decide(principal, invoices("S1")).allowed  # both hold VIEW (MODIFY implies it)
    store_settings = RouteMatch(STORE, {"storeId": "S1"})
    denied = authorize(principal, store_settings, "/api/v1/stores/S1/settings", CATALOG)
    assert isinstance(denied, Denied)
    assert denied.missing == Perm(MODIFY, "S1")


def test_key_narrows_its_owner() -> None:
    """An owner holding more than his key gets only what the key says."""
    principal = key([MODIFY, REPORTS], [f"{VIEW}:S1"])
    assert decide(principal, invoices("S1")).allowed
    assert not decide(principal, invoices("S2")).allowed
    assert not decide(principal, reports()).allowed
    store_settings = RouteMatch(STORE, {"storeId": "S1"})
    assert not authorize(principal, store_settings, "/api/v1/stores/S1/settings", CATALOG).allowed


def test_password_principal_is_limited_by_grants_only() -> None:
    """Without a key (password or session) the user's own grants decide."""
    principal = key([f"{MODIFY}:S1"], None)
    assert decide(principal, invoices("S1")).allowed
    assert not decide(principal, invoices("S2")).allowed
    assert not decide(principal, reports()).allowed


def test_admin_holds_unrestricted() -> None:
    """An admin's key with `unrestricted` passes every requirement, on every store."""
    admin = key([], [UNRESTRICTED], is_admin=True)
    assert decide(admin, invoices("S1")).allowed
    assert decide(admin, invoices("any-store")).allowed
    assert decide(admin, reports()).allowed
    match = RouteMatch(STORE, {"storeId": "S9"})
    assert authorize(admin, match, "/api/v1/stores/S9/x", CATALOG).allowed


def test_admin_key_is_still_limited_by_its_permissions() -> None:
    """An admin's narrow key does only what it says; a non-admin's `unrestricted` key nothing more
    than his grants."""
    narrow = key([], [f"{VIEW}:S1"], is_admin=True)
    assert decide(narrow, invoices("S1")).allowed
    assert not decide(narrow, reports()).allowed
    not_admin = key([REPORTS], [UNRESTRICTED])
    assert decide(not_admin, reports()).allowed
    assert not decide(not_admin, invoices("S1")).allowed


def test_route_without_requirement_is_denied() -> None:
    """A protected route with no requirement (the loader forbids it) is denied, never allowed."""
    broken = Route("/x", ("GET",), "shop", None)
    decision = authorize(
        key([], [UNRESTRICTED], is_admin=True), RouteMatch(broken, {}), "/x", CATALOG
    )
    assert isinstance(decision, Denied)
    assert decision.reason == "no-requirement"


# ---- principal helpers ------------------------------------------------------------------


def test_owner_grants_drop_stale_grants_and_add_unrestricted_for_admins() -> None:
    """Grants the catalog no longer knows are dropped; admins also hold `unrestricted`."""
    assert owner_grants(CATALOG, [REPORTS, "gone.perm", f"{VIEW}:S1", REPORTS], is_admin=False) == (
        Perm(REPORTS),
        Perm(VIEW, "S1"),
    )
    assert owner_grants(CATALOG, [], is_admin=True) == (Perm(UNRESTRICTED),)


def test_effective_and_missing() -> None:
    """effective is the key's permissions the owner holds; missing what it could not hand on."""
    principal = key([f"{VIEW}:S1", REPORTS], [VIEW, REPORTS])
    assert principal.effective(CATALOG) == (Perm(REPORTS),)
    assert principal.missing(CATALOG, [Perm(VIEW, "S1"), Perm(VIEW, "S2"), Perm(REPORTS)]) == (
        Perm(VIEW, "S2"),
    )
    password = key([REPORTS], None)
    assert password.effective(CATALOG) == (Perm(REPORTS),)


# ---- routing ------------------------------------------------------------------------------


def test_route_for_unrouted_path_is_404() -> None:
    """A path no route matches is denied with 404: nothing is forwarded by default."""
    policy = load_policy([EXAMPLE])
    decision = route_for("GET", "/nowhere", policy)
    assert isinstance(decision, Denied)
    assert (decision.reason, denial_error(decision).status) == ("no-route", 404)
    wrong_method = route_for("DELETE", "/api/reports/daily", policy)
    assert isinstance(wrong_method, Denied)
    assert denial_error(wrong_method).status == 404


def test_route_for_then_authorize_on_the_example_policy() -> None:
    """The example policy's invoices route binds the store from the path."""
    policy = load_policy([EXAMPLE])
    match = route_for("GET", "/api/v1/stores/S1/invoices", policy)
    assert isinstance(match, RouteMatch)
    assert match.params == {"storeId": "S1"}
    principal = Principal.of(
        user_id="u1",
        email="u1@example.com",
        grants=owner_grants(policy.catalog, ["demo.store.canviewinvoices:S1"], is_admin=False),
        key_id="apk_0123456789abcdef",
        key_permissions=(Perm("demo.store.canviewinvoices", "S1"),),
    )
    assert authorize(principal, match, "/api/v1/stores/S1/invoices", policy.catalog).allowed
    other = route_for("GET", "/api/v1/stores/S2/invoices", policy)
    assert isinstance(other, RouteMatch)
    assert not authorize(principal, other, "/api/v1/stores/S2/invoices", policy.catalog).allowed
