"""Failure budgets shared by every instance through Redis: failed passwords (per address and
per account) and failed keys (per address), one budget for the whole deployment.

The in-process budgets (`gateway/throttle.py`, `gateway/keys/budget.py`) count what this
instance saw; with Redis configured each failure is also counted in one Redis counter per
budget and key (`<namespace>:fail:<budget>:<key>`, a fixed window opened by the first failure,
like the in-process ones), and before a password check or a key lookup the shared count is
read. N instances then allow the budget once, not N times; concurrent guesses racing on
several instances can overshoot it by the requests in flight. Redis unreachable: the
in-process budgets alone decide (each instance its own budget), never an error.
"""

from __future__ import annotations

import asyncio
import math

import redis.asyncio as aioredis
from redis.exceptions import RedisError

# Count one failure; the window starts with the first. Returns the count and ms left.
FAIL = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


class SharedFailures:
    """One shared failure budget (e.g. failed keys per address)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        namespace: str,
        budget: str,
        limit: int,
        window_seconds: float,
        deadline: float,
    ) -> None:
        self._redis = client
        self._prefix = f"{namespace}:fail:{budget}:"
        self._limit = limit
        self._window_ms = max(1, int(window_seconds * 1000))
        self._deadline = deadline

    async def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again by the shared count; 0 when it may now (or Redis
        cannot say)."""
        try:
            async with asyncio.timeout(self._deadline):
                pipe = self._redis.pipeline(transaction=False)
                pipe.get(self._prefix + key)
                pipe.pttl(self._prefix + key)
                count, ttl = await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            return 0
        if count is None or int(count) < self._limit or int(ttl) <= 0:
            return 0
        return max(1, math.ceil(int(ttl) / 1000))

    async def failed(self, key: str) -> None:
        """Count one failure of `key` (lost if Redis cannot be reached: the in-process budget
        still counts it)."""
        try:
            async with asyncio.timeout(self._deadline):
                await self._redis.eval(FAIL, 1, self._prefix + key, self._window_ms)
        except (RedisError, OSError, TimeoutError):
            return
