"""Policy files: YAML to a validated Policy, and every error naming file, entry and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.policy.loader import PolicyError, load_policy
from gateway.policy.model import UNRESTRICTED, Perm, Requirement

POLICIES = Path(__file__).resolve().parents[2] / "policies"

CATALOG = """
resource_types:
  store: Store
permissions:
  - name: shop.view
    title: View
    scope: store
  - name: shop.edit
    title: Edit
    scope: store
    implies: [shop.view]
  - name: shop.reports
    title: Reports
upstreams:
  shop:
    url: http://127.0.0.1:9000
"""


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def with_routes(routes: str) -> str:
    return CATALOG + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  ")


def error(*paths: Path) -> str:
    with pytest.raises(PolicyError) as info:
        load_policy(list(paths))
    return str(info.value)


# ---- what loads -------------------------------------------------------------------------


def test_minimal_policy_loads_with_defaults(tmp_path: Path) -> None:
    """A catalog, an upstream and a route load; omitted fields take their defaults."""
    path = write(
        tmp_path, with_routes("- {path: /api/**, upstream: shop, permission: shop.reports}")
    )
    policy = load_policy([path])
    up = policy.upstreams["shop"]
    assert (up.url, up.connect_timeout, up.read_timeout, up.pool_size) == (
        "http://127.0.0.1:9000",
        5.0,
        60.0,
        100,
    )
    (route,) = list(policy.routes)
    assert route.methods == ("*",)
    assert route.requirement == Requirement("shop.reports")
    assert not route.auth_none
    assert not route.allow_passwords
    assert not route.websocket


def test_route_source_and_policy_sources(tmp_path: Path) -> None:
    """Route.source names file and index; Policy.sources lists the files in order."""
    path = write(
        tmp_path,
        with_routes(
            """
            - {path: /a, upstream: shop, auth: none}
            - {path: /b, upstream: shop, auth: none}
            """
        ),
    )
    policy = load_policy([path])
    assert [r.source for r in policy.routes] == [f"{path}: routes[0]", f"{path}: routes[1]"]
    assert policy.sources == (str(path),)


def test_requirement_forms(tmp_path: Path) -> None:
    """`name`, `name:{param}` and `name:literal` become the matching Requirement."""
    path = write(
        tmp_path,
        with_routes(
            """
            - {path: "/s/{storeId}", upstream: shop, permission: "shop.view:{storeId}"}
            - {path: /fixed, upstream: shop, permission: "shop.view:S1"}
            - {path: /all, upstream: shop, permission: shop.view}
            """
        ),
    )
    reqs = [r.requirement for r in load_policy([path]).routes]
    assert reqs == [
        Requirement("shop.view", resource_param="storeId"),
        Requirement("shop.view", resource="S1"),
        Requirement("shop.view"),
    ]


def test_route_flags_and_methods(tmp_path: Path) -> None:
    """methods are upper-cased and deduplicated; passwords/websocket/auth none are read."""
    path = write(
        tmp_path,
        with_routes(
            """
            - path: /ws
              methods: [get, GET, post]
              upstream: shop
              permission: shop.reports
              passwords: true
              websocket: true
            - {path: /pub/**, upstream: shop, auth: none}
            """
        ),
    )
    ws, pub = load_policy([path]).routes
    assert ws.methods == ("GET", "POST")
    assert ws.allow_passwords
    assert ws.websocket
    assert pub.auth_none
    assert pub.requirement is None


def test_upstream_url_is_normalised(tmp_path: Path) -> None:
    """Scheme and host are lower-cased and a lone trailing `/` is dropped."""
    text = CATALOG.replace("http://127.0.0.1:9000", "HTTPS://Shop.Example:8443/")
    text = text.replace("url:", "connect_timeout: 1.5\n    pool_size: 7\n    url:")
    up = load_policy([write(tmp_path, text)]).upstreams["shop"]
    assert (up.url, up.connect_timeout, up.pool_size) == ("https://shop.example:8443", 1.5, 7)


def test_files_merge_across_files(tmp_path: Path) -> None:
    """A routes file may use permissions, types and upstreams declared in another file."""
    catalog = write(tmp_path, CATALOG, "a.yaml")
    routes = write(
        tmp_path,
        """
        permissions:
          - {name: shop.admin, title: Admin, implies: [shop.edit]}
        routes:
          - {path: "/x/{storeId}", upstream: shop, permission: "shop.edit:{storeId}"}
        """,
        "b.yaml",
    )
    policy = load_policy([catalog, routes])
    assert policy.catalog.grants(Perm("shop.admin"), Perm("shop.view", "S1"))
    assert policy.sources == (str(catalog), str(routes))


def test_folder_loads_yaml_and_yml_sorted(tmp_path: Path) -> None:
    """A folder reads its *.yaml and *.yml files in name order and ignores the rest."""
    write(tmp_path, "routes:\n  - {path: /b, upstream: shop, auth: none}\n", "b.yml")
    write(tmp_path, CATALOG, "a.yaml")
    write(tmp_path, "not: [valid", "c.txt")
    policy = load_policy([tmp_path])
    assert policy.sources == (str(tmp_path / "a.yaml"), str(tmp_path / "b.yml"))


def test_file_named_twice_loads_once(tmp_path: Path) -> None:
    """A file given directly and through its folder is read once, not reported as a clash."""
    path = write(tmp_path, CATALOG)
    assert load_policy([path, tmp_path]).sources == (str(path),)


def test_catalog_only_file_has_no_routes(tmp_path: Path) -> None:
    """A file with only permissions is a valid policy with zero routes."""
    path = write(tmp_path, "permissions:\n  - {name: a.b, title: A}\n")
    policy = load_policy([path])
    assert list(policy.routes) == []
    assert "a.b" in policy.catalog


def test_same_resource_type_twice_with_same_title(tmp_path: Path) -> None:
    """Two files may both declare `store: Store`."""
    a = write(tmp_path, "resource_types: {store: Store}\n", "a.yaml")
    b = write(tmp_path, "resource_types: {store: Store}\n", "b.yaml")
    assert load_policy([a, b]).catalog.resource_types == {"store": "Store"}


# ---- the shipped policies ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["btcpay-greenfield.yaml", "buckaroo.yaml", "example.yaml"])
def test_shipped_policy_loads(name: str) -> None:
    """Each file in policies/ loads on its own."""
    policy = load_policy([POLICIES / name])
    assert len(policy.catalog.permissions) > 3


def test_btcpay_and_example_load_together() -> None:
    """The BTCPay catalog and the example routes merge without name clashes."""
    policy = load_policy([POLICIES / "btcpay-greenfield.yaml", POLICIES / "example.yaml"])
    assert "btcpay.store.canviewinvoices" in policy.catalog
    assert "demo.store.canviewinvoices" in policy.catalog
    assert len(list(policy.routes)) == 5


def test_btcpay_catalog_matches_btcpay_hierarchy() -> None:
    """BTCPay's PolicyMap: modify store settings ⊃ view settings ⊃ view invoices, and so on."""
    catalog = load_policy([POLICIES / "btcpay-greenfield.yaml"]).catalog

    def grants(held: str, need: str) -> bool:
        return catalog.grants(Perm(held), Perm(need))

    modify = "btcpay.store.canmodifystoresettings"
    for child in (
        "btcpay.store.canviewstoresettings",
        "btcpay.store.canviewinvoices",
        "btcpay.store.cancreateinvoice",
        "btcpay.store.webhooks.canmodifywebhooks",
        "btcpay.store.canviewpullpayments",  # via managepullpayments -> create -> nonapproved
        "btcpay.store.canviewpayouts",
        "btcpay.store.canviewofferings",
        "btcpay.store.canviewlightninginvoice",
    ):
        assert grants(modify, child), child
    assert grants("btcpay.server.canmodifyserversettings", "btcpay.server.cancreateuser")
    assert grants(
        "btcpay.server.canmodifyserversettings",
        "btcpay.server.canviewlightninginvoiceinternalnode",
    )
    assert grants("btcpay.user.canmodifyprofile", "btcpay.user.canviewprofile")
    assert not grants("btcpay.store.canviewinvoices", modify)
    assert not grants("btcpay.store.canviewstoresettings", "btcpay.store.cancreateinvoice")
    assert not grants(modify, "btcpay.server.canmodifyserversettings")
    assert len(catalog.permissions) == 46  # v2.4.1, with its plugins' (test_btcpay_catalog.py)


def test_btcpay_store_permissions_scope_to_stores() -> None:
    """Every btcpay.store.* permission is scopable to a store; impersonation to a user; the
    others are not."""
    catalog = load_policy([POLICIES / "btcpay-greenfield.yaml"]).catalog
    for name, definition in catalog.permissions.items():
        expected = "store" if name.startswith("btcpay.store.") else None
        if name == "btcpay.impersonation.canimpersonate":
            expected = "user"
        assert definition.scope == expected, name
    held = Perm("btcpay.store.canmodifystoresettings", "S1")
    assert catalog.grants(held, Perm("btcpay.store.canviewinvoices", "S1"))
    assert not catalog.grants(held, Perm("btcpay.store.canviewinvoices", "S2"))


@pytest.mark.parametrize("name", ["btcpay-greenfield.yaml", "buckaroo.yaml", "example.yaml"])
def test_unrestricted_grants_everything(name: str) -> None:
    """`unrestricted` grants every permission of every shipped catalog."""
    catalog = load_policy([POLICIES / name]).catalog
    for permission in catalog.permissions:
        assert catalog.grants(Perm(UNRESTRICTED), Perm(permission)), permission


def test_buckaroo_write_implies_read() -> None:
    """Buckaroo scopes: X:write implies X:read; apikey:manage implies apikey:read only."""
    catalog = load_policy([POLICIES / "buckaroo.yaml"]).catalog
    for audience in ("sale", "transaction", "refund", "subscription", "payout"):
        assert catalog.grants(Perm(f"{audience}:write"), Perm(f"{audience}:read"))
        assert not catalog.grants(Perm(f"{audience}:read"), Perm(f"{audience}:write"))
    assert catalog.grants(Perm("apikey:manage"), Perm("apikey:read"))
    assert not catalog.grants(Perm("apikey:manage"), Perm("apikey:decrypt"))
    assert not catalog.grants(Perm("sale:write"), Perm("transaction:read"))
    assert catalog.parse("sale:read") == Perm("sale:read")


def test_example_routes_behave_as_commented() -> None:
    """The example's routes send each request where its comments say."""
    policy = load_policy([POLICIES / "example.yaml"])

    def requirement(method: str, path: str) -> str | None:
        found = policy.match(method, path)
        if found is None:
            return None
        if found.route.requirement is None:
            return "none"
        return str(found.route.requirement.bind(found.params))

    assert requirement("GET", "/public/logo.png") == "none"
    assert requirement("GET", "/api/v1/stores/S1/invoices") == "demo.store.canviewinvoices:S1"
    assert (
        requirement("POST", "/api/v1/stores/S1/invoices") == "demo.store.canmodifystoresettings:S1"
    )
    assert requirement("HEAD", "/api/reports/2024") == "demo.reports.read"
    assert requirement("DELETE", "/api/reports/2024") is None
    assert requirement("GET", "/nothing") is None
    legacy = policy.match("POST", "/legacy/orders")
    assert legacy is not None
    assert legacy.route.allow_passwords
    assert policy.upstreams["demo"].url == "http://127.0.0.1:8081"


# ---- file-level errors ------------------------------------------------------------------


def test_no_paths_is_an_error() -> None:
    """An empty list of policy paths is refused."""
    with pytest.raises(PolicyError, match="no policy files"):
        load_policy([])


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    """A path that does not exist is named."""
    missing = tmp_path / "nope.yaml"
    assert error(missing) == f"{missing}: no such file or folder"


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    """A folder without YAML files is refused."""
    assert "holds no .yaml or .yml files" in error(tmp_path)


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    """An empty file is refused, naming the file."""
    path = write(tmp_path, "# only a comment\n")
    assert error(path).startswith(f"{path}: file is empty")


def test_non_mapping_file_is_an_error(tmp_path: Path) -> None:
    """A file whose top level is not a mapping is refused."""
    path = write(tmp_path, "- a\n- b\n")
    assert error(path) == f"{path}: expected a mapping at the top level, got a list"


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    """A YAML syntax error names the file and the line."""
    path = write(tmp_path, "permissions:\n  - name: a\n    title: [unclosed\n")
    message = error(path)
    assert message.startswith(f"{path}: line ")
    assert "invalid YAML" in message


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    """A key repeated in one mapping is refused instead of silently overwritten."""
    path = write(
        tmp_path,
        """
        upstreams:
          shop: {url: "http://a"}
          shop: {url: "http://b"}
        """,
    )
    message = error(path)
    assert message.startswith(f"{path}: line 4")
    assert "duplicate key 'shop'" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """A misspelt section is refused with a suggestion."""
    path = write(tmp_path, CATALOG + "route: []\n")
    assert error(path) == f"{path}: unknown key 'route' (did you mean 'routes'?)"


def test_section_of_wrong_type(tmp_path: Path) -> None:
    """`permissions` must be a list."""
    path = write(tmp_path, "permissions: {a: b}\n")
    assert error(path) == f"{path}: permissions: expected a list, got a mapping"


# ---- permission errors ------------------------------------------------------------------


def test_unknown_key_in_permission(tmp_path: Path) -> None:
    """A misspelt permission field names the entry."""
    path = write(tmp_path, "permissions:\n  - {name: a.b, title: A, implys: []}\n")
    assert error(path) == (
        f"{path}: permissions[0] (a.b): unknown key 'implys' (did you mean 'implies'?)"
    )


def test_bad_permission_name(tmp_path: Path) -> None:
    """Names must match NAME_RE (lower-case, no spaces)."""
    path = write(tmp_path, "permissions:\n  - {name: Shop.View, title: A}\n")
    message = error(path)
    assert message.startswith(f"{path}: permissions[0] (Shop.View): bad permission name")


def test_permission_without_title(tmp_path: Path) -> None:
    """`title` is required."""
    path = write(tmp_path, "permissions:\n  - {name: a.b}\n")
    assert error(path) == f"{path}: permissions[0] (a.b): missing `title`"


def test_permission_title_of_wrong_type(tmp_path: Path) -> None:
    """`title` must be a string."""
    path = write(tmp_path, "permissions:\n  - {name: a.b, title: [x]}\n")
    assert error(path) == f"{path}: permissions[0] (a.b): title must be a string, got a list"


def test_permission_entry_not_a_mapping(tmp_path: Path) -> None:
    """Each permission is a mapping."""
    path = write(tmp_path, "permissions:\n  - a.b\n")
    assert error(path) == f"{path}: permissions[0]: expected a mapping, got a string"


def test_implies_not_a_list(tmp_path: Path) -> None:
    """`implies` must be a list."""
    path = write(tmp_path, "permissions:\n  - {name: a.b, title: A, implies: a.c}\n")
    assert "permissions[0] (a.b): implies must be a list" in error(path)


def test_implies_unknown_permission(tmp_path: Path) -> None:
    """Implying a name no file defines is refused."""
    path = write(tmp_path, "permissions:\n  - {name: a.b, title: A, implies: [a.zzz]}\n")
    assert error(path) == f"{path}: permissions[0] (a.b): implies unknown permission 'a.zzz'"


def test_cycle_in_implies_is_named(tmp_path: Path) -> None:
    """A cycle across files is refused and spelt out."""
    a = write(tmp_path, "permissions:\n  - {name: a, title: A, implies: [b]}\n", "a.yaml")
    b = write(
        tmp_path,
        "permissions:\n"
        "  - {name: b, title: B, implies: [c]}\n"
        "  - {name: c, title: C, implies: [a]}\n",
        "b.yaml",
    )
    assert error(a, b) == f"{a}: permissions[0] (a): cycle in implies: a -> b -> c -> a"


def test_self_implication_is_a_cycle(tmp_path: Path) -> None:
    """A permission implying itself is a cycle."""
    path = write(tmp_path, "permissions:\n  - {name: a, title: A, implies: [a]}\n")
    assert error(path) == f"{path}: permissions[0] (a): cycle in implies: a -> a"


def test_nothing_may_imply_unrestricted(tmp_path: Path) -> None:
    """Implying `unrestricted` would let a small permission mint admin keys: refused."""
    path = write(tmp_path, "permissions:\n  - {name: a, title: A, implies: [unrestricted]}\n")
    assert error(path) == f"{path}: permissions[0] (a): nothing may imply unrestricted"


def test_unrestricted_takes_no_implies(tmp_path: Path) -> None:
    """`unrestricted` may be retitled but not given implies or a scope."""
    path = write(
        tmp_path,
        "permissions:\n  - {name: a, title: A}\n  - {name: unrestricted, title: U, implies: [a]}\n",
    )
    assert error(path).startswith(
        f"{path}: permissions[1] (unrestricted): unrestricted is built in"
    )


def test_scope_must_be_declared(tmp_path: Path) -> None:
    """A scope naming an undeclared resource type is refused."""
    path = write(tmp_path, "permissions:\n  - {name: a, title: A, scope: shop}\n")
    assert error(path).startswith(
        f"{path}: permissions[0] (a): scope 'shop' is not a declared resource type"
    )


def test_permission_defined_twice(tmp_path: Path) -> None:
    """The same permission in two files is refused, naming both places."""
    a = write(tmp_path, "permissions:\n  - {name: a, title: A}\n", "a.yaml")
    b = write(tmp_path, "permissions:\n  - {name: a, title: A}\n", "b.yaml")
    assert error(a, b) == (
        f"{b}: permissions[0] (a): permission 'a' is already defined in {a}: permissions[0] (a)"
    )


def test_scoped_form_colliding_with_catalog_name(tmp_path: Path) -> None:
    """`x:y` next to a scopable `x` is ambiguous and refused."""
    path = write(
        tmp_path,
        """
        resource_types: {store: Store}
        permissions:
          - {name: sale, title: Sale, scope: store}
          - {name: "sale:read", title: Read}
        """,
    )
    assert error(path) == (
        f"{path}: permissions[1] (sale:read): permission 'sale:read' is ambiguous: "
        "it also reads as 'sale' scoped to resource 'read'"
    )


def test_resource_type_with_conflicting_titles(tmp_path: Path) -> None:
    """Declaring a resource type twice with different titles is refused."""
    a = write(tmp_path, "resource_types: {store: Store}\n", "a.yaml")
    b = write(tmp_path, "resource_types: {store: Shop}\n", "b.yaml")
    assert error(a, b) == (
        f"{b}: resource_types.store: resource type 'store' is declared in "
        f"{a}: resource_types.store as 'Store'"
    )


# ---- upstream errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://h", "scheme must be http or https"),
        ("http://h/api", "must not have a path"),
        ("http://h?x=1", "no spaces, query or fragment"),
        ("http://u:p@h", "must not contain user info"),
        ("http://", "has no valid host"),
        ("http://h:99999", "invalid port"),
        ("http://h:0", "invalid port"),
        ("h:80", "scheme must be http or https"),
    ],
)
def test_bad_upstream_url(tmp_path: Path, url: str, problem: str) -> None:
    """Upstream URLs are scheme://host[:port] only."""
    path = write(tmp_path, f"upstreams:\n  shop:\n    url: '{url}'\n")
    message = error(path)
    assert message.startswith(f"{path}: upstreams.shop: url ")
    assert problem in message


def test_upstream_missing_url(tmp_path: Path) -> None:
    """`url` is required."""
    path = write(tmp_path, "upstreams:\n  shop: {read_timeout: 3}\n")
    assert error(path) == f"{path}: upstreams.shop: missing `url`"


def test_unknown_key_in_upstream(tmp_path: Path) -> None:
    """A misspelt upstream field is refused."""
    path = write(tmp_path, "upstreams:\n  shop: {url: 'http://h', read_timout: 3}\n")
    assert error(path) == (
        f"{path}: upstreams.shop: unknown key 'read_timout' (did you mean 'read_timeout'?)"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("connect_timeout", "'2'"), ("read_timeout", "0"), ("read_timeout", "true")],
)
def test_bad_timeout(tmp_path: Path, field: str, value: str) -> None:
    """Timeouts are positive numbers."""
    path = write(tmp_path, f"upstreams:\n  shop: {{url: 'http://h', {field}: {value}}}\n")
    assert error(path).startswith(f"{path}: upstreams.shop: {field} must be a positive number")


def test_bad_pool_size(tmp_path: Path) -> None:
    """pool_size is a positive whole number."""
    path = write(tmp_path, "upstreams:\n  shop: {url: 'http://h', pool_size: 1.5}\n")
    assert error(path).startswith(f"{path}: upstreams.shop: pool_size must be a positive whole")


def test_upstream_defined_twice(tmp_path: Path) -> None:
    """The same upstream in two files is refused."""
    a = write(tmp_path, "upstreams:\n  shop: {url: 'http://a'}\n", "a.yaml")
    b = write(tmp_path, "upstreams:\n  shop: {url: 'http://b'}\n", "b.yaml")
    assert error(a, b) == (
        f"{b}: upstreams.shop: upstream 'shop' is already defined in {a}: upstreams.shop"
    )


# ---- route errors -----------------------------------------------------------------------


def route_error(tmp_path: Path, routes: str) -> tuple[Path, str]:
    path = write(tmp_path, with_routes(routes))
    return path, error(path)


def test_unknown_key_in_route(tmp_path: Path) -> None:
    """A misspelt route field names the route."""
    path, message = route_error(tmp_path, "- {path: /a, upstream: shop, permision: shop.reports}\n")
    assert message == (
        f"{path}: routes[0] (* /a): unknown key 'permision' (did you mean 'permission'?)"
    )


def test_route_unknown_upstream(tmp_path: Path) -> None:
    """A route naming an undefined upstream is refused."""
    path, message = route_error(tmp_path, "- {path: /a, upstream: shp, auth: none}\n")
    assert message == f"{path}: routes[0] (* /a): upstream 'shp' is not defined (known: shop)"


def test_route_permission_not_in_catalog(tmp_path: Path) -> None:
    """The brief's example message, word for word."""
    path, message = route_error(
        tmp_path, "- {path: '/api/{id}', methods: [GET], upstream: shop, permission: foo.bar}\n"
    )
    assert message == (
        f"{path}: routes[0] (GET /api/{{id}}): permission 'foo.bar' is not in the catalog"
    )


def test_route_scoped_permission_not_in_catalog(tmp_path: Path) -> None:
    """`unknown:{id}` names the unknown permission, not the whole string."""
    path, message = route_error(
        tmp_path, "- {path: '/s/{id}', upstream: shop, permission: 'nope.x:{id}'}\n"
    )
    assert message == f"{path}: routes[0] (* /s/{{id}}): permission 'nope.x' is not in the catalog"


def test_route_param_not_in_path(tmp_path: Path) -> None:
    """`{param}` in the permission must be a parameter of the path."""
    path, message = route_error(
        tmp_path, "- {path: '/s/{id}', upstream: shop, permission: 'shop.view:{storeId}'}\n"
    )
    assert message.startswith(
        f"{path}: routes[0] (* /s/{{id}}): {{storeId}} in permission 'shop.view:{{storeId}}' "
        "is not a parameter of the path"
    )


def test_route_scoped_requirement_on_unscopable_permission(tmp_path: Path) -> None:
    """Scoping a permission that has no scope is refused."""
    path, message = route_error(
        tmp_path, "- {path: '/s/{id}', upstream: shop, permission: 'shop.reports:{id}'}\n"
    )
    assert message.startswith(
        f"{path}: routes[0] (* /s/{{id}}): permission 'shop.reports' has no scope"
    )


def test_route_bad_literal_resource(tmp_path: Path) -> None:
    """A literal resource must be a valid resource id."""
    path, message = route_error(
        tmp_path, "- {path: /s, upstream: shop, permission: 'shop.view:a b'}\n"
    )
    assert message == f"{path}: routes[0] (* /s): bad resource 'a b' in permission 'shop.view:a b'"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("api", "must start with '/'"),
        ("/a/**/b", "'**' may only be the last segment"),
        ("/a/{9x}", "bad parameter name '9x'"),
        ("/a/{x}/{x}", "parameter {x} appears twice"),
        ("/a/../b", "must not contain a '..' segment"),
        ("/a/./b", "must not contain a '.' segment"),
        ("/a%2Fb", "must not contain '%'"),
        ("/a?b", "must not contain '?'"),
        ("/a#b", "must not contain '#'"),
        ("/a/", "end with '/'"),
    ],
)
def test_route_bad_path_template(tmp_path: Path, template: str, problem: str) -> None:
    """Every template rule is enforced with the template and the rule in the message."""
    path, message = route_error(tmp_path, f"- {{path: '{template}', upstream: shop, auth: none}}\n")
    assert message.startswith(f"{path}: routes[0] (* {template}): bad path template '{template}'")
    assert problem in message


