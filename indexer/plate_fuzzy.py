"""Fuzzy plate search: an edit distance that knows which characters a camera confuses.

Plain Levenshtein counts ``皖A0N718`` → ``皖ADN718`` as far apart as ``皖A0N718`` →
``皖AXN718``; a plate reader mistakes 0 for D far more often than for X. This module's
distance is Levenshtein with cheaper substitutions between look-alike characters:

========================================  ====================================================
edit                                      cost
========================================  ====================================================
same character                            0
strong look-alike (``LOOKALIKE_STRONG``)  0.3: 0/O 0/D 0/Q O/D O/Q 8/B 1/I 5/S 2/Z
weak look-alike (``LOOKALIKE_WEAK``)      0.6: 1/7 1/L 1/T 7/T 2/7 4/A G/6 6/8 3/8 S/6 U/V Y/V
                                          D/Q C/G E/F B/E P/R K/X M/N H/N H/W 8/0 9/Q
any other substitution                    1
insertion or deletion                     1
========================================  ====================================================

The pairs are the mainland plate alphabet's classic confusions plus those the PP-OCR reader
made on the shared real crops (4/A, G/6, S/6, W/H, Y/V, D/0, T/1). Costs are symmetric and
case-sensitive: compare texts normalised by ``recognizer.plates.text.normalize``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

__all__ = [
    "INDEL_COST",
    "LOOKALIKE_STRONG",
    "LOOKALIKE_WEAK",
    "SUBSTITUTION_COSTS",
    "best_matches",
    "substitution_cost",
    "weighted_distance",
]

INDEL_COST = 1.0
LOOKALIKE_STRONG = 0.3
LOOKALIKE_WEAK = 0.6
_EPS = 1e-9  # sums of 0.3s and 0.6s are not exact in binary

STRONG_PAIRS = ("0O", "0D", "0Q", "OD", "OQ", "8B", "1I", "5S", "2Z")
WEAK_PAIRS = (
    "17", "1L", "1T", "7T", "27", "4A", "G6", "68", "38", "S6", "UV", "YV",
    "DQ", "CG", "EF", "BE", "PR", "KX", "MN", "HN", "HW", "80", "9Q",
)  # fmt: skip


def _table() -> Mapping[tuple[str, str], float]:
    costs: dict[tuple[str, str], float] = {}
    for pairs, cost in ((WEAK_PAIRS, LOOKALIKE_WEAK), (STRONG_PAIRS, LOOKALIKE_STRONG)):
        for pair in pairs:
            a, b = pair[0], pair[1]
            costs[(a, b)] = costs[(b, a)] = cost
    return MappingProxyType(costs)


# (a, b) -> cost for every look-alike pair, both ways round.
SUBSTITUTION_COSTS: Mapping[tuple[str, str], float] = _table()


def substitution_cost(a: str, b: str) -> float:
    """The cost of reading ``b`` where ``a`` is written (0 when equal)."""
    if a == b:
        return 0.0
    return SUBSTITUTION_COSTS.get((a, b), 1.0)


def weighted_distance(a: str, b: str, max_distance: float | None = None) -> float:
    """Weighted Levenshtein distance between plate texts ``a`` and ``b`` (table above).

    With ``max_distance`` the computation stops as soon as the result must exceed it and
    returns ``float('inf')`` instead; any result ``<= max_distance`` is exact.
    """
    limit = None if max_distance is None else max_distance + _EPS
    if limit is not None and abs(len(a) - len(b)) * INDEL_COST > limit:
        return float("inf")
    previous = [j * INDEL_COST for j in range(len(b) + 1)]
    for i, ca in enumerate(a, start=1):
        current = [i * INDEL_COST]
        for j, cb in enumerate(b, start=1):
            current.append(
                min(
                    previous[j] + INDEL_COST,  # delete ca
                    current[j - 1] + INDEL_COST,  # insert cb
                    previous[j - 1] + substitution_cost(ca, cb),
                )
            )
        if limit is not None and min(current) > limit:
            return float("inf")
        previous = current
    result = round(previous[-1], 9)
    if limit is not None and result > limit:
        return float("inf")
    return result


def best_matches(
    query: str,
    candidates: Iterable[str],
    max_distance: float = 1.0,
    limit: int | None = None,
) -> list[tuple[str, float]]:
    """Candidates within ``max_distance`` of ``query``, nearest first.

    Returns ``(candidate, distance)`` pairs sorted by distance, then by candidate text (a
    stable order for equal distances); duplicates in ``candidates`` appear once; at most
    ``limit`` pairs when given. An exact match has distance 0. ``max_distance`` below 0
    raises ``ValueError``.
    """
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    found: dict[str, float] = {}
    for candidate in candidates:
        if candidate in found:
            continue
        distance = weighted_distance(query, candidate, max_distance)
        if distance != float("inf"):
            found[candidate] = distance
    ranked = sorted(found.items(), key=lambda item: (item[1], item[0]))
    return ranked if limit is None else ranked[:limit]
