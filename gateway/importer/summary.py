"""An import's summary, for people and as JSON. Pure. Never holds a key: rows are named by
where they were read, their user and label, and Keygate's key id."""

from __future__ import annotations

import json
from typing import Any

from gateway.importer.apply import Written
from gateway.importer.plan import Outcome, Plan


def summary(
    plan: Plan, written: Written | None, *, description: str, legacy_accepted: bool
) -> dict[str, Any]:
    """`written` None: a dry run (what would be written)."""
    ids = written.keys if written is not None else {}
    raced = set(written.raced) if written is not None else set()
    imported = [
        {
            "row": k.row,
            "id": ids.get(k.row),
            "user": k.email,
            "label": k.label,
            "permissions": list(k.permissions),
        }
        for k in plan.keys
        if k.row not in raced
    ]
    already = [_row(o) for o in plan.already] + [
        {"row": k.row, "user": k.email, "label": k.label, "reason": "imported meanwhile"}
        for k in plan.keys
        if k.row in raced
    ]
    return {
        "source": description,
        "dryRun": written is None,
        "keys": {
            "imported": imported,
            "alreadyImported": already,
            "skipped": [_row(o) for o in plan.skipped],
        },
        "permissionsDropped": [_row(o) for o in plan.dropped],
        "users": {
            "created": [u.email for u in plan.users if u.existing is None],
            "granted": [
                {"user": u.email, "grants": list(u.add_grants)}
                for u in plan.users
                if u.existing is not None and u.add_grants
            ],
        },
        "stores": [{"id": i, "name": n} for i, n in plan.stores.items()],
        "notes": [_row(o) for o in plan.notes],
        "legacyKeysAccepted": legacy_accepted,
    }


def _row(outcome: Outcome) -> dict[str, Any]:
    out: dict[str, Any] = {"row": outcome.row, "reason": outcome.reason}
    if outcome.email is not None:
        out["user"] = outcome.email
    if outcome.label is not None:
        out["label"] = outcome.label
    if outcome.key_id is not None:
        out["id"] = outcome.key_id
    return out


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def as_text(data: dict[str, Any]) -> list[str]:
    keys, users = data["keys"], data["users"]
    verb = "would be " if data["dryRun"] else ""
    lines = [
        f"BTCPay import from {data['source']}"
        + (" (dry run: nothing was written)" if data["dryRun"] else ""),
        f"keys: {len(keys['imported'])} {verb}imported, {len(keys['alreadyImported'])} "
        f"already imported, {len(keys['skipped'])} skipped",
        f"users: {len(users['created'])} {verb}created, {len(users['granted'])} {verb}given "
        f"grants; stores: {len(data['stores'])} {verb}registered",
    ]
    if not (keys["imported"] or users["created"] or users["granted"] or data["stores"]):
        lines.append("nothing new to import")
    for k in keys["imported"]:
        target = f" as {k['id']}" if k["id"] else ""
        lines.append(
            f"  imported {k['row']}{target}: {k['user']} {k['label']!r} "
            f"[{' '.join(k['permissions']) or 'no permissions'}]"
        )
    for label, items in (
        ("already ", keys["alreadyImported"]),
        ("skipped ", keys["skipped"]),
        ("dropped ", data["permissionsDropped"]),
        ("note    ", data["notes"]),
    ):
        lines.extend(f"  {label} {_line(item)}" for item in items)
    for u in users["granted"]:
        lines.append(f"  grants   {u['user']}: {' '.join(u['grants'])}")
    for s in data["stores"]:
        lines.append(f"  store    {s['id']} ({s['name']})")
    if (keys["imported"] or keys["alreadyImported"]) and not data["legacyKeysAccepted"]:
        lines.append(
            "warning: accept_legacy_keys is off, so imported keys are refused as malformed; "
            "turn it on (GATEWAY_ACCEPT_LEGACY_KEYS=true) and restart the gateway"
        )
    if users["created"]:
        lines.append("new users have no password: `gateway users password EMAIL` sets one")
    return lines


def _line(item: dict[str, Any]) -> str:
    who = " ".join(
        part
        for part in (
            item.get("id", ""),
            item.get("user", ""),
            repr(item["label"]) if item.get("label") else "",
        )
        if part
    )
    return f"{item['row']}" + (f" ({who})" if who else "") + f": {item['reason']}"