def test_route_missing_path(tmp_path: Path) -> None:
    """`path` is required."""
    path, message = route_error(tmp_path, "- {upstream: shop, auth: none}\n")
    assert message == f"{path}: routes[0]: missing `path`"


def test_route_path_of_wrong_type(tmp_path: Path) -> None:
    """`path` must be a string."""
    path, message = route_error(tmp_path, "- {path: 5, upstream: shop, auth: none}\n")
    assert message == f"{path}: routes[0]: path must be a string, got a number"


def test_route_unknown_method(tmp_path: Path) -> None:
    """Methods outside the known HTTP set are refused."""
    path, message = route_error(
        tmp_path, "- {path: /a, methods: [GET, FETCH], upstream: shop, auth: none}\n"
    )
    assert message.startswith(f"{path}: routes[0] (GET,FETCH /a): unknown HTTP method 'FETCH'")


def test_route_methods_not_a_list(tmp_path: Path) -> None:
    """`methods` must be a non-empty list."""
    path, message = route_error(
        tmp_path, "- {path: /a, methods: GET, upstream: shop, auth: none}\n"
    )
    assert message.startswith(f"{path}: routes[0] (GET /a): methods must be a non-empty list")


def test_route_star_with_other_methods(tmp_path: Path) -> None:
    """`*` must stand alone."""
    path, message = route_error(
        tmp_path, "- {path: /a, methods: ['*', GET], upstream: shop, auth: none}\n"
    )
    assert (
        message
        == f"{path}: routes[0] (*,GET /a): methods: '*' already means every method; list it alone"
    )


