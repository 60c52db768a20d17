"""Device rate limits shared through a real redis-server: two frontends share one allowance;
with Redis gone each falls back to its own counters and capture goes on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer

from cluster.security.ratelimit import SharedFrameLimiter

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_two_frontends_share_one_devices_allowance(redis_server: RedisServer) -> None:
    a = SharedFrameLimiter(redis_server.url, rate=0.01, burst=3)
    b = SharedFrameLimiter(redis_server.url, rate=0.01, burst=3)
    try:
        allowed = [lim.allow("device:cam-1") for lim in (a, b, a, b, a, b)]
        assert allowed == [True, True, True, False, False, False]
        assert b.allow("device:cam-2")  # another device has its own bucket
    finally:
        a.close()
        b.close()


def test_without_redis_each_frontend_counts_alone_then_shares_again(
    redis_server: RedisServer,
) -> None:
    limiter = SharedFrameLimiter(redis_server.url, rate=0.01, burst=2)
    try:
        assert limiter.allow("device:cam-1")
        redis_server.stop()
        # Local buckets: a fresh allowance of its own, never an exception.
        assert [limiter.allow("device:cam-1") for _ in range(3)] == [True, True, False]
        redis_server.start()
        assert [limiter.allow("device:cam-1") for _ in range(3)] == [True, True, False]
    finally:
        limiter.close()
