"""Per-device rate limits: one token bucket per capture principal.

A device may send ``rate`` frames per second on average and ``burst`` at once; a frame beyond
that is refused with ``RateLimitedError`` (RESOURCE_EXHAUSTED): ``Submit`` returns it as the
RPC status, ``Stream`` answers that frame in-stream and goes on. The node's own overload
shedding (``cluster.scheduler``) is separate: it protects the node, this protects the other
gates from one flooding device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cluster.security import principal as principal_mod
from cluster.security.policy import ADMIN, GATE
from smartgate.errors import RateLimitedError
from smartgate.v1 import capture_pb2


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
