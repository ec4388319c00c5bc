"""`gateway import btcpay SOURCE [--dry-run] [--json]`.

SOURCE is BTCPay's PostgreSQL database (`postgresql://...`), a JSON export file, or `-` for
an export on standard input. The source is read whole before Keygate's database is opened;
a source that cannot be read at all is one line and exit 1, a row that cannot be imported is
a line of the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.importer.apply import apply_plan, read_existing
from gateway.importer.btcpay_db import SourceUnavailable, read_database
from gateway.importer.export import ExportError, read_export
from gateway.importer.plan import plan_import
from gateway.importer.source import Source
from gateway.importer.summary import as_json, as_text, summary
from gateway.keys.hashing import KeyHasher
from gateway.policy.model import Catalog
from gateway.services import open_services
from gateway.settings import Settings

_STORE_PERMISSION = "btcpay.store.canviewinvoices"


class ImportFailed(Exception):
    """The import cannot run; the message says why in one line."""


def add_parser(sub: argparse._SubParsersAction[Any]) -> None:
    parent = sub.add_parser("import", help="import keys and users from another server")
    kinds = parent.add_subparsers(dest="action", required=True, parser_class=type(parent))
    btcpay = kinds.add_parser(
        "btcpay", help="BTCPay Server's API keys, users and store permissions"
    )
    btcpay.add_argument(
        "source", help="postgresql://... (BTCPay's database), a JSON export file, or - (stdin)"
    )
    btcpay.add_argument("--dry-run", action="store_true", help="read and report; write nothing")
    btcpay.add_argument("--json", action="store_true", help="the summary as JSON")


async def run_import(settings: Settings, where: str, *, dry_run: bool, json: bool) -> list[str]:
    """The summary's lines. Raises ImportFailed (and the store's errors)."""
    source = await _read(where, settings.database_timeout)
    # Like every command, this brings Keygate's schema up to date first; a dry run then
    # writes no user, grant, store, key or audit record.
    async with open_services(settings) as s:
        catalog = s.policy.catalog
        if not any(name.startswith("btcpay.") for name in catalog.permissions):
            raise ImportFailed(
                "the loaded policy has no BTCPay permissions: add "
                "policies/btcpay-greenfield.yaml to `policy`"
            )
        store_type = _store_type(catalog)
        previous = [KeyHasher(secret) for secret in settings.previous_secrets]
        existing = await read_existing(s.store, source, s.hasher, store_type, previous)
        plan = plan_import(source, catalog, existing, s.hasher.digest, store_type)
        written = None
        if not dry_run:
            written = await apply_plan(
                plan,
                store=s.store,
                users=s.users,
                hasher=s.hasher,
                prefix=settings.key_prefix,
                store_type=store_type,
                invalidate=s.verifier.invalidate,
            )
    data = summary(
        plan,
        written,
        description=source.description,
        legacy_accepted=settings.accept_legacy_keys,
    )
    return [as_json(data)] if json else as_text(data)


async def _read(where: str, deadline: float) -> Source:
    try:
        if where.startswith(("postgresql://", "postgres://")):
            return await read_database(where, deadline)
        if where == "-":
            return read_export(sys.stdin.buffer.read(), "standard input")
        return read_export(await asyncio.to_thread(Path(where).read_bytes), where)
    except (ExportError, SourceUnavailable) as exc:
        raise ImportFailed(str(exc)) from None
    except OSError as exc:
        raise ImportFailed(f"{where}: {exc.strerror or exc}") from None


def _store_type(catalog: Catalog) -> str | None:
    definition = catalog.permissions.get(_STORE_PERMISSION)
    return definition.scope if definition is not None else None
