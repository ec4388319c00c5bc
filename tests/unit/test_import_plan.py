"""The BTCPay import's pure parts: reading an export, and planning what to write and skip."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.importer.export import ExportError, read_export
from gateway.importer.plan import Existing, Plan, plan_import
from gateway.importer.summary import as_json, as_text, summary
from gateway.keys.hashing import KeyHasher
from gateway.policy.loader import load_policy
from gateway.store.base import ApiKey, User

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_policy([ROOT / "policies" / "btcpay-greenfield.yaml"]).catalog
HASHER = KeyHasher(b"k" * 32)
NOTHING = Existing({}, {}, {}, {})


def key() -> str:
    return secrets.token_hex(20)


def export(**parts: Any) -> bytes:
    doc = {
        "format": "btcpay-export",
        "version": 1,
        "users": [
            {"id": "u1", "email": "owner@example.com"},
            {"id": "adm", "email": "admin@example.com", "admin": True},
        ],
        "stores": [{"id": "S1", "name": "Main shop"}, {"id": "S2", "name": "Second"}],
        "storeUsers": [
            {"userId": "u1", "storeId": "S1", "role": "Owner"},
            {"userId": "u1", "storeId": "S2", "role": "Guest"},
        ],
        "apiKeys": [],
    }
    doc.update(parts)
    return json.dumps(doc).encode()


def plan_of(raw: bytes, existing: Existing = NOTHING) -> Plan:
    return plan_import(read_export(raw, "test"), CATALOG, existing, HASHER.digest, "store")


def one_key(**fields: Any) -> bytes:
    row = {"key": key(), "userId": "u1", "label": "shop", "permissions": []}
    row.update(fields)
    return export(apiKeys=[row])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[]", "not a BTCPay export"),
        (json.dumps({"format": "btcpay-export", "version": 2}).encode(), "version 2"),
    ],
)
def test_an_unreadable_export_is_one_error(raw: bytes, why: str) -> None:
    """Bad JSON, another document or another version: one error saying so, nothing read."""
    with pytest.raises(ExportError, match=why):
        read_export(raw, "export.json")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"key": "ab" * 19 + "a"}, "39 characters long"),
        ({"key": "ab" * 21}, "42 characters long"),
        ({"key": "g" * 40}, "not hexadecimal"),
        ({"key": 1234}, "missing or not a string"),
        ({"userId": "nobody"}, "unknown user 'nobody'"),
        ({"userId": None}, "no userId"),
        ({"permissions": "btcpay.store.canviewinvoices"}, "must be a list"),
    ],
)
def test_malformed_key_rows_are_skipped_with_a_reason(row: dict[str, Any], reason: str) -> None:
    """Each malformed row is skipped with its reason; the reason never quotes the key."""
    plan = plan_of(one_key(**row))
    assert plan.keys == []
    [skipped] = plan.skipped
    assert reason in skipped.reason
    if isinstance(row.get("key"), str):
        assert row["key"] not in skipped.reason


def test_a_user_without_a_usable_email_has_his_keys_skipped() -> None:
    """A BTCPay user with no (or an unusable) email cannot become a Keygate user."""
    raw = export(
        users=[{"id": "u1", "email": None}, {"id": "u2", "email": "not-an-email"}],
        apiKeys=[{"key": key(), "userId": "u1"}, {"key": key(), "userId": "u2"}],
    )
    plan = plan_of(raw)
    assert plan.keys == []
    assert [s.reason for s in plan.skipped] == [
        "the user 'u1' has no usable email",
        "the user 'u2' has no usable email",
    ]


def test_a_repeated_key_is_imported_once() -> None:
    """The same key twice: the first row is imported, the second skipped naming the first."""
    text = key()
    raw = export(apiKeys=[{"key": text, "userId": "u1"}, {"key": text, "userId": "u1"}])
    plan = plan_of(raw)
    assert [k.row for k in plan.keys] == ["apiKeys[0]"]
    assert [s.reason for s in plan.skipped] == ["the same key as apiKeys[0]"]


def test_unknown_permissions_are_dropped_with_a_reason_and_the_key_kept() -> None:
    """A permission the catalog lacks (or a malformed one) is left out; the rest is imported."""
    plan = plan_of(
        one_key(
            permissions=[
                "btcpay.store.canviewinvoices:S1",
                "btcpay.store.cannotexist",
                "btcpay.server.canviewusers:S1",
                7,
            ]
        )
    )
    [planned] = plan.keys
    assert planned.permissions == ("btcpay.store.canviewinvoices:S1",)
    reasons = [d.reason for d in plan.dropped]
    assert reasons[0].startswith("btcpay.store.cannotexist: unknown permission")
    assert "cannot be scoped" in reasons[1]
    assert reasons[2] == "7: not a string"


def test_grants_follow_store_roles_and_unscoped_permissions_fan_out_per_store() -> None:
    """An unscoped store permission becomes one grant per store whose role covers it; a scoped
    one is granted as is; one the role does not cover stays on the key, inert, noted."""
    plan = plan_of(
        one_key(
            permissions=[
                "btcpay.store.canviewinvoices",  # Owner on S1 and Guest on S2 both cover it
                "btcpay.store.canmodifystoresettings:S1",  # Owner
                "btcpay.store.canmodifystoresettings:S2",  # Guest: no
                "btcpay.user.canviewprofile",  # his own account
                "btcpay.server.canviewusers",  # not an admin
            ]
        )
    )
    [planned] = plan.keys
    assert "btcpay.store.canviewinvoices" in planned.permissions  # the key keeps it unscoped
    [user] = plan.users
    assert user.existing is None
    assert set(user.add_grants) == {
        "btcpay.store.canviewinvoices:S1",
        "btcpay.store.canviewinvoices:S2",
        "btcpay.store.canmodifystoresettings:S1",
        "btcpay.user.canviewprofile",
    }
    inert = {n.reason.split(":")[0] for n in plan.notes}
    assert inert == {"btcpay.store.canmodifystoresettings", "btcpay.server.canviewusers"}
    assert plan.stores == {"S1": "Main shop", "S2": "Second"}


def test_server_admins_get_server_rights_and_unrestricted_gets_what_the_user_had() -> None:
    """`btcpay.server.*` is granted to server admins; an unrestricted key needs all of his
    rights (server, own account, store roles) and nothing beyond."""
    raw = export(
        storeUsers=[{"userId": "adm", "storeId": "S2", "role": "Manager"}],
        apiKeys=[{"key": key(), "userId": "adm", "permissions": ["unrestricted"]}],
    )
    plan = plan_of(raw)
    [user] = plan.users
    grants = set(user.add_grants)
    assert "btcpay.server.canmodifyserversettings" in grants
    assert "btcpay.store.canviewstoresettings:S2" in grants
    assert "btcpay.store.canmodifystoresettings:S2" not in grants  # a Manager's role lacks it
    assert not any(g.endswith(":S1") for g in grants)
    assert plan.notes == []


def test_custom_role_permissions_are_used_as_given() -> None:
    """A role's own permission list wins over BTCPay's defaults for that name."""
    raw = export(
        storeUsers=[
            {
                "userId": "u1",
                "storeId": "S1",
                "role": "Owner",
                "permissions": ["btcpay.store.canviewreports"],
            }
        ],
        apiKeys=[{"key": key(), "userId": "u1", "permissions": ["btcpay.store.canviewinvoices"]}],
    )
    plan = plan_of(raw)
    assert plan.users[0].add_grants == ()
    assert [n.reason.split(":")[0] for n in plan.notes] == ["btcpay.store.canviewinvoices"]


def test_existing_keys_and_grants_are_not_written_again() -> None:
    """A key whose hash Keygate holds is "already imported" (its owner's) or skipped (someone
    else's); grants the user already holds are not added again."""
    mine, theirs = key(), key()
    now = datetime.now(UTC)
    owner = User(
        "k1",
        "Owner@Example.com",
        None,
        False,
        False,
        False,
        ("btcpay.store.canviewinvoices:S1",),
        now,
    )
    other = User("k2", "other@example.com", None, False, False, False, (), now)

    def stored(text: str, user: User, key_id: str) -> ApiKey:
        return ApiKey(key_id, HASHER.digest(text), user.id, "old", (), None, "active", now)

    existing = Existing(
        users={"owner@example.com": owner, "other@example.com": other},
        keys={
            HASHER.digest(mine): stored(mine, owner, "apk_mine"),
            HASHER.digest(theirs): stored(theirs, other, "apk_theirs"),
        },
        users_by_id={"k1": owner, "k2": other},
        stores={"S1": "Shop one"},
    )
    new = key()
    perms = ["btcpay.store.canviewinvoices:S1"]
    raw = export(
        apiKeys=[
            {"key": mine, "userId": "u1", "permissions": perms},
            {"key": theirs, "userId": "u1", "permissions": perms},
            {"key": new, "userId": "u1", "permissions": perms},
        ]
    )
    plan = plan_of(raw, existing)
    assert [(o.row, o.key_id) for o in plan.already] == [("apiKeys[0]", "apk_mine")]
    assert plan.skipped[0].reason == "already in Keygate as apk_theirs, for another user"
    assert [k.row for k in plan.keys] == ["apiKeys[2]"]
    assert plan.users[0].existing is owner
    assert plan.users[0].add_grants == ()
    assert plan.stores == {}


def test_labels_and_application_fields_are_cleaned() -> None:
    """Control characters and over-long labels are cleaned (noted); BTCPay's application
    authority (host[:port]) becomes an https origin."""
    plan = plan_of(
        one_key(
            label="line\none" + "x" * 300,
            applicationIdentifier="shopify",
            applicationAuthority="App.Example:8443",
        )
    )
    [planned] = plan.keys
    assert "\n" not in planned.label
    assert len(planned.label) == 255
    assert planned.application_identifier == "shopify"
    assert planned.redirect_origin == "https://app.example:8443"
    assert [n.reason for n in plan.notes] == ["label shortened or cleaned"]


def test_the_summary_never_holds_a_key() -> None:
    """Neither the text nor the JSON summary contains any key of the source, imported,
    skipped or malformed."""
    texts = [key(), key(), key()[:39], "z" + key()[1:]]
    raw = export(
        apiKeys=[
            {"key": texts[0], "userId": "u1", "permissions": ["btcpay.nope"]},
            {"key": texts[0], "userId": "u1"},
            {"key": texts[1], "userId": "nobody"},
            {"key": texts[2], "userId": "u1"},
            {"key": texts[3], "userId": "u1"},
        ]
    )
    data = summary(plan_of(raw), None, description="test", legacy_accepted=False)
    out = as_json(data) + "\n".join(as_text(data))
    assert data["dryRun"] is True
    assert len(data["keys"]["imported"]) == 1
    assert len(data["keys"]["skipped"]) == 4
    for text in texts:
        assert text not in out
    assert "accept_legacy_keys is off" in out


def test_keys_of_users_disabled_in_btcpay_are_skipped() -> None:
    """A user BTCPay disabled: his keys did not work there and are not imported."""
    raw = export(
        users=[{"id": "u1", "email": "owner@example.com", "disabled": True}],
        apiKeys=[{"key": key(), "userId": "u1"}],
    )
    plan = plan_of(raw)
    assert plan.keys == []
    assert plan.skipped[0].reason == "the user is disabled in BTCPay (his keys do not work there)"


def test_an_unknown_store_role_grants_nothing_and_is_noted() -> None:
    """A role with no permission list that is not one of BTCPay's built-in ones gives no
    grant on its store, and the summary says so."""
    raw = export(
        storeUsers=[{"userId": "u1", "storeId": "S1", "role": "S1::Custom"}],
        apiKeys=[{"key": key(), "userId": "u1", "permissions": ["btcpay.store.canviewinvoices"]}],
    )
    plan = plan_of(raw)
    assert plan.users[0].add_grants == ()
    reasons = [n.reason for n in plan.notes]
    assert "unknown store role 'S1::Custom': none of its permissions are granted" in reasons
