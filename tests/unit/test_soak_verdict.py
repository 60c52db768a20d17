"""The soak's judgement (``benchmarks.soak``): pure functions over counts and RSS samples."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from benchmarks.soak import CORRUPTIONS, corrupt, rss_verdict, verdict
from recognizer.image import DecodeLimits, decode
from smartgate.errors import DecodeError


def _gate(**changes: Any) -> dict[str, Any]:
    gate = {
        "gate": "door-01",
        "sent": 100,
        "corrupt_sent": 3,
        "corrupt_invalid": 3,
        "good_errors": 0,
        "missing": 0,
        "stream_error": None,
    }
    return gate | changes


FLAT = [(float(t), 300.0 + (t % 3)) for t in range(40)]
FLAT_RSS = rss_verdict(FLAT, warmup_s=4, growth_pct=10)


def test_a_clean_run_passes() -> None:
    assert FLAT_RSS["ok"] and abs(FLAT_RSS["growth_pct"]) < 1
    assert verdict([_gate(), _gate(gate="door-02")], FLAT_RSS) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"stream_error": "UNAVAILABLE: gone"}, "stream broke"),
        ({"corrupt_invalid": 2}, "3 corrupt frames sent, 2 answered INVALID_ARGUMENT"),
        ({"good_errors": 1}, "good frames answered with an error"),
        ({"missing": 4}, "4 frames never answered"),
    ],
)
def test_each_failure_is_named(changes: dict[str, Any], words: str) -> None:
    problems = verdict([_gate(), _gate(**changes)], FLAT_RSS)
    assert len(problems) == 1 and words in problems[0]


def test_memory_growth_beyond_the_bound_fails_and_warmup_is_ignored() -> None:
    growing = [(float(t), 300.0 + 2.0 * t) for t in range(40)]
    rss = rss_verdict(growing, warmup_s=4, growth_pct=10)
    assert not rss["ok"] and rss["growth_pct"] > 10
    assert "memory: RSS grew" in verdict([_gate()], rss)[0]
    # a steep warm-up, flat afterwards
    warm = [(float(t), 100.0 + 50 * t if t < 5 else 400.0) for t in range(40)]
    assert rss_verdict(warm, warmup_s=5, growth_pct=10)["ok"]
    assert not rss_verdict(FLAT[:5], warmup_s=4, growth_pct=10)["ok"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_every_corruption_kind_is_undecodable(kind: str, faces_dir) -> None:  # type: ignore[no-untyped-def]
    frame = (faces_dir / "examples_obama-1080p.jpg").read_bytes()
    rng = np.random.default_rng(3)
    for _ in range(5):
        with pytest.raises(DecodeError):
            decode(corrupt(frame, kind, rng), DecodeLimits())
