"""benchmarks.gates.search_saturation: the loads it tries against a simulated node (pure logic;
the harness itself runs for real in tests/integration/test_bench_harness.py)."""

from __future__ import annotations

import pytest

from benchmarks.gates import RAMP, REFINE_STEPS, search_saturation


class SimulatedNode:
    """Keeps up with loads up to ``peak``; past it answers ``collapse`` of the peak (a node
    answers less past saturation). Records every load tried."""

    def __init__(self, peak: float, collapse: float = 0.85) -> None:
        self.peak = peak
        self.collapse = collapse
        self.tried: list[tuple[str, float]] = []
        self.best = 0.0

    def attempt(self, load: float, label: str) -> tuple[bool, float]:
        self.tried.append((label, load))
        answered = load if load <= self.peak else self.peak * self.collapse
        self.best = max(self.best, answered)
        return load <= self.peak, answered


@pytest.mark.parametrize("peak", [60.0, 100.0, 110.0, 118.0, 125.0, 160.0])
def test_the_search_finds_the_peak_within_three_percent(peak: float) -> None:
    node = SimulatedNode(peak)
    search_saturation(node.attempt, 32.0)
    assert peak / 1.03 <= node.best <= peak
    # It never tries a load above the first one it could not keep up with.
    first_over = next(load for _, load in node.tried if load > peak)
    assert max(load for _, load in node.tried) == first_over
    assert len(node.tried) <= 8 + REFINE_STEPS


def test_the_ramp_then_halvings_of_the_bracket() -> None:
    node = SimulatedNode(118.0)
    search_saturation(node.attempt, 32.0)
    loads = [round(load, 1) for _, load in node.tried]
    # 108 kept up with, 162 not: 132.3 (over), 119.5 (over), 113.6, 116.5 (both kept up).
    assert loads == [32.0, 48.0, 72.0, 108.0, 162.0, 132.3, 119.5, 113.6, 116.5]
    assert [label for label, _ in node.tried][4:6] == ["search 5", "refine 1"]
    assert node.best == pytest.approx(116.5, abs=0.1)


def test_refining_stops_once_the_bracket_is_narrow() -> None:
    node = SimulatedNode(1000.0)
    search_saturation(node.attempt, 100.0)
    refines = [load for label, load in node.tried if label.startswith("refine")]
    assert len(refines) == REFINE_STEPS
    assert all(759.375 < load < 759.375 * RAMP for load in refines)


def test_when_even_the_first_load_is_too_much_the_search_looks_below_what_it_answered() -> None:
    node = SimulatedNode(40.0, collapse=0.9)  # 64 offered: 36 answered
    search_saturation(node.attempt, 64.0)
    loads = [load for _, load in node.tried]
    assert loads[0] == 64.0 and loads[1] == pytest.approx(0.95 * 36.0)
    assert 40.0 / 1.1 <= node.best <= 40.0


def test_a_node_that_never_falls_behind_ends_the_ramp() -> None:
    node = SimulatedNode(float("inf"))
    search_saturation(node.attempt, 1.0)
    assert len(node.tried) == 8 and all(label.startswith("search") for label, _ in node.tried)
