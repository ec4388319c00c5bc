"""Building the long-lived service objects once, for the server and the CLI alike."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from gateway import events, metrics
from gateway.cache.redis import SharedCache
from gateway.errors import GatewayError, TooManyRequests
from gateway.keys import idle
from gateway.keys.budget import KEY_FAILURES, KeyBudget, key_budget_refusal
from gateway.keys.hashing import KeyHasher
from gateway.keys.manage import KeyService
from gateway.keys.poller import InvalidationPoller, retention_for
from gateway.keys.rehash import PreviousSecrets
from gateway.keys.secret_check import check_secret
from gateway.keys.usage import PermissionUsage
from gateway.keys.vault import KeyVault
from gateway.keys.verify import KeyVerifier, VerifiedKey
from gateway.limits.engine import FLUSH_SECONDS, Limiter, LocalLimiter
from gateway.limits.failures import SharedFailures
from gateway.limits.quota import QuotaService
from gateway.limits.redis_engine import RedisLimiter
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
    # Rate-limit state: shared through Redis when it is configured, else in this process.
    limiter: Limiter = field(default_factory=LocalLimiter)
    quotas: QuotaService | None = None  # set by open_services
    # With Redis: the same budgets counted once for every instance (limits/failures.py).
    shared_ip_failures: SharedFailures | None = None
    shared_account_failures: SharedFailures | None = None
    shared_key_failures: SharedFailures | None = None

    @property
    def quota(self) -> QuotaService:
        if self.quotas is None:
            self.quotas = QuotaService(self.store, self.limiter)
        return self.quotas

    # When `policy` became the active one (unix time), and who must follow a new one (the
    # wiring adds the forwarder).
    policy_loaded_at: float = field(default_factory=time.time)
    policy_watchers: list[Callable[[Policy], None]] = field(default_factory=list)
    reload_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def swap_policy(self, policy: Policy) -> None:
        """Make `policy` the active one, in one step of the event loop (no await): a request
        reads `self.policy` once when it starts deciding and keeps that object to its end,
        so requests in flight finish under the policy they started with. Everything that
        holds the catalog or something derived from it follows here."""
        self.policy = policy
        self.policy_loaded_at = time.time()
        metrics.policy_loaded(policy.digest, self.policy_loaded_at)
        self.verifier.use_catalog(policy.catalog)
        self.keys.use_catalog(policy.catalog)
        self.users.use_catalog(policy.catalog)
        for watcher in self.policy_watchers:
            watcher(policy)

    # Which permissions keys used, flushed with the last-used times (keys/usage.py).
    usage: PermissionUsage = field(default_factory=PermissionUsage)

    async def check_password(self, email: str, password: str, address: str) -> User | None:
        """Every password check (login page, Basic email:password, re-authentication) goes
        through here, so one budget per address and per account covers all of them.

        Raises TooManyRequests while either is blocked; None for wrong credentials.
        """
        account = email.strip().lower()
        wait = max(
            self.ip_throttle.retry_after(address), self.account_throttle.retry_after(account)
        )
        if not wait and self.shared_ip_failures and self.shared_account_failures:
            wait = max(
                await self.shared_ip_failures.retry_after(address),
                await self.shared_account_failures.retry_after(account),
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
            if self.shared_ip_failures and self.shared_account_failures:
                await self.shared_ip_failures.failed(address)
                await self.shared_account_failures.failed(account)
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
        shared = self.shared_key_failures
        if shared is not None:
            wait = await shared.retry_after(address)
            if wait:
                raise key_budget_refusal(wait)
        try:
            return await self.verifier.lookup(key, digest)
        except GatewayError as exc:
            if exc.code in KEY_FAILURES:
                self.key_budget.failed(address)
                if shared is not None:
                    await shared.failed(address)
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
    limiter: RedisLimiter | None = None
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
            limiter = RedisLimiter.from_url(
                settings.redis_url,
                namespace=settings.redis_namespace,
                deadline=settings.redis_timeout,
                store=store,
                lease=settings.rate_limit_lease,
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
            accept_legacy=settings.accept_legacy_keys,
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
            accept_legacy=settings.accept_legacy_keys,
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
            limiter=limiter if limiter is not None else LocalLimiter(store=store),
        )
        if limiter is not None:
            _share_budgets(services, limiter, settings)
        keys.on_retired = services.limiter.forget
        metrics.policy_loaded(policy.digest, services.policy_loaded_at)
        yield services
    finally:
        if limiter is not None:
            await limiter.close()
        if shared is not None:
            await shared.close()
        await store.close()


def _share_budgets(services: Services, limiter: RedisLimiter, settings: Settings) -> None:
    def budget(name: str, limit: int, window: float) -> SharedFailures:
        return SharedFailures(
            limiter.redis,
            namespace=settings.redis_namespace,
            budget=name,
            limit=limit,
            window_seconds=window,
            deadline=settings.redis_timeout,
        )

    services.shared_ip_failures = budget(
        "password-ip", settings.login_max_failures * IP_FAILURE_FACTOR, settings.login_window
    )
    services.shared_account_failures = budget(
        "password-account", settings.login_max_failures, settings.login_window
    )
    services.shared_key_failures = budget(
        "key-ip", settings.key_max_failures, settings.key_failure_window
    )


@contextlib.asynccontextmanager
async def run_background(services: Services) -> AsyncIterator[None]:
    """Background tasks of a serving instance: invalidation listener and log poller,
    last-used flush (with the permissions used), and the idle-key sweep when it is on."""
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
    tasks.append(asyncio.create_task(_flush_balances(services)))
    if isinstance(services.limiter, RedisLimiter):
        tasks.append(asyncio.create_task(services.limiter.run_heartbeat()))
    if services.settings.idle_key_days > 0:
        tasks.append(asyncio.create_task(idle.run(services.store, services.settings.idle_key_days)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await flush_bookkeeping(services)
        await _flush_balances_once(services)


async def _flush_balances(services: Services) -> None:
    task = asyncio.current_task()
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        await _flush_balances_once(services)
        if task is not None and task.cancelling():  # a stop its deadlines took (3.11)
            raise asyncio.CancelledError


async def _flush_balances_once(services: Services) -> None:
    try:
        await services.limiter.flush()
    except Exception as exc:  # noqa: BLE001 - the balance stays in Redis; retried next time
        log.warning("could not write key credit balances: %s", type(exc).__name__)


async def _flush_last_used(services: Services) -> None:
    while True:
        await asyncio.sleep(LAST_USED_FLUSH_SECONDS)
        await flush_bookkeeping(services)


async def flush_bookkeeping(services: Services) -> None:
    """Write the last-used times and permission uses noted since the last flush."""
    batch = services.verifier.take_last_used()
    uses = services.usage.take(services.policy.catalog)
    try:
        if batch:
            await services.store.touch_keys(batch)
        if uses:
            await services.store.record_permission_use(uses)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must never take the server down
        log.warning("could not record key last-used times: %s", type(exc).__name__)