def test_duplicate_route_names_both(tmp_path: Path) -> None:
    """Same shape and overlapping methods: both routes are named."""
    path, message = route_error(
        tmp_path,
        """
        - {path: '/s/{a}', methods: [GET], upstream: shop, auth: none}
        - {path: '/s/{b}', methods: [POST, GET], upstream: shop, auth: none}
        """,
    )
    assert message == (
        f"{path}: routes[1] (POST,GET /s/{{b}}): duplicate route: same path shape and "
        f"overlapping methods as {path}: routes[0] (GET /s/{{a}})"
    )


def test_route_with_both_permission_and_auth_none(tmp_path: Path) -> None:
    """A route cannot both require a permission and need no auth."""
    path, message = route_error(
        tmp_path, "- {path: /a, upstream: shop, auth: none, permission: shop.reports}\n"
    )
    assert message == f"{path}: routes[0] (* /a): give exactly one of `permission` and `auth: none`"


def test_route_with_neither_permission_nor_auth_none(tmp_path: Path) -> None:
    """A route must say what it needs; silence is not 'allow'."""
    path, message = route_error(tmp_path, "- {path: /a, upstream: shop}\n")
    assert message == f"{path}: routes[0] (* /a): give exactly one of `permission` and `auth: none`"


def test_route_auth_other_than_none(tmp_path: Path) -> None:
    """`auth` only takes the value `none`."""
    path, message = route_error(tmp_path, "- {path: /a, upstream: shop, auth: basic}\n")
    assert message.startswith(f"{path}: routes[0] (* /a): auth must be 'none'")


