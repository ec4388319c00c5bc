"""policies/btcpay-greenfield.yaml against BTCPay Server v2.4.1's permission catalog.

The table below is v2.4.1's, written down from its source: the `Policies` constants in
`BTCPayServer.Client/Permissions.cs`, the Wallets, Subscriptions and Impersonation plugins'
policies, and the `PolicyDefinition`s registered with `AddPolicyDefinitions` (their
`includedPermissions`, and `includedByPermissions` written on the including side). Each row is
a permission and the permissions it directly includes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.loader import load_policy
from gateway.policy.model import UNRESTRICTED, Perm

CATALOG_FILE = Path(__file__).resolve().parents[2] / "policies" / "btcpay-greenfield.yaml"
S = "btcpay.store."
SV = "btcpay.server."
U = "btcpay.user."

V2_4_1: dict[str, set[str]] = {
    UNRESTRICTED: set(),
    SV + "canmodifyserversettings": {SV + "canuseinternallightningnode", SV + "canmanageusers"},
    SV + "canviewusers": set(),
    SV + "canmanageusers": {SV + "cancreateuser"},
    SV + "cancreateuser": set(),
    SV + "canuseinternallightningnode": {
        SV + "cancreatelightninginvoiceinternalnode",
        SV + "canviewlightninginvoiceinternalnode",
    },
    SV + "canviewlightninginvoiceinternalnode": set(),
    SV + "cancreatelightninginvoiceinternalnode": set(),
    S + "canmodifystoresettings": {
        S + "canmanagepullpayments",
        S + "canmodifyinvoices",
        S + "canviewstoresettings",
        S + "webhooks.canmodifywebhooks",
        S + "canmodifypaymentrequests",
        S + "canmanagepayouts",
        S + "canuselightningnode",
        S + "cansendstoreemails",
        S + "canmodifyofferings",  # Subscriptions: includedByPermissions
        S + "canmanagewallets",  # Wallets: includedByPermissions
    },
    S + "canviewstoresettings": {
        S + "canviewinvoices",
        S + "canviewpaymentrequests",
        S + "canviewreports",
        S + "canviewpullpayments",
        S + "canviewpayouts",
    },
    S + "webhooks.canmodifywebhooks": set(),
    S + "cansendstoreemails": set(),
    S + "canviewreports": set(),
    S + "canmodifyinvoices": {
        S + "canviewinvoices",
        S + "cancreateinvoice",
        S + "cancreatelightninginvoice",
    },
    S + "canviewinvoices": set(),
    S + "cancreateinvoice": set(),
    S + "canmodifypaymentrequests": {S + "canviewpaymentrequests"},
    S + "canviewpaymentrequests": set(),
    S + "canmanagepullpayments": {S + "cancreatepullpayments", S + "canarchivepullpayments"},
    S + "cancreatepullpayments": {S + "cancreatenonapprovedpullpayments"},
    S + "cancreatenonapprovedpullpayments": {S + "canviewpullpayments"},
    S + "canviewpullpayments": set(),
    S + "canarchivepullpayments": set(),
    S + "canmanagepayouts": {S + "canviewpayouts"},
    S + "canviewpayouts": set(),
    S + "canmodifyofferings": {
        S + "canviewofferings",
        S + "canmanagesubscribers",
        S + "cancreditsubscribers",
    },
    S + "canviewofferings": set(),
    S + "canmanagesubscribers": set(),
    S + "cancreditsubscribers": set(),
    S + "canmanagewallets": {S + "canmanagewalletsettings", S + "canmanagewallettransactions"},
    S + "canviewwallet": set(),
    S + "canmanagewalletsettings": {S + "canviewwallet"},
    S + "canmanagewallettransactions": {
        S + "cancreatetransactions",
        S + "cansigntransactions",
        S + "canbroadcasttransactions",
        S + "cancanceltransactions",
    },
    S + "cancreatetransactions": {S + "canviewwallet"},
    S + "cansigntransactions": {S + "canviewwallet"},
    S + "canbroadcasttransactions": {S + "canviewwallet"},
    S + "cancanceltransactions": {S + "canviewwallet"},
    S + "canuselightningnode": {S + "canviewlightninginvoice", S + "cancreatelightninginvoice"},
    S + "canviewlightninginvoice": set(),
    S + "cancreatelightninginvoice": {S + "canviewlightninginvoice"},
    U + "canmodifyprofile": {U + "canviewprofile"},
    U + "canviewprofile": set(),
    U + "canmanagenotificationsforuser": {U + "canviewnotificationsforuser"},
    U + "canviewnotificationsforuser": set(),
    U + "candeleteuser": set(),
    "btcpay.impersonation.canimpersonate": set(),
}

CATALOG = load_policy([str(CATALOG_FILE)]).catalog


def test_names_are_v2_4_1s() -> None:
    """The catalog holds exactly v2.4.1's permission names, none missing and none extra."""
    assert set(CATALOG.permissions) == set(V2_4_1)


@pytest.mark.parametrize("name", sorted(V2_4_1))
def test_edges_are_v2_4_1s(name: str) -> None:
    """Each permission directly implies what v2.4.1's PolicyDefinition includes."""
    assert set(CATALOG.permissions[name].implies) == V2_4_1[name]


@pytest.mark.parametrize("name", sorted(V2_4_1))
def test_scopes_follow_btcpay(name: str) -> None:
    """Store permissions scope to a store, impersonation to a user, the rest to nothing."""
    expected = (
        "store"
        if name.startswith(S)
        else "user"
        if name == "btcpay.impersonation.canimpersonate"
        else None
    )
    assert CATALOG.permissions[name].scope == expected


def test_file_names_its_release() -> None:
    """The catalog file says which BTCPay release it matches."""
    assert "Matches BTCPay Server v2.4.1" in CATALOG_FILE.read_text(encoding="utf-8")


def test_new_edges_are_transitive() -> None:
    """v2.4's new edges reach through: store settings reach wallets and subscribers."""
    grant = Perm(S + "canmodifystoresettings", "S1")
    for need in ("canviewwallet", "cansigntransactions", "cancreditsubscribers"):
        assert CATALOG.grants(grant, Perm(S + need, "S1"))
    assert CATALOG.grants(
        Perm(S + "cancreatelightninginvoice"), Perm(S + "canviewlightninginvoice")
    )
    assert not CATALOG.grants(Perm(S + "canviewstoresettings"), Perm(S + "canviewwallet"))


def test_unscoped_store_permissions_mean_held_stores() -> None:
    """Store permissions are BTCPay's "every store I hold it on"; user scopes are not."""
    assert CATALOG.reaches_held(S + "canviewinvoices")
    assert not CATALOG.reaches_held("btcpay.impersonation.canimpersonate")
    assert not CATALOG.reaches_held(SV + "canviewusers")
