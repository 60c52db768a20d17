"""Plain numpy references for every Cython kernel in ``native/``.

The tests check that each kernel agrees with its reference; the micro-benchmarks
(``python -m benchmarks.native_kernels``) show what each kernel buys over it.
"""

from __future__ import annotations

import numpy as np

from native.types import MatchArrays


def match_identities_ref(
    similarities: np.ndarray,
    person_keys: np.ndarray,
    threshold: float,
    margin: float,
) -> MatchArrays:
    """Collapse top-k template hits into one identity per query.

    ``similarities``: ``(q, k)`` float32 cosine scores of the k nearest templates (any order).
    ``person_keys``: ``(q, k)`` int64 owner of each template; ``-1`` marks an empty slot.
    A query is accepted when its best person scores ``>= threshold`` and beats the best
    *other* person by ``>= margin``. Returns ``(q,)`` arrays; ``person`` is ``-1`` and the
    scores ``-1.0`` where a query has no candidate at all.
    """
    q = similarities.shape[0]
    person = np.full(q, -1, dtype=np.int64)
    score = np.full(q, -1.0, dtype=np.float32)
    runner_up = np.full(q, -1.0, dtype=np.float32)
    for row in range(q):
        valid = person_keys[row] >= 0
        if not valid.any():
            continue
        keys = person_keys[row][valid]
        sims = similarities[row][valid]
        best_per_person: dict[int, float] = {}
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=True):
            if sim > best_per_person.get(key, -np.inf):
                best_per_person[key] = sim
        ranked = sorted(best_per_person.items(), key=lambda kv: (-kv[1], kv[0]))
        person[row] = ranked[0][0]
        score[row] = ranked[0][1]
        if len(ranked) > 1:
            runner_up[row] = ranked[1][1]
    accepted = (person >= 0) & (score >= threshold) & (score - runner_up >= margin)
    return MatchArrays(person=person, score=score, runner_up=runner_up, accepted=accepted)