def test_route_flag_of_wrong_type(tmp_path: Path) -> None:
    """`passwords` must be a boolean."""
    path, message = route_error(
        tmp_path, "- {path: /a, upstream: shop, permission: shop.reports, passwords: 'yes'}\n"
    )
    assert message == f"{path}: routes[0] (* /a): passwords must be true or false, got 'yes'"


def test_route_passwords_with_auth_none(tmp_path: Path) -> None:
    """`passwords: true` on a public route is a mistake and is refused."""
    path, message = route_error(
        tmp_path, "- {path: /a, upstream: shop, auth: none, passwords: true}\n"
    )
    assert (
        message
        == f"{path}: routes[0] (* /a): passwords: true has no effect on a route with auth: none"
    )


def test_route_websocket_needs_get(tmp_path: Path) -> None:
    """WebSocket upgrades are GET requests; a POST-only websocket route is refused."""
    path, message = route_error(
        tmp_path,
        "- {path: /a, methods: [POST], upstream: shop, permission: shop.reports,"
        " websocket: true}\n",
    )
    assert message.startswith(f"{path}: routes[0] (POST /a): websocket: true needs GET")


def test_route_entry_not_a_mapping(tmp_path: Path) -> None:
    """Each route is a mapping."""
    path, message = route_error(tmp_path, "- /a\n")
    assert message == f"{path}: routes[0]: expected a mapping, got a string"


