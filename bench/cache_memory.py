"""Memory per cached key: RSS growth of one process as the verified-key cache fills.

Fills a real `KeyVerifier` (the in-process LRU, `local_cache_size` large enough) with N keys
through its lookup path, from a store that answers every lookup with a fresh record, as a
database driver would (new strings per row: nothing shared unless the cache shares it).
Keys belong to owners of `--keys-per-owner` keys each, with the permissions a typical key
holds. Prints bytes of RSS per cached key (RSS after minus before, over N), and the same
for Python's allocator (tracemalloc is off: RSS is what a worker pays).

    python -m bench.cache_memory [--keys 100000] [--keys-per-owner 10] [--flush-every 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from gateway.keys import format as keyformat
from gateway.keys.hashing import KeyHasher
from gateway.keys.verify import KeyVerifier
from gateway.policy.loader import load_policy
from gateway.store.base import ApiKey, KeyWithOwner, Store, User

POLICY = """\
resource_types:
  store: Store
permissions:
  - {name: shop.read, title: Read}
  - {name: shop.write, title: Write, implies: [shop.read]}
  - {name: shop.store.view, title: View a store, scope: store}
upstreams:
  up: {url: "http://127.0.0.1:9"}
routes:
  - {path: /api/**, upstream: up, permission: shop.read}
"""
PERMISSIONS = ("shop.read", "shop.write", "shop.store.view:S1")
# A worker hands the keys used since the last time to the database every 15 seconds
# (services.py) and forgets them. That list is not the cache's cost: it holds the keys used in
# 15 seconds, cached or not. Filled here at full speed, it would hold every key at once, and
# the memory it frees at the end stays in the process's RSS (about 80 bytes per key:
# `--flush-every 0` shows it). Flushed every 1,000 keys, it holds what it would for a worker
# meeting ~70 new keys a second.
FLUSH_EVERY = 1_000
GRANTS = ("shop.write", "shop.store.view:S1", "shop.store.view:S2")


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RowStore:
    """Answers `find_key_by_hash` with a freshly built record, as a database row would be."""

    def __init__(self, rows: dict[bytes, tuple[str, int]], per_owner: int) -> None:
        self._rows = rows
        self._per_owner = per_owner
        self._created = datetime.now(UTC)

    async def find_key_by_hash(self, digest: bytes) -> KeyWithOwner | None:
        found = self._rows.get(digest)
        if found is None:
            return None
        key_id, n = found
        owner = n // self._per_owner
        user = User(
            id="".join(f"user-{owner:08d}"),  # joined: a new string object per row
            email="".join(f"owner{owner}@example.com"),
            password_hash=None,
            is_admin=False,
            is_service=True,
            disabled=False,
            grants=tuple("".join(g) for g in GRANTS),
            created_at=self._created,
        )
        key = ApiKey(
            id="".join(key_id),  # a new string, as a database driver returns it
            key_hash=digest,
            user_id=user.id,
            label="".join(f"key {n}"),
            permissions=tuple("".join(p) for p in PERMISSIONS),
            path_rule=None,
            status="active",
            created_at=self._created,
        )
        return KeyWithOwner(key, user, 0)


async def measure(keys: int, per_owner: int, flush_every: int = FLUSH_EVERY) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        policy_file = Path(folder) / "policy.yaml"
        policy_file.write_text(POLICY)
        policy = load_policy([policy_file])
    hasher = KeyHasher(secrets.token_bytes(32))
    texts = [keyformat.generate() for _ in range(keys)]
    rows = {hasher.digest(k.text): (k.key_id, n) for n, k in enumerate(texts)}
    store = RowStore(rows, per_owner)
    verifier = KeyVerifier(
        store=cast(Store, store),
        catalog=policy.catalog,
        hasher=hasher,
        prefix="apk",
        shared=None,
        local_ttl=3600.0,
        local_size=keys,
        negative_ttl=5.0,
        stale_window=60.0,
    )
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    for n, parsed in enumerate(texts):
        if flush_every and n % flush_every == 0:
            verifier.take_last_used()  # as a worker does (see FLUSH_EVERY)
        # The digest of the presented key, computed per request as the data plane does: the
        # cache keeps this object as its key, so it is part of what a cached key costs.
        found = await verifier.lookup(parsed.text, verifier.digest(parsed.text))
        assert found.may(policy.catalog, policy.catalog.parse("shop.read"))
    verifier.take_last_used()
    gc.collect()
    grown = rss_bytes() - before
    elapsed = time.perf_counter() - started
    assert verifier.cache_size == keys
    return grown / keys, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--keys-per-owner", type=int, default=10)
    parser.add_argument(
        "--flush-every", type=int, default=FLUSH_EVERY, help="0: keys used are kept to the end"
    )
    args = parser.parse_args()
    per_key, elapsed = asyncio.run(measure(args.keys, args.keys_per_owner, args.flush_every))
    print(
        f"verified-key cache: {per_key:.0f} bytes of RSS per cached key at {args.keys:,} keys "
        f"({args.keys_per_owner} keys per owner; filled in {elapsed:.1f} s)"
    )


if __name__ == "__main__":
    main()
