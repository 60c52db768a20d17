"""Pure decisions of cluster mode: worker routing, merging per-community hits, pool sizing."""

from __future__ import annotations

import pytest

from cluster.distributed.autoscale import LoadMeter, ScaleState, desired_workers
from cluster.distributed.routing import affinity, merge_top, pick_worker
from smartgate.config import ClusterConfig
from smartgate.errors import ConfigError

WORKERS = ["w1", "w2", "w3"]


def test_idle_pool_keeps_each_gate_on_one_worker_and_spreads_gates() -> None:
    idle = dict.fromkeys(WORKERS, 0)
    picks = {gate: pick_worker(gate, idle) for gate in (f"c1/door-{i}" for i in range(60))}
    assert all(picks[g] == pick_worker(g, dict(idle)) for g in picks)  # stable
    assert set(picks.values()) == set(WORKERS)  # 60 gates use every worker


def test_a_busier_worker_loses_the_gate_to_the_least_loaded() -> None:
    idle = dict.fromkeys(WORKERS, 0)
    gate = "c1/door-1"
    home = pick_worker(gate, idle)
    busy = {w: (1 if w == home else 0) for w in WORKERS}
    assert pick_worker(gate, busy) != home
    assert pick_worker(gate, {w: 2 for w in WORKERS}) == home  # even load: back home


def test_removing_a_worker_moves_only_its_gates() -> None:
    gates = [f"c/g{i}" for i in range(200)]
    before = {g: pick_worker(g, dict.fromkeys(WORKERS, 0)) for g in gates}
    after = {g: pick_worker(g, dict.fromkeys(["w1", "w3"], 0)) for g in gates}
    assert all(after[g] == before[g] for g in gates if before[g] != "w2")


def test_excluded_and_empty_pools() -> None:
    assert pick_worker("g", {"w1": 0, "w2": 5}, exclude=["w1"]) == "w2"
    assert pick_worker("g", {"w1": 0}, exclude=["w1"]) is None
    assert pick_worker("g", {}) is None
    assert affinity("g", "w1") == affinity("g", "w1") != affinity("g", "w2")


@pytest.mark.parametrize(
    ("groups", "top_k", "expected"),
    [
        ([[("a", 0.9), ("b", 0.5)], [("c", 0.8), ("d", 0.1)]], 3, ["a", "c", "b"]),
        ([[("a", 0.9)], [], [("c", 0.95)]], 5, ["c", "a"]),
        ([[("a", 0.5)], [("c", 0.5)]], 2, ["a", "c"]),  # ties keep community order
        ([[("a", 0.5)]], 0, []),
        ([], 3, []),
    ],
)
def test_merge_top(groups: list[list[tuple[str, float]]], top_k: int, expected: list[str]) -> None:
    assert [item for item, _ in merge_top(groups, top_k)] == expected


CFG = ClusterConfig(
    min_workers=1, max_workers=3, scale_up_depth=2.0, scale_down_depth=0.5, scale_down_after_s=10
)


def test_pool_grows_one_at_a_time_up_to_the_maximum() -> None:
    state = ScaleState()
    assert desired_workers(CFG, 1, 3, 0.0, state) == 2  # 3 frames on 1 worker > 2
    assert desired_workers(CFG, 2, 4, 0.0, state) == 2  # 2 per worker: not above
    assert desired_workers(CFG, 2, 5, 0.0, state) == 3
    assert desired_workers(CFG, 3, 100, 0.0, state) == 3  # bounded


def test_pool_shrinks_only_after_a_quiet_period_and_never_below_the_minimum() -> None:
    state = ScaleState()
    assert desired_workers(CFG, 3, 0, 0.0, state) == 3  # low, but not for long yet
    assert desired_workers(CFG, 3, 1, 9.9, state) == 3
    assert desired_workers(CFG, 3, 1, 10.0, state) == 2
    assert desired_workers(CFG, 2, 0, 15.0, state) == 2  # the next step waits again
    assert desired_workers(CFG, 2, 0, 20.0, state) == 1
    assert desired_workers(CFG, 1, 0, 100.0, state) == 1


def test_a_burst_resets_the_quiet_period() -> None:
    state = ScaleState()
    assert desired_workers(CFG, 2, 0, 0.0, state) == 2
    assert desired_workers(CFG, 2, 3, 5.0, state) == 2  # back to normal load
    assert desired_workers(CFG, 2, 0, 11.0, state) == 2  # quiet again only since 11 s
    assert desired_workers(CFG, 2, 0, 21.0, state) == 1


def test_a_lost_worker_is_replaced_at_once_and_excess_is_cut() -> None:
    cfg = ClusterConfig(min_workers=2, max_workers=3)
    assert desired_workers(cfg, 0, 0, 0.0, ScaleState()) == 2
    assert desired_workers(cfg, 1, 50, 0.0, ScaleState()) == 2
    assert desired_workers(cfg, 5, 0, 0.0, ScaleState()) == 3


@pytest.mark.parametrize(
    "settings",
    [
        {"min_workers": 0},
        {"min_workers": 3, "max_workers": 2},
        {"scale_down_depth": 2.0, "scale_up_depth": 2.0},
        {"call_timeout_s": 0},
        {"worker_cpus": -1},
    ],
)
def test_cluster_config_is_checked(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="cluster"):
        ClusterConfig(**settings)  # type: ignore[arg-type]


def test_load_meter_averages_the_count_over_time_between_reads() -> None:
    meter = LoadMeter(0.0)
    meter.set(0.0, 1)  # one frame in flight for 0.4 s, two for 0.1 s, none for 0.5 s
    meter.set(0.4, 2)
    meter.set(0.5, 0)
    assert meter.mean(1.0) == pytest.approx((0.4 * 1 + 0.1 * 2) / 1.0)
    # A new window: the count carries over (0 since 0.5), then 3 frames for 1 s of 1.5.
    meter.set(1.5, 3)
    assert meter.mean(2.5) == pytest.approx(2.0)
    assert meter.mean(2.5) == 3.0  # no time passed: the current count
    # A point sample taken between frames would read 0; the mean does not.
    meter.set(2.5, 0)
    for k in range(10):
        meter.set(3.0 + k * 0.1, 1)
        meter.set(3.0 + k * 0.1 + 0.06, 0)
    assert meter.mean(4.0) == pytest.approx(0.6 * 1.0 / 1.5, abs=1e-9)
