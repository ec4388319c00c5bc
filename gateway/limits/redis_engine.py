"""Limits shared by every instance through Redis: one atomic script per request.

`SCRIPT` is `gcra.gcra` in Lua over every limit of the request, run by `EVALSHA` (loaded
again with `EVAL` when Redis answers NOSCRIPT, e.g. after a restart). It reads the clock
with Redis `TIME`, never the gateway's, so instances with skewed clocks share one timeline,
and it writes the new TATs only when every limit passed (a refused request spends nothing).
Scripts run one at a time in Redis, so racing instances can never both take the last unit.
The script returns Redis's time and the TATs it read; Python recomputes the states with
`gcra.gcra` from those, so both sides agree by construction.

Leases (setting `rate_limit_lease`, off by default): a round trip per request caps the
throughput of a limited route, so an instance may take up to `lease` requests' worth of a
limit from Redis in one script call (atomically, like any spend) and hand them out from
memory for at most LEASE_SECONDS. Every allowed request was paid for in Redis first, so the
budget is never exceeded; the price is that units leased but not used are lost to the other
instances until they refill: a client can be refused early by at most the units the
instances hold. A lease is at most burst / (LEASE_SHARE * live instances) (and only taken
when that allows two requests or more); the next one is taken in the background when a
quarter of the current one is left, so an instance holds at most 1.25 leases: all instances
together at most 5/16 of the burst. The remaining count in the RateLimit field is this
instance's view. Requests that pay credits never lease.

Redis unreachable (an error, or no answer within `redis_timeout`): the instance falls back
to its in-process engine with every limit divided by the number of live instances, as last
seen in the heartbeat set (`<namespace>:instances`, a sorted set of instance ids scored by
Redis time, refreshed every HEARTBEAT_SECONDS). Never unlimited, never an error to the
client. After a failure the instance stays on the fallback for BACKOFF_SECONDS before it
tries Redis again, so a dead Redis does not add a timeout to every request.

Credits paid on the fallback (each instance spends its share of the stored balance) are
written behind too: `flush` takes them off the stored balance (relative, so the instances'
spends add up; an administrator's change since wins, as on the normal path). Once Redis
answers again, the Redis balance of each key spent on the fallback is dropped, so the next
request loads the store's, which has those spends; it is never also taken off the Redis
balance, so nothing is charged twice. What this gives back, never takes twice: spends made
through Redis but not yet written behind when the outage began or when the balance is
dropped (at most FLUSH_SECONDS of them, the bound of a Redis restart), and fallback spends
of an instance that writes them after another one's reload (until that instance drops the
balance in turn).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.limits.credits import CreditState, next_refill
from gateway.limits.engine import LocalLimiter, QuotaStore
from gateway.limits.gcra import Outcome, gcra
from gateway.limits.model import RateLimit
from gateway.limits.scripts import HEARTBEAT, LOAD, SCRIPT

log = logging.getLogger("gateway.limits")

BACKOFF_SECONDS = 1.0
# A lease (see `RedisLimiter`) is used for at most this long, then given up unused.
LEASE_SECONDS = 1.0
# Leases of all instances together hold at most this share of a limit's burst.
LEASE_SHARE = 4
MAX_LEASES = 10_000
HEARTBEAT_SECONDS = 2.0
# An instance missing this many heartbeats is no longer counted as live.
HEARTBEAT_MISSES = 3
MAX_CONNECTIONS = 16


class RedisLimiter:
    """The shared engine (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str,
        deadline: float,
        store: QuotaStore | None = None,
        backoff: float = BACKOFF_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
        lease: int = 0,
    ) -> None:
        self._redis = client
        self._lease = lease
        self._leases: dict[tuple[tuple[str, ...], int], _Lease] = {}
        self._pending: dict[tuple[tuple[str, ...], int], asyncio.Future[None]] = {}
        self._renewals: set[asyncio.Task[None]] = set()
        self._prefix = f"{namespace}:rl:"
        self._credits = f"{namespace}:cr:"
        self._instances = f"{namespace}:instances"
        self._deadline = deadline
        self._store = store
        self._backoff = backoff
        self._heartbeat = heartbeat
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._down_until = 0.0
        self._dirty: set[str] = set()
        self.instance_id = uuid.uuid4().hex
        self.live_instances = 1  # last count seen in the heartbeat set
        # Credits paid on the fallback, not yet taken off the store (see `_save_fallback`),
        # and the keys whose Redis balance they make stale (see `_settle_fallback`).
        self._unsaved: dict[str, int] = {}
        self._stale: set[str] = set()
        self.fallback = LocalLimiter(
            store=store,
            divisor=lambda: self.live_instances,
            write_behind=False,
            ledger=self._unsaved,
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str,
        deadline: float,
        store: QuotaStore | None = None,
        lease: int = 0,
    ) -> RedisLimiter:
        # A bounded pool: a burst of concurrent requests queues for a connection (within the
        # deadline) instead of opening one each, which on a busy host makes connects time out.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=deadline, socket_connect_timeout=deadline
        )
        client = aioredis.Redis(connection_pool=pool)
        return cls(client, namespace=namespace, deadline=deadline, store=store, lease=lease)

    @property
    def redis(self) -> aioredis.Redis:
        """The client, for other shared counters (limits/failures.py)."""
        return self._redis

    @property
    def degraded(self) -> bool:
        """Whether limits are on the per-instance fallback right now."""
        return time.monotonic() < self._down_until

    def check_now(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome | None:
        now = time.monotonic()
        if now < self._down_until:
            return self.fallback.check_now(buckets, limits, cost, account)
        if self._leases and account is None:
            key = (tuple(buckets), cost)
            lease = self._leases.get(key)
            if lease is not None and lease.left and now < lease.until:
                lease.left -= 1
                if lease.left * 4 < lease.count and key not in self._pending:
                    self._renew(key, limits)  # the next lease arrives before this one ends
                return _held(lease.outcome, lease.left * cost)
        return None

    def _renew(self, key: tuple[tuple[str, ...], int], limits: Sequence[RateLimit]) -> None:
        done = self._pending[key] = asyncio.get_running_loop().create_future()

        async def renew() -> None:
            try:
                await self._leased(key[0], limits, key[1], spend_one=False)
            finally:
                del self._pending[key]
                done.set_result(None)

        task = asyncio.get_running_loop().create_task(renew())
        self._renewals.add(task)  # referenced until done: the loop holds tasks weakly
        task.add_done_callback(self._renewals.discard)

    async def check(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        account: str | None = None,
    ) -> Outcome:
        if time.monotonic() < self._down_until:
            return await self.fallback.check(buckets, limits, cost, account)
        if self._lease and account is None and cost:
            key = (tuple(buckets), cost)
            pending = self._pending.get(key)
            if pending is not None:
                # One lease at a time per bucket set: the requests that missed it together
                # wait for it rather than each taking one.
                await asyncio.shield(pending)
                now = self.check_now(buckets, limits, cost)
                if now is not None:
                    return now
            else:
                done = self._pending[key] = asyncio.get_running_loop().create_future()
                try:
                    leased = await self._leased(buckets, limits, cost)
                finally:
                    del self._pending[key]
                    done.set_result(None)
                if leased is not None:
                    return leased
        return await self._spend(buckets, limits, cost, account)

    async def _leased(
        self,
        buckets: Sequence[str],
        limits: Sequence[RateLimit],
        cost: int,
        *,
        spend_one: bool = True,
    ) -> Outcome | None:
        """Take a lease of several requests' worth and (`spend_one`) spend one of it; None
        when no lease can be had (too small a burst, or not enough left: then an exact spend
        decides). A lease taken while one is held adds to it and extends it."""
        share = min(lim.burst for lim in limits) // (LEASE_SHARE * max(1, self.live_instances))
        count = min(self._lease, share // cost)
        if count < 2:
            return None
        outcome = await self._spend(buckets, limits, cost * count, None)
        if not outcome.allowed:
            return None
        if len(self._leases) >= MAX_LEASES:
            now = time.monotonic()
            self._leases = {k: v for k, v in self._leases.items() if v.until > now}
            if len(self._leases) >= MAX_LEASES:
                self._leases.clear()
        key = (tuple(buckets), cost)
        held = self._leases.get(key)
        now = time.monotonic()
        left = count - 1 if spend_one else count
        if held is not None and now < held.until:
            left += held.left
        self._leases[key] = _Lease(left, now + LEASE_SECONDS, outcome, count)
        return _held(outcome, left * cost)

    async def _spend(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int, account: str | None
    ) -> Outcome:
        keys = [self._prefix + b for b in buckets]
        args: list[int] = [cost, 0 if account is None else 1]
        for limit in limits:
            args += (limit.interval_us, limit.tolerance_us)
        if account is not None:
            keys.append(self._credits + account)
        try:
            if account is not None and (account in self._stale or account in self._unsaved):
                await self._settle_now()
            async with asyncio.timeout(self._deadline):
                reply = await self._run(keys, args)
                if reply[0] == b"load":
                    if not await self._load(account):
                        args[1] = 0  # the key spends no credits (any more)
                        keys.pop()
                    reply = await self._run(keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self._backoff
            log.warning(
                "rate limits on the per-instance fallback (1/%d of each limit): Redis %s",
                self.live_instances,
                type(exc).__name__,
            )
            return await self.fallback.check(buckets, limits, cost, account)
        now = int(reply[0])
        tats = [None if int(t) < 0 else int(t) for t in reply[4:]]
        paid = None
        if args[1]:
            paid = _paid(int(reply[1]), reply[2].decode(), reply[3].decode(), cost, now)
        outcome = gcra(tats, limits, cost, now, paid)
        if paid is not None and outcome.allowed and cost:
            self._dirty.add(str(account))
        return outcome

    async def _run(self, keys: list[str], args: list[int]) -> list[bytes]:
        try:
            reply = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            reply = await self._redis.eval(SCRIPT, len(keys), *keys, *args)
        return list(reply)

    async def _load(self, account: str | None) -> bool:
        """Put a key's stored balance in Redis; False if it spends no credits."""
        quota = None
        if account is not None and self._store is not None:
            quota = await self._store.get_quota(account)
        if quota is None or quota.credits is None:
            return False
        await self._redis.eval(
            LOAD,
            1,
            self._credits + quota.key_id,
            quota.credits,
            quota.period or "",
            quota.refill or "",
            quota.refill_amount,
            quota.refill_mode,
            quota.version,
        )
        return True

    async def forget(self, account: str) -> None:
        await self.fallback.forget(account)
        self._dirty.discard(account)
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.delete(self._credits + account)
        except (RedisError, OSError, TimeoutError):
            pass  # the next write-behind finds the stored version changed and drops it

    async def balance(self, account: str) -> int | None:
        if time.monotonic() < self._down_until:
            return await self.fallback.balance(account)
        try:
            async with asyncio.timeout(self._deadline):
                value = await self._redis.hget(self._credits + account, "b")
        except (RedisError, OSError, TimeoutError):
            return await self.fallback.balance(account)
        return int(value) if value is not None else None

    async def flush(self) -> None:
        """Write-behind: the Redis balance of every key spent since the last flush to the
        store. A balance whose stored version moved on (an administrator set it) is dropped
        from Redis instead, so the next request loads the new one. Credits paid on the
        fallback are taken off the store, and once Redis answers again the Redis balances
        they make stale are dropped (see the module docstring)."""
        if self._store is None:
            return
        await self._save_fallback(self._store)
        if self._stale and not self.degraded:
            await self._settle_fallback()
        if not self._dirty:
            return
        # A stale Redis balance must not overwrite what the fallback took off the store.
        dirty, self._dirty = self._dirty - self._stale, set()
        for account in dirty:
            name = self._credits + account
            try:
                async with asyncio.timeout(self._deadline):
                    balance, period, version = await self._redis.hmget(name, "b", "p", "v")
            except (RedisError, OSError, TimeoutError):
                self._dirty |= dirty  # try again next time
                return
            if balance is None or version is None:
                continue
            text = period.decode() if isinstance(period, bytes) else ""
            saved = await self._store.save_balance(
                account, int(balance), text or None, int(version)
            )
            if not saved:
                await self.forget(account)

    async def _settle_now(self) -> None:
        """A key spent on the fallback is about to spend through Redis again: write the
        fallback's spends and drop the stale Redis balance first, rather than let the key
        spend from it until the next flush. A store failure leaves that to the next flush;
        a Redis one raises (the request falls back, after one deadline, not two)."""
        try:
            if self._store is not None:
                await self._save_fallback(self._store)
        except Exception as exc:  # noqa: BLE001 - the request is decided all the same
            log.warning("could not write fallback credit spends: %s", type(exc).__name__)
            return
        if not await self._settle_fallback():
            raise TimeoutError("Redis did not drop the stale balances")

    async def _save_fallback(self, store: QuotaStore) -> None:
        """Take the credits paid on the fallback off the stored balance (relative, so the
        shares several instances spent add up); a balance an administrator changed since it
        was read is re-read instead, like the normal write-behind."""
        while self._unsaved:
            account, amount = self._unsaved.popitem()
            held = self.fallback.held(account)
            if held is None:
                continue  # forgotten since (an administrator's change): nothing to take off
            try:
                saved = await store.spend_balance(account, amount, held.quota.version)
            except BaseException:
                self._unsaved[account] = self._unsaved.get(account, 0) + amount  # next time
                raise
            self._stale.add(account)
            if not saved:
                await self.fallback.forget(account)

    async def _settle_fallback(self) -> bool:
        """Redis answers again: drop the Redis balance of every key spent on the fallback (it
        predates those spends), so the next request loads the store's, which has them; and
        the fallback's share, so a later outage reads the store afresh."""
        stale = list(self._stale)
        if not stale:
            return True
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.delete(*(self._credits + account for account in stale))
        except (RedisError, OSError, TimeoutError):
            return False  # still stale: next time
        self._stale.difference_update(stale)
        self._dirty.difference_update(stale)
        for account in stale:
            await self.fallback.forget(account)
        return True

    async def beat(self) -> None:
        """Announce this instance and read how many are live (one heartbeat)."""
        window = self._heartbeat * HEARTBEAT_MISSES
        try:
            async with asyncio.timeout(self._deadline):
                count = await self._redis.eval(
                    HEARTBEAT, 1, self._instances, self.instance_id, window
                )
        except (RedisError, OSError, TimeoutError):
            return  # the last count stands
        self.live_instances = max(1, int(count))

    async def run_heartbeat(self) -> None:
        task = asyncio.current_task()
        while True:
            await self.beat()
            # A stop that arrived inside `beat` may have been taken for its deadline (3.11's
            # asyncio.timeout turns a cancellation that races the deadline into TimeoutError,
            # which `beat` absorbs): honour it here, or the stop waits for ever.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self._heartbeat)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.zrem(self._instances, self.instance_id)
        except (RedisError, OSError, TimeoutError):
            pass
        # Bounded too: redis-py's blocking pool can wait on a connection a cancelled call
        # left checked out, and a stop must never hang on it.
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.aclose()
        except (RedisError, OSError, TimeoutError):
            pass


@dataclass(slots=True)
class _Lease:
    """Requests paid for in Redis, to hand out from memory until `until` (monotonic)."""

    left: int
    until: float
    outcome: Outcome
    count: int  # requests one lease takes


def _held(outcome: Outcome, units: int) -> Outcome:
    """A lease's outcome as one request sees it: the units this instance still holds count
    as remaining."""
    states = tuple(s._replace(remaining=s.remaining + units) for s in outcome.states)
    return outcome._replace(states=states)


def _paid(before: int, period: str, kind: str, cost: int, now: int) -> CreditState:
    """The credits' verdict from what the script read (the balance after any refill)."""
    if before < cost:
        return CreditState(
            False, before, period or None, next_refill(kind or None, now // 1_000_000)
        )
    return CreditState(True, before - cost, period or None, None)
