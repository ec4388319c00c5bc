"""The permission catalog: parsing permission strings, the implication closure, and whether
held permissions grant, satisfy or cover what is needed."""

from __future__ import annotations

import re

import pytest

from gateway.policy.model import UNRESTRICTED, Catalog, Perm, PermissionDef

VIEW = "shop.store.canviewinvoices"
MODIFY = "shop.store.canmodifystoresettings"
REPORTS = "shop.reports.read"


def shop() -> Catalog:
    """BTCPay-like names with a store scope, plus Buckaroo-like `audience:operation` names."""
    return Catalog.build(
        [
            PermissionDef(VIEW, "View invoices", scope="store"),
            PermissionDef(MODIFY, "Modify store", implies=(VIEW,), scope="store"),
            PermissionDef(REPORTS, "Reports"),
            PermissionDef("sale:read", "View sales"),
            PermissionDef("sale:write", "Write sales", implies=("sale:read",)),
            PermissionDef("ledger:read", "Ledger", scope="store"),
            PermissionDef("a", "A", implies=("b",)),
            PermissionDef("b", "B", implies=("c",)),
            PermissionDef("c", "C"),
        ],
        {"store": "Store"},
    )


CATALOG = shop()


# ---- parse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (VIEW, Perm(VIEW)),
        (f"  {VIEW.upper()}  ", Perm(VIEW)),
        (f"{VIEW}:S1", Perm(VIEW, "S1")),
        (" Shop.Store.CanViewInvoices:StoreAbC ", Perm(VIEW, "StoreAbC")),
        (f"{MODIFY}:a.b-c_d~e", Perm(MODIFY, "a.b-c_d~e")),
        ("sale:read", Perm("sale:read")),
        ("SALE:Read", Perm("sale:read")),
        ("ledger:read:S1", Perm("ledger:read", "S1")),
        ("Ledger:Read:s1", Perm("ledger:read", "s1")),
        (UNRESTRICTED, Perm(UNRESTRICTED)),
        ("Unrestricted", Perm(UNRESTRICTED)),
    ],
)
def test_parse_accepts(raw: str, expected: Perm) -> None:
    """Names are trimmed and lower-cased; the resource keeps its case; colon names parse whole."""
    assert CATALOG.parse(raw) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "cannot be empty"),
        ("   ", "cannot be empty"),
        ("shop.nothing", "unknown permission 'shop.nothing'"),
        ("x:", "unknown permission 'x'"),
        (":x", "unknown permission ':x'"),
        (":", "unknown permission ':'"),
        (f"{VIEW}:", "malformed resource"),
        (f"{VIEW}:S 1", "malformed resource"),
        (f"{VIEW}:S/1", "malformed resource"),
        (f"{VIEW}:" + "S" * 129, "malformed resource"),
        ("nothing:S1", "unknown permission 'nothing'"),
        (f"{REPORTS}:S1", f"permission '{REPORTS}' cannot be scoped"),
        ("sale:read:S1", "permission 'sale:read' cannot be scoped"),
        ("unrestricted:S1", "unrestricted cannot be scoped"),
    ],
)
def test_parse_rejects_with_reason(raw: str, problem: str) -> None:
    """Unknown names, empty parts and scopes on unscopable permissions are refused, saying why."""
    with pytest.raises(ValueError, match=re.escape(problem)):
        CATALOG.parse(raw)


def test_parse_rejects_non_strings() -> None:
    """Only strings are permissions."""
    with pytest.raises(ValueError, match="must be a string"):
        CATALOG.parse(42)  # type: ignore[arg-type]


def test_parse_all_removes_duplicates_in_order() -> None:
    """parse_all keeps the first of equal permissions, in order."""
    assert CATALOG.parse_all([REPORTS, f"{VIEW}:S1", REPORTS.upper(), f"{VIEW}:S1", VIEW]) == (
        Perm(REPORTS),
        Perm(VIEW, "S1"),
        Perm(VIEW),
    )


def test_perm_text_round_trips() -> None:
    """str(Perm) is the text parse accepts."""
    for perm in (Perm(VIEW), Perm(VIEW, "S1"), Perm("ledger:read", "S1"), Perm("sale:read")):
        assert CATALOG.parse(str(perm)) == perm


# ---- closure ------------------------------------------------------------------------------


def test_closure_is_transitive_and_reflexive() -> None:
    """Every name grants itself and everything it implies, directly or not."""
    assert CATALOG.closure["a"] == {"a", "b", "c"}
    assert CATALOG.closure["b"] == {"b", "c"}
    assert CATALOG.closure["c"] == {"c"}
    assert CATALOG.closure[MODIFY] == {MODIFY, VIEW}


