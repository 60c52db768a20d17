"""Per-device rate limits: one token bucket per capture principal.

A device may send ``rate`` frames per second on average and ``burst`` at once; a frame beyond
that is refused with ``RateLimitedError`` (RESOURCE_EXHAUSTED): ``Submit`` returns it as the
RPC status, ``Stream`` answers that frame in-stream and goes on. The node's own overload
shedding (``cluster.scheduler``) is separate: it protects the node, this protects the other
gates from one flooding device.

``SharedFrameLimiter`` keeps the buckets in Redis (one hash per device, updated by one Lua
script on Redis's clock), so a device's allowance holds across every frontend it reaches.
When Redis cannot be reached, each frontend falls back to its own buckets (a device then gets
at most its allowance per frontend) and says so in the log once per outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from cluster.security import principal as principal_mod
from cluster.security.policy import ADMIN, GATE
from smartgate.errors import RateLimitedError
from smartgate.v1 import capture_pb2

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "smartgate:ratelimit"

#: KEYS[1]: the bucket; ARGV: rate, burst. Refills on Redis's clock, spends one token if it can,
#: returns 1 (allowed) or 0; the bucket expires once it would be full again anyway.
_TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local ok = 0
if tokens >= 1 - 1e-9 then
  tokens = math.max(0, tokens - 1)
  ok = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return ok
"""


@dataclass
class TokenBucket:
    """``tokens`` refill at ``rate`` per second up to ``burst``; ``take`` spends one."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0 - 1e-9:  # a whole frame's worth, up to float rounding
            self.tokens = max(0.0, self.tokens - 1.0)
            return True
        return False


class FrameLimiter:
    """Token buckets keyed by the caller (``Principal.actor``), for capture principals (scope
    ``gate``, not ``admin``); the local principal (auth off) is never limited."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Spend one frame of ``key``'s allowance; False when it has none left."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_keys:
                    self._buckets.clear()  # bounded memory; a reset only grants one more burst
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, self.burst, now)
            return bucket.take(now)

    def admit(self, frame: capture_pb2.Frame) -> None:
        """Raise ``RateLimitedError`` when the current caller exceeds its allowance."""
        caller = principal_mod.current()
        if GATE not in caller.scopes or ADMIN in caller.scopes:
            return
        if not self.allow(caller.actor):
            raise RateLimitedError(
                f"{caller.actor} sends faster than {self.rate:g} frames/s (burst "
                f"{self.burst:g}): frame {frame.seq} of gate {frame.gate!r} dropped"
            )


class SharedFrameLimiter(FrameLimiter):
    """``FrameLimiter`` whose buckets live in Redis at ``url`` (shared by every frontend)."""

    def __init__(self, url: str, rate: float, burst: int, timeout_s: float = 0.25) -> None:
        super().__init__(rate, burst)
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._take: Any = self._redis.register_script(_TAKE)
        self._degraded = False

    def allow(self, key: str) -> bool:
        try:
            allowed = bool(self._take(keys=[f"{KEY_PREFIX}:{key}"], args=[self.rate, self.burst]))
        except redis.RedisError as exc:
            if not self._degraded:
                log.warning("rate limits fall back to this process's counters (Redis: %s)", exc)
                self._degraded = True
            return super().allow(key)
        if self._degraded:
            log.info("rate limits shared through Redis again")
            self._degraded = False
        return allowed

    def close(self) -> None:
        self._redis.close()
