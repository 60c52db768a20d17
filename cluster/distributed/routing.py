"""Pure routing decisions of the cluster frontend: which recognizer worker takes a gate's frame,
and how per-community search hits merge. No Ray here (unit-tested alone)."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def affinity(gate: str, worker: str) -> int:
    """Rendezvous (highest random weight) score of ``worker`` for ``gate``: stable across
    frontends and processes, and adding or removing a worker moves only that worker's gates."""
    digest = hashlib.blake2b(f"{gate}\0{worker}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_worker(gate: str, in_flight: Mapping[str, int], exclude: Iterable[str] = ()) -> str | None:
    """The worker for ``gate``'s next frame: among the least loaded live workers (``in_flight``:
    worker id → frames sent and not yet answered), the one the gate prefers (``affinity``), so
    a gate sticks to one worker while the load is even and moves when that worker is busier.
    ``exclude`` names workers not to use (the one a retried frame failed on). ``None`` when
    no worker is left."""
    candidates = {w: n for w, n in in_flight.items() if w not in set(exclude)}
    if not candidates:
        return None
    least = min(candidates.values())
    return max((w for w, n in candidates.items() if n == least), key=lambda w: affinity(gate, w))


def merge_top(groups: Sequence[Sequence[tuple[T, float]]], top_k: int) -> list[tuple[T, float]]:
    """The ``top_k`` best ``(item, score)`` pairs of several lists, each already in descending
    order of score (one per community's index), by descending score; ties keep list order."""
    if top_k < 1:
        return []
    merged = heapq.merge(*groups, key=lambda pair: -pair[1])
    return [pair for _, pair in zip(range(top_k), merged, strict=False)]