def test_unrestricted_is_built_in_and_grants_everything() -> None:
    """`unrestricted` exists without being declared and its closure is the whole catalog."""
    assert UNRESTRICTED in CATALOG
    assert CATALOG.closure[UNRESTRICTED] == set(CATALOG.permissions)


@pytest.mark.parametrize(
    ("defs", "cycle"),
    [
        ([PermissionDef("a", "A", implies=("a",))], "a -> a"),
        (
            [
                PermissionDef("a", "A", implies=("b",)),
                PermissionDef("b", "B", implies=("c",)),
                PermissionDef("c", "C", implies=("a",)),
            ],
            "a -> b -> c -> a",
        ),
        (
            [
                PermissionDef("x", "X", implies=("a",)),
                PermissionDef("a", "A", implies=("b",)),
                PermissionDef("b", "B", implies=("a",)),
            ],
            "a -> b -> a",
        ),
    ],
)
def test_cycles_are_refused_and_named(defs: list[PermissionDef], cycle: str) -> None:
    """A cycle in `implies` is an error that spells the cycle out."""
    with pytest.raises(ValueError, match="cycle in implies") as info:
        Catalog.build(defs)
    assert cycle in str(info.value)


def test_implying_an_unknown_name_is_refused() -> None:
    """`implies` may only name catalog permissions."""
    with pytest.raises(ValueError, match="implies unknown permission 'ghost'"):
        Catalog.build([PermissionDef("a", "A", implies=("ghost",))])


# ---- grants / satisfies / covers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("held", "need", "granted"),
    [
        (Perm(VIEW), Perm(VIEW), True),
        (Perm(VIEW), Perm(VIEW, "S1"), True),  # unscoped covers every store
        (Perm(VIEW, "S1"), Perm(VIEW, "S1"), True),
        (Perm(VIEW, "S1"), Perm(VIEW, "S2"), False),
        (Perm(VIEW, "S1"), Perm(VIEW, "s1"), False),  # resources are case-sensitive
        (Perm(VIEW, "S1"), Perm(VIEW), False),  # one store never covers all of them
        (Perm(MODIFY), Perm(VIEW, "S9"), True),  # implication
        (Perm(MODIFY, "S1"), Perm(VIEW, "S1"), True),  # implication keeps the scope
        (Perm(MODIFY, "S1"), Perm(VIEW, "S2"), False),
        (Perm(VIEW), Perm(MODIFY), False),  # implication is one-way
        (Perm("a"), Perm("c"), True),  # transitive
        (Perm("c"), Perm("a"), False),
        (Perm("sale:write"), Perm("sale:read"), True),
        (Perm("sale:read"), Perm("sale:write"), False),
        (Perm(UNRESTRICTED), Perm(MODIFY, "S1"), True),
        (Perm(UNRESTRICTED), Perm(REPORTS), True),
        (Perm(UNRESTRICTED), Perm(UNRESTRICTED), True),
        (Perm(MODIFY), Perm(UNRESTRICTED), False),
        (Perm("ghost"), Perm("ghost"), False),  # a name the catalog lacks grants nothing
    ],
)
def test_grants(held: Perm, need: Perm, granted: bool) -> None:
    """One held permission grants a need when it is equal or implies it, in scope."""
    assert CATALOG.grants(held, need) is granted


def test_satisfies_any_of_held() -> None:
    """satisfies is true when any one held permission grants the need."""
    held = [Perm(VIEW, "S1"), Perm(REPORTS)]
    assert CATALOG.satisfies(held, Perm(VIEW, "S1"))
    assert CATALOG.satisfies(held, Perm(REPORTS))
    assert not CATALOG.satisfies(held, Perm(VIEW, "S2"))
    assert not CATALOG.satisfies([], Perm(REPORTS))


def test_covers_lists_what_is_missing() -> None:
    """covers returns the wanted permissions not granted by held, in order."""
    held = (Perm(MODIFY, "S1"), Perm("sale:write"))
    wanted = (
        Perm(VIEW, "S1"),
        Perm(VIEW, "S2"),
        Perm("sale:read"),
        Perm(REPORTS),
        Perm(MODIFY),
    )
    assert CATALOG.covers(held, wanted) == (Perm(VIEW, "S2"), Perm(REPORTS), Perm(MODIFY))
    assert CATALOG.covers(held, []) == ()
    assert CATALOG.covers(iter([Perm(UNRESTRICTED)]), wanted) == ()  # held may be an iterator
