"""Building the long-lived service objects once, for the server and the CLI alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gateway import events
from gateway.cache.redis import SharedCache
from gateway.errors import GatewayError, TooManyRequests
from gateway.keys.budget import KEY_FAILURES, KeyBudget
from gateway.keys.hashing import KeyHasher
from gateway.keys.manage import KeyService
from gateway.keys.poller import InvalidationPoller, retention_for
from gateway.keys.rehash import PreviousSecrets
from gateway.keys.secret_check import check_secret
from gateway.keys.vault import KeyVault
from gateway.keys.verify import KeyVerifier, VerifiedKey
from gateway.policy.loader import load_policy
from gateway.policy.model import Policy
from gateway.settings import Settings
from gateway.store import open_store
from gateway.store.base import Store, User
from gateway.throttle import Throttle
from gateway.users import UserService

log = logging.getLogger("gateway")

LAST_USED_FLUSH_SECONDS = 15.0
# Many people can share one address (NAT, an office), so an address may fail more often than
# one account before it is throttled.
IP_FAILURE_FACTOR = 4


def _default_throttle() -> Throttle:
    return Throttle(limit=5, window_seconds=300.0)


def _default_key_budget() -> KeyBudget:
    return KeyBudget(limit=20, window_seconds=60.0)


@dataclass(slots=True)
class Services:
    settings: Settings
    policy: Policy
    store: Store
    shared: SharedCache | None
    verifier: KeyVerifier
    keys: KeyService
    users: UserService
    hasher: KeyHasher
    # Failed password attempts (Basic email:password on the data plane), counted per client
    # address and per account (lower-cased email), so guessing is slowed from one address
    # and against one account from many.
    ip_throttle: Throttle = field(default_factory=_default_throttle)
    account_throttle: Throttle = field(default_factory=_default_throttle)
    # Failed keys per client address, checked before a key's lookup (keys/budget.py).
    key_budget: KeyBudget = field(default_factory=_default_key_budget)

    async def check_password(self, email: str, password: str, address: str) -> User | None:
        """Every password check (login page, Basic email:password, re-authentication) goes
        through here, so one budget per address and per account covers all of them.

        Raises TooManyRequests while either is blocked; None for wrong credentials.
        """
        account = email.strip().lower()
        wait = max(
            self.ip_throttle.retry_after(address), self.account_throttle.retry_after(account)
        )
        if wait:
            raise TooManyRequests(
                f"too many failed password attempts; try again in {wait} seconds",
                retry_after=wait,
            )
        user = await self.users.authenticate(email, password)
        if user is None:
            self.ip_throttle.failed(address)
            self.account_throttle.failed(account)
            events.login_failed(address)
            wait = max(
                self.ip_throttle.retry_after(address), self.account_throttle.retry_after(account)
            )
            if wait:
                events.login_locked(address, wait)
            return None
        # Only the account's count is cleared: one good password must not buy an address
        # more guesses at other accounts.
        self.account_throttle.succeeded(account)
        return user

    async def lookup_key(self, key: str, digest: bytes, address: str) -> VerifiedKey:
        """Every lookup of a key that is not in memory (`verifier.known` said None) goes
        through here, within the failed-key budget of the client's `address`.

        Raises TooManyRequests, before any lookup, while the address is over budget; an
        unknown or malformed key is charged to it; otherwise as `KeyVerifier.lookup`.
        """
        over = self.key_budget.refusal(address)
        if over is not None:
            raise over
        try:
            return await self.verifier.lookup(key, digest)
        except GatewayError as exc:
            if exc.code in KEY_FAILURES:
                self.key_budget.failed(address)
            raise

    async def invalidate_user(self, user_id: str) -> None:
        """Drop every cached key of a user (disabled, re-granted...) on every instance."""
        keys = await self.store.list_keys(user_id)
        await self.verifier.invalidate([k.key_hash for k in keys])


@contextlib.asynccontextmanager
async def open_services(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Services]:
    """Load the policy, connect the store (and Redis), and close everything on exit.

    Raises PolicyError, StoreUnavailable: the callers turn them into one line and an exit.
    """
    policy = load_policy(settings.policy)
    store = await open_store(settings.database_url, deadline=settings.database_timeout)
    shared = None
    try:
        if migrate:
            await store.migrate()
        if settings.redis_url:
            shared = SharedCache.from_url(
                settings.redis_url,
                ttl=settings.redis_cache_ttl,
                negative_ttl=settings.negative_cache_ttl,
                namespace=settings.redis_namespace,
                deadline=settings.redis_timeout,
            )
        hasher = KeyHasher(settings.secret)
        previous = [KeyHasher(s) for s in settings.previous_secrets]
        await check_secret(store, hasher, previous)
        verifier = KeyVerifier(
            store=store,
            catalog=policy.catalog,
            hasher=hasher,
            prefix=settings.key_prefix,
            shared=shared,
            local_ttl=settings.local_cache_ttl,
            local_size=settings.local_cache_size,
            negative_ttl=settings.negative_cache_ttl,
            stale_window=settings.stale_window,
            lookup_timeout=settings.database_timeout,
            store_backoff=settings.store_backoff,
            accepted_prefixes=settings.accepted_key_prefixes,
            previous=PreviousSecrets(store, hasher, previous) if previous else None,
        )
        vault = (
            KeyVault(settings.key_encryption_key)
            if settings.retrievable_keys and settings.key_encryption_key
            else None
        )
        keys = KeyService(
            store=store,
            catalog=policy.catalog,
            hasher=hasher,
            prefix=settings.key_prefix,
            invalidate=verifier.invalidate,
            vault=vault,
            accepted_prefixes=settings.accepted_key_prefixes,
        )
        services: Services | None = None

        async def invalidate_user(user_id: str) -> None:
            assert services is not None
            await services.invalidate_user(user_id)

        users = UserService(store, policy.catalog, invalidate_user)
        services = Services(
            settings,
            policy,
            store,
            shared,
            verifier,
            keys,
            users,
            hasher,
            ip_throttle=Throttle(
                limit=settings.login_max_failures * IP_FAILURE_FACTOR,
                window_seconds=settings.login_window,
            ),
            account_throttle=Throttle(
                limit=settings.login_max_failures, window_seconds=settings.login_window
            ),
            key_budget=KeyBudget(
                limit=settings.key_max_failures, window_seconds=settings.key_failure_window
            ),
        )
        yield services
    finally:
        if shared is not None:
            await shared.close()
        await store.close()


@contextlib.asynccontextmanager
async def run_background(services: Services) -> AsyncIterator[None]:
    """Background tasks of a serving instance: invalidation listener and log poller,
    last-used flush."""
    poller = InvalidationPoller(
        services.store,
        services.verifier,
        services.shared,
        interval=services.settings.invalidation_poll_interval,
        retention=retention_for(services.settings.redis_cache_ttl),
    )
    tasks = [asyncio.create_task(poller.run())]
    if services.shared is not None:
        tasks.append(
            asyncio.create_task(
                services.shared.listen(services.verifier.drop, services.verifier.reset)
            )
        )
    tasks.append(asyncio.create_task(_flush_last_used(services)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await _flush_once(services)


async def _flush_last_used(services: Services) -> None:
    while True:
        await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
        await _flush_once(services)


async def _flush_once(services: Services) -> None:
    batch = services.verifier.take_last_used()
    if not batch:
        return
    try:
        await services.store.touch_keys(batch)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never take the server down
        log.warning("could not record key last-used times: %s", type(exc).__name__)
