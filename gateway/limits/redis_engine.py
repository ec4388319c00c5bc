"""Limits shared by every instance through Redis: one atomic script per request.

`SCRIPT` is `gcra.gcra` in Lua over every limit of the request, run by `EVALSHA` (loaded
again with `EVAL` when Redis answers NOSCRIPT, e.g. after a restart). It reads the clock
with Redis `TIME`, never the gateway's, so instances with skewed clocks share one timeline,
and it writes the new TATs only when every limit passed (a refused request spends nothing).
Scripts run one at a time in Redis, so racing instances can never both take the last unit.
The script returns Redis's time and the TATs it read; Python recomputes the states with
`gcra.gcra` from those, so both sides agree by construction.

Redis unreachable (an error, or no answer within `redis_timeout`): the instance falls back
to its in-process engine with every limit divided by the number of live instances, as last
seen in the heartbeat set (`<namespace>:instances`, a sorted set of instance ids scored by
Redis time, refreshed every HEARTBEAT_SECONDS). Never unlimited, never an error to the
client. After a failure the instance stays on the fallback for BACKOFF_SECONDS before it
tries Redis again, so a dead Redis does not add a timeout to every request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from gateway.limits.engine import LocalLimiter
from gateway.limits.gcra import Outcome, gcra
from gateway.limits.model import RateLimit

log = logging.getLogger("gateway.limits")

BACKOFF_SECONDS = 1.0
HEARTBEAT_SECONDS = 2.0
# An instance missing this many heartbeats is no longer counted as live.
HEARTBEAT_MISSES = 3
MAX_CONNECTIONS = 16

SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local ok = 1
local tats = {}
local news = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then
    tats[i] = stored
    local v = tonumber(stored)
    if v > now then tat = v end
  else
    tats[i] = '-1'
  end
  news[i] = tat + cost * interval
  if news[i] - now > tolerance then ok = 0 end
end
if ok == 1 and cost > 0 then
  for i = 1, #KEYS do
    local ttl = math.floor((news[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
end
return {string.format('%.0f', now), unpack(tats)}
"""

HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return redis.call('ZCARD', KEYS[1])
"""


class RedisLimiter:
    """The shared engine (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str,
        deadline: float,
        backoff: float = BACKOFF_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._redis = client
        self._prefix = f"{namespace}:rl:"
        self._instances = f"{namespace}:instances"
        self._deadline = deadline
        self._backoff = backoff
        self._heartbeat = heartbeat
        self._sha = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis's script id
        self._down_until = 0.0
        self.instance_id = uuid.uuid4().hex
        self.live_instances = 1  # last count seen in the heartbeat set
        self.fallback = LocalLimiter(divisor=lambda: self.live_instances)

    @classmethod
    def from_url(cls, url: str, *, namespace: str, deadline: float) -> RedisLimiter:
        # A bounded pool: a burst of concurrent requests queues for a connection (within the
        # deadline) instead of opening one each, which on a busy host makes connects time out.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=deadline, socket_connect_timeout=deadline
        )
        return cls(aioredis.Redis(connection_pool=pool), namespace=namespace, deadline=deadline)

    @property
    def degraded(self) -> bool:
        """Whether limits are on the per-instance fallback right now."""
        return time.monotonic() < self._down_until

    def check_now(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int
    ) -> Outcome | None:
        if time.monotonic() < self._down_until:
            return self.fallback.check_now(buckets, limits, cost)
        return None

    async def check(
        self, buckets: Sequence[str], limits: Sequence[RateLimit], cost: int
    ) -> Outcome:
        if time.monotonic() < self._down_until:
            return self.fallback.check_now(buckets, limits, cost)
        keys = [self._prefix + b for b in buckets]
        args: list[int] = [cost]
        for limit in limits:
            args += (limit.interval_us, limit.tolerance_us)
        try:
            async with asyncio.timeout(self._deadline):
                try:
                    reply = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
                except NoScriptError:
                    reply = await self._redis.eval(SCRIPT, len(keys), *keys, *args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._down_until = time.monotonic() + self._backoff
            log.warning(
                "rate limits on the per-instance fallback (1/%d of each limit): Redis %s",
                self.live_instances,
                type(exc).__name__,
            )
            return self.fallback.check_now(buckets, limits, cost)
        now = int(reply[0])
        tats = [None if int(t) < 0 else int(t) for t in reply[1:]]
        return gcra(tats, limits, cost, now)

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
        while True:
            await self.beat()
            await asyncio.sleep(self._heartbeat)

    async def close(self) -> None:
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.zrem(self._instances, self.instance_id)
        except (RedisError, OSError, TimeoutError):
            pass
        await self._redis.aclose()
