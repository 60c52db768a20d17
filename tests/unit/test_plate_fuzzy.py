"""Weighted edit distance and fuzzy plate matching (tables, including every look-alike pair)."""

from __future__ import annotations

import itertools

import pytest

from indexer.plate_fuzzy import (
    INDEL_COST,
    LOOKALIKE_STRONG,
    LOOKALIKE_WEAK,
    STRONG_PAIRS,
    SUBSTITUTION_COSTS,
    WEAK_PAIRS,
    best_matches,
    substitution_cost,
    weighted_distance,
)

PLATE = "皖A0N718"


@pytest.mark.parametrize(
    ("a", "b", "cost"),
    [(p[0], p[1], LOOKALIKE_STRONG) for p in STRONG_PAIRS]
    + [(p[0], p[1], LOOKALIKE_WEAK) for p in WEAK_PAIRS],
    ids=[f"strong-{p}" for p in STRONG_PAIRS] + [f"weak-{p}" for p in WEAK_PAIRS],
)
def test_each_lookalike_pair_costs_its_tier_both_ways(a: str, b: str, cost: float) -> None:
    assert substitution_cost(a, b) == cost
    assert substitution_cost(b, a) == cost
    # Inside a plate, one such substitution is exactly that cost.
    written = f"皖A{a}N71{a}"
    read = f"皖A{b}N71{a}"
    assert weighted_distance(written, read) == pytest.approx(cost)
    assert weighted_distance(read, written) == pytest.approx(cost)


def test_pairs_are_distinct_and_cheaper_than_a_plain_substitution() -> None:
    pairs = [frozenset(p) for p in STRONG_PAIRS + WEAK_PAIRS]
    assert len(pairs) == len(set(pairs))
    assert all(len(p) == 2 for p in pairs)
    assert 0 < LOOKALIKE_STRONG < LOOKALIKE_WEAK < 1 == INDEL_COST
    assert len(SUBSTITUTION_COSTS) == 2 * len(pairs)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (PLATE, PLATE, 0.0),
        (PLATE, "皖AON718", LOOKALIKE_STRONG),  # 0/O
        (PLATE, "皖ADN718", LOOKALIKE_STRONG),  # 0/D
        (PLATE, "皖A0N7I8", LOOKALIKE_STRONG),  # 1/I
        (PLATE, "皖A0N7B8", 1.0),  # 1/B: not look-alikes
        (PLATE, "皖ADN7I8", 2 * LOOKALIKE_STRONG),
        (PLATE, "皖A0N7T8", LOOKALIKE_WEAK),  # 1/T
        (PLATE, "沪A0N718", 1.0),  # another province
        (PLATE, "皖A0N71", INDEL_COST),  # a character lost
        (PLATE, "皖A0N7188", INDEL_COST),  # one too many
        (PLATE, "A0N718", INDEL_COST),  # province dropped
        (PLATE, "", 7.0),
        ("", "", 0.0),
        ("AB", "BA", 2.0),  # a swap is two substitutions (or an insert and a delete)
        ("8B8B", "B8B8", 4 * LOOKALIKE_STRONG),
        ("粤BD12345", "粤B012345", LOOKALIKE_STRONG),
    ],
)
def test_weighted_distance(a: str, b: str, expected: float) -> None:
    assert weighted_distance(a, b) == pytest.approx(expected)
    assert weighted_distance(b, a) == pytest.approx(expected)


def test_distance_is_a_metric_on_samples() -> None:
    samples = ["皖A0N718", "皖ADN718", "皖AON718", "皖A0N7I8", "沪A0N718", "皖A0N71", "AB", ""]
    for a, b, c in itertools.product(samples, repeat=3):
        assert weighted_distance(a, c) <= weighted_distance(a, b) + weighted_distance(b, c) + 1e-9


@pytest.mark.parametrize(
    ("a", "b", "limit", "expected"),
    [
        (PLATE, "皖ADN718", 0.3, LOOKALIKE_STRONG),  # exactly at the limit is kept
        (PLATE, "皖ADN7I8", 0.5, float("inf")),
        (PLATE, "皖A0N7", 1.0, float("inf")),  # length alone rules it out
        (PLATE, "XXXXXXX", 2.0, float("inf")),  # stopped early
        ("8B8B", "B8B8", 1.2, 1.2),  # 4 x 0.3 is not quite 1.2 in binary
    ],
)
def test_max_distance_cuts_off(a: str, b: str, limit: float, expected: float) -> None:
    assert weighted_distance(a, b, max_distance=limit) == pytest.approx(expected)


def test_best_matches_orders_by_distance_then_text() -> None:
    registry = ["沪A0N718", "皖ADN718", PLATE, "皖AON718", "皖ADN7I8", "京B12345", "皖ADN718"]
    assert best_matches(PLATE, registry, max_distance=1.0) == [
        (PLATE, 0.0),
        ("皖ADN718", pytest.approx(LOOKALIKE_STRONG)),
        ("皖AON718", pytest.approx(LOOKALIKE_STRONG)),
        ("皖ADN7I8", pytest.approx(2 * LOOKALIKE_STRONG)),
        ("沪A0N718", 1.0),
    ]
    assert [c for c, _ in best_matches(PLATE, registry, max_distance=0.3)] == [
        PLATE,
        "皖ADN718",
        "皖AON718",
    ]
    assert best_matches(PLATE, registry, max_distance=1.0, limit=2) == [
        (PLATE, 0.0),
        ("皖ADN718", pytest.approx(LOOKALIKE_STRONG)),
    ]
    assert best_matches(PLATE, [], max_distance=3.0) == []
    assert best_matches(PLATE, iter(["皖A0N719"]), max_distance=0.0) == []


@pytest.mark.parametrize(("max_distance", "limit"), [(-0.1, None), (1.0, -1)])
def test_best_matches_rejects_bad_arguments(max_distance: float, limit: int | None) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        best_matches(PLATE, [PLATE], max_distance=max_distance, limit=limit)
