"""The recognizer pool's size: a pure decision over the load the frontend sees.

The load signal is the frames the frontend holds for recognition: waiting in the scheduler's
queue plus sent to a worker and not yet answered, the latter averaged over the time since the
last tick (``LoadMeter``: a point sample of a few frames in flight reads 0 a third of the time
under steady load, which shrank the pool mid-load). Per worker, above ``scale_up_depth`` the pool
grows by one (at most ``max_workers``); below ``scale_down_depth`` for ``scale_down_after_s``
seconds in a row it shrinks by one (at least ``min_workers``). Workers still starting count as
workers, so one burst does not start several at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from smartgate.config import ClusterConfig


@dataclass
class ScaleState:
    """What the decision remembers between ticks: since when the load has been low."""

    low_since: float | None = None


class LoadMeter:
    """The time-weighted mean of a count (frames in flight) between two reads. Not thread-safe:
    the caller serialises ``set`` and ``mean`` (the pool does, under its lock)."""

    def __init__(self, now: float, count: int = 0) -> None:
        self._count = count
        self._since = now  # when ``_count`` took its value
        self._start = now  # start of the current averaging window
        self._area = 0.0  # count × seconds within the window, before ``_since``

    def set(self, now: float, count: int) -> None:
        """The count is ``count`` from ``now`` on."""
        self._area += self._count * (now - self._since)
        self._count, self._since = count, now

    def mean(self, now: float) -> float:
        """The mean count since the previous ``mean`` (the current count if no time passed);
        starts a new window."""
        area = self._area + self._count * (now - self._since)
        span = now - self._start
        self._area, self._since, self._start = 0.0, now, now
        return area / span if span > 0 else float(self._count)


def desired_workers(
    config: ClusterConfig, workers: int, load: float, now: float, state: ScaleState
) -> int:
    """The pool size to aim for, given ``workers`` live or starting and ``load`` frames waiting
    or in flight at time ``now`` (seconds, monotonic). Updates ``state``. Always within
    ``[min_workers, max_workers]``: below ``min_workers`` (a worker died) it is restored at
    once whatever the load."""
    low, high = config.min_workers, config.max_workers
    if workers < low:
        state.low_since = None
        return low
    if workers > high:
        return high
    per_worker = load / workers
    if per_worker > config.scale_up_depth:
        state.low_since = None
        return min(high, workers + 1)
    if per_worker < config.scale_down_depth and workers > low:
        if state.low_since is None:
            state.low_since = now
        if now - state.low_since >= config.scale_down_after_s:
            state.low_since = now  # the next step down waits a full period again
            return workers - 1
        return workers
    state.low_since = None
    return workers