@pytest.mark.parametrize(
    ("first", "second", "held"),
    [
        ("{title: Store, unscoped: held}", "Store", True),
        ("Store", "{title: Store, unscoped: held}", True),
        ("Store", "Store", False),
        ("{title: Store, unscoped: all}", "Store", False),
    ],
)
def test_resource_type_unscoped_meaning_merges(
    tmp_path: Path, first: str, second: str, held: bool
) -> None:
    """`unscoped: held` set in one file holds when another file leaves it unsaid."""
    a = write(tmp_path, f"resource_types: {{store: {first}}}\n", "a.yaml")
    b = write(tmp_path, f"resource_types: {{store: {second}}}\n", "b.yaml")
    catalog = load_policy([a, b]).catalog
    assert catalog.resource_types == {"store": "Store"}
    assert (catalog.held_types == {"store"}) is held


def test_resource_type_unscoped_meaning_conflict_is_an_error(tmp_path: Path) -> None:
    """Two files saying different things about `unscoped` stop the load, naming both."""
    a = write(tmp_path, "resource_types: {store: {title: Store, unscoped: held}}\n", "a.yaml")
    b = write(tmp_path, "resource_types: {store: {title: Store, unscoped: all}}\n", "b.yaml")
    with pytest.raises(PolicyError, match="with unscoped: held"):
        load_policy([a, b])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{title: Store, unscoped: some}", "unscoped must be 'all' or 'held'"),
        ("{title: Store, unscopd: held}", "did you mean 'unscoped'"),
        ("{unscoped: held}", "missing `title`"),
    ],
)
def test_bad_resource_type_long_form_is_named(tmp_path: Path, body: str, message: str) -> None:
    """A malformed long-form resource type names the entry and the problem."""
    a = write(tmp_path, f"resource_types: {{store: {body}}}\n", "a.yaml")
    with pytest.raises(PolicyError, match=message):
        load_policy([a])
