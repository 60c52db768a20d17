"""The cluster scaling benchmark's pure parts: the load at a share of a throughput, the table."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.cluster_scaling import at_share, markdown
from benchmarks.gates import GateSpec


def test_a_share_of_the_throughput_is_spread_evenly_over_the_gates() -> None:
    specs = [GateSpec("door-01", "pedestrian", 8.0), GateSpec("door-02", "pedestrian", 8.0)]
    scaled = at_share(specs, 40.0, 0.7)
    assert [s.fps for s in scaled] == pytest.approx([14.0, 14.0])
    assert [s.name for s in scaled] == ["door-01", "door-02"] and specs[0].fps == 8.0


def _row(label: str, fps: float) -> dict[str, Any]:
    node = {"offered_fps": fps, "throughput_fps": fps, "shed_fps": 0.0, "p99_ms": 1.0}
    node["client_p99_ms"] = 1.0
    return {"label": label, "node": node, "gates": [{"client_p99_ms": 1.0}]}


def test_each_kind_of_row_is_compared_with_the_embedded_row_of_its_kind() -> None:
    rows = [_row("embedded", 60.0), _row("embedded at 70%", 42.0)]
    rows += [_row("cluster", 45.0), _row("cluster at 70%", 31.5)]
    table = markdown(rows, per_mode=2).splitlines()
    assert "| 75% |" in table[4] and "| 75% |" in table[5]
