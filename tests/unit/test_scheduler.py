"""The frame scheduler: bounded queues, shedding the oldest frames, batches, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from cluster.scheduler import FrameScheduler
from smartgate.config import CaptureConfig
from smartgate.errors import ConfigError, OverloadedError


class Gate:
    """A processing function that blocks until released, recording what it saw."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.seen: list[list[int]] = []

    def __call__(self, items: Sequence[int]) -> list[int | BaseException]:
        self.release.wait(10)
        self.seen.append(list(items))
        return [i * 10 if i >= 0 else ValueError(f"bad {i}") for i in items]


def _scheduler(fn, **kw) -> FrameScheduler[int, int]:  # type: ignore[no-untyped-def]
    return FrameScheduler(fn, CaptureConfig(**kw))


def test_results_come_back_per_frame_and_one_bad_frame_fails_alone() -> None:
    fn = Gate()
    fn.release.set()
    s = _scheduler(fn, workers=2, per_gate_limit=100)
    futures = [s.submit("g", i) for i in (1, 2, -3, 4)]
    assert futures[0].result(5) == 10 and futures[3].result(5) == 40
    with pytest.raises(ValueError, match="bad -3"):
        futures[2].result(5)
    s.close()
    assert s.stats.completed == 3 and s.stats.failed == 1


def test_a_gate_over_its_limit_sheds_its_oldest_waiting_frame() -> None:
    fn = Gate()
    s = _scheduler(fn, workers=1, per_gate_limit=2)
    busy = s.submit("g1", 0)  # taken by the only worker, which blocks
    time.sleep(0.1)
    waiting = [s.submit("g1", i) for i in (1, 2, 3)]  # 1 is shed when 3 arrives
    other = s.submit("g2", 9)  # another gate is not affected
    with pytest.raises(OverloadedError, match="faster than the node"):
        waiting[0].result(1)
    fn.release.set()
    assert [f.result(5) for f in waiting[1:]] == [20, 30]
    assert busy.result(5) == 0 and other.result(5) == 90
    assert s.stats.shed == {"g1": 1}
    s.close()


def test_a_replaced_frame_keeps_its_gates_place_in_line() -> None:
    # g1's newer frame takes its waiting frame's place, ahead of g2's: it is not sent to the
    # back, where a gate whose frames are always replaced in time would never be served.
    fn = Gate()
    s = _scheduler(fn, workers=1, per_gate_limit=1)
    busy = s.submit("g0", 0)
    time.sleep(0.1)
    first = s.submit("g1", 1)
    other = s.submit("g2", 2)
    newer = s.submit("g1", 3)  # sheds 1, waits where 1 waited
    with pytest.raises(OverloadedError):
        first.result(1)
    fn.release.set()
    assert busy.result(5) == 0 and newer.result(5) == 30 and other.result(5) == 20
    assert [items for items in fn.seen] == [[0], [3], [2]]
    s.close()


def test_under_overload_every_gate_gets_its_share() -> None:
    # One worker, four gates each sending faster than it answers, gates phase-shifted: each
    # gate's frames are replaced while waiting, yet the gates are served in turn.
    served: list[str] = []

    def slow(items: Sequence[tuple[str, int]]) -> list[int]:
        time.sleep(0.02)
        served.extend(gate for gate, _ in items)
        return [0 for _ in items]

    s: FrameScheduler[tuple[str, int], int] = FrameScheduler(
        slow, CaptureConfig(workers=1, per_gate_limit=1, max_wait_ms=10_000)
    )
    gates = ["a", "b", "c", "d"]
    for n in range(60):  # a frame every 5 ms: 200 fps against ~50 answered
        gate = gates[n % 4]
        s.submit(gate, (gate, n))
        time.sleep(0.005)
    s.close()
    counts = {g: served.count(g) for g in gates}
    assert min(counts.values()) >= max(counts.values()) - 1, counts


def test_frames_that_waited_too_long_are_shed() -> None:
    fn = Gate()
    s = _scheduler(fn, workers=1, max_wait_ms=50, per_gate_limit=100)
    first = s.submit("g", 0)
    time.sleep(0.05)
    late = [s.submit("g", i) for i in (1, 2)]
    time.sleep(0.15)
    fn.release.set()
    assert first.result(5) == 0
    for f in late:
        with pytest.raises(OverloadedError, match="waited longer than 50 ms"):
            f.result(5)
    s.close()


def test_batches_fill_up_to_max_batch_or_time_out() -> None:
    fn = Gate()
    fn.release.set()
    s = _scheduler(
        fn, workers=1, max_batch=4, batch_wait_ms=200, per_gate_limit=100, max_wait_ms=5000
    )
    futures = [s.submit(f"g{i}", i) for i in range(6)]
    assert [f.result(5) for f in futures] == [i * 10 for i in range(6)]
    assert max(len(b) for b in fn.seen) == 4
    assert sum(len(b) for b in fn.seen) == 6
    s.close()


def test_a_failing_batch_fails_every_frame_in_it() -> None:
    def explode(items: Sequence[int]) -> list[int]:
        raise RuntimeError("model crashed")

    s = _scheduler(explode, workers=1)
    with pytest.raises(RuntimeError, match="model crashed"):
        s.submit("g", 1).result(5)
    s.close()


def test_wrong_result_count_is_an_error() -> None:
    s = _scheduler(lambda items: [], workers=1)
    with pytest.raises(RuntimeError, match="1 frames gave 0 results"):
        s.submit("g", 1).result(5)
    s.close()


def test_close_fails_waiting_frames_and_refuses_new_ones() -> None:
    fn = Gate()
    s = _scheduler(fn, workers=1, per_gate_limit=10)
    s.submit("g", 0)
    time.sleep(0.05)
    waiting = s.submit("g", 1)
    fn.release.set()
    s.close()
    assert isinstance(waiting.exception(5), (OverloadedError, type(None)))
    with pytest.raises(OverloadedError, match="shutting down"):
        s.submit("g", 2).result(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"per_gate_limit": 0}, "per_gate_limit"),
        ({"max_wait_ms": 0}, "max_wait_ms"),
    ],
)
def test_config_is_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CaptureConfig(**kwargs)  # type: ignore[arg-type]
