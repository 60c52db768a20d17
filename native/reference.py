"""Plain numpy references for every Cython kernel in ``native/``.

The tests check that each kernel agrees with its reference; the micro-benchmarks
(``python -m benchmarks.native_kernels``) show what each kernel buys over it.
``prior_boxes`` has no kernel: it is pure numpy and cached, and lives here beside the
decoder that consumes its output.

The ``*_ref`` functions expect inputs already validated and normalised by the public
functions in ``native`` (C-contiguous, the documented dtypes and shapes).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from native.types import CTCArrays, DetectionArrays, MatchArrays


@functools.lru_cache(maxsize=32)
def prior_boxes_cached(
    height: int,
    width: int,
    steps: tuple[int, ...],
    min_sizes: tuple[tuple[int, ...], ...],
) -> np.ndarray:
    """RetinaFace-style priors ``(p, 4)`` float32 ``[cx, cy, w, h]`` in input pixels, read-only.

    Order: level, then feature-map row ``i``, column ``j``, then anchor size; the feature
    map of a level with stride ``step`` is ``(ceil(height / step), ceil(width / step))``.
    Arguments must already be hashable and valid (see ``native.prior_boxes``).
    """
    levels = []
    for step, sizes in zip(steps, min_sizes, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid(
            (np.arange(rows, dtype=np.float64) + 0.5) * step,
            (np.arange(cols, dtype=np.float64) + 0.5) * step,
            indexing="ij",
        )
        level = np.empty((rows, cols, len(sizes), 4), dtype=np.float32)
        level[..., 0] = cx[..., None]
        level[..., 1] = cy[..., None]
        level[..., 2] = np.asarray(sizes, dtype=np.float32)
        level[..., 3] = level[..., 2]
        levels.append(level.reshape(-1, 4))
    priors = np.concatenate(levels) if levels else np.empty((0, 4), dtype=np.float32)
    priors.flags.writeable = False
    return priors


def decode_detections_ref(
    loc: np.ndarray,
    scores: np.ndarray,
    points: np.ndarray,
    priors: np.ndarray,
    *,
    score_threshold: float,
    nms_iou: float,
    variances: tuple[float, float] = (0.1, 0.2),
    max_candidates: int = 5000,
    max_out: int = 256,
) -> DetectionArrays:
    """Decode SSD/RetinaFace regressions, threshold, and greedy-NMS them.

    ``loc`` ``(p, 4)``, ``scores`` ``(p,)``, ``points`` ``(p, 2L)``, ``priors`` ``(p, 4)``
    ``[cx, cy, w, h]``, all float32. Returns ``(n, 4)`` boxes ``[x1, y1, x2, y2]``, ``(n,)``
    scores and ``(n, L, 2)`` points, sorted by score descending (ties: lower prior index).
    """
    n_points = points.shape[1] // 2
    v0, v1 = variances
    candidates = np.flatnonzero(scores >= score_threshold)
    order = candidates[np.argsort(-scores[candidates], kind="stable")][:max_candidates]

    pri = priors[order]
    off = loc[order]
    with np.errstate(over="ignore", invalid="ignore"):
        cx = pri[:, 0] + off[:, 0] * v0 * pri[:, 2]
        cy = pri[:, 1] + off[:, 1] * v0 * pri[:, 3]
        w = pri[:, 2] * np.exp(off[:, 2] * v1)
        h = pri[:, 3] * np.exp(off[:, 3] * v1)
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        keep = _greedy_nms(boxes, nms_iou, max_out)

    kept = order[keep]
    pri = priors[kept]
    pts = points[kept].reshape(len(kept), n_points, 2)
    out_points = np.empty_like(pts)
    out_points[..., 0] = pri[:, None, 0] + pts[..., 0] * v0 * pri[:, None, 2]
    out_points[..., 1] = pri[:, None, 1] + pts[..., 1] * v0 * pri[:, None, 3]
    return DetectionArrays(
        boxes=np.ascontiguousarray(boxes[keep], dtype=np.float32),
        scores=scores[kept].astype(np.float32, copy=True),
        points=out_points,
    )


def _greedy_nms(boxes: np.ndarray, nms_iou: float, max_out: int) -> np.ndarray:
    """Row indices of ``boxes`` ``(c, 4)`` (already in score order) kept by greedy NMS."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    kept: list[int] = []
    remaining = np.arange(len(boxes))
    while remaining.size and len(kept) < max_out:
        i = int(remaining[0])
        kept.append(i)
        rest = remaining[1:]
        iw = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        ih = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        remaining = rest[~(iou > nms_iou)]
    return np.asarray(kept, dtype=np.intp)


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
    scores ``-1.0`` where a query has no candidate at all. A slot whose similarity is NaN
    or ``-inf`` is no candidate. Ties: higher score, then lower key.
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
        if not best_per_person:
            continue
        ranked = sorted(best_per_person.items(), key=lambda kv: (-kv[1], kv[0]))
        person[row] = ranked[0][0]
        score[row] = ranked[0][1]
        if len(ranked) > 1:
            runner_up[row] = ranked[1][1]
    accepted = (person >= 0) & (score >= threshold) & (score - runner_up >= margin)
    return MatchArrays(person=person, score=score, runner_up=runner_up, accepted=accepted)


def ctc_greedy_decode_ref(probs: np.ndarray, blank: int = 0) -> CTCArrays:
    """Greedy (best-path) CTC decode of ``probs`` ``(n, t, c)`` float32.

    Per step take the argmax (first index on ties), collapse runs of the same class,
    drop ``blank``. An emitted label's confidence is the max probability over its run.
    Returns ``(n, t)`` int32 labels padded with ``-1``, ``(n, t)`` float32 confidences
    padded with ``0`` and ``(n,)`` int32 lengths.
    """
    n, t, _ = probs.shape
    labels = np.full((n, t), -1, dtype=np.int32)
    confidences = np.zeros((n, t), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int32)
    if t == 0 or n == 0:
        return CTCArrays(labels=labels, confidences=confidences, lengths=lengths)
    best = probs.argmax(axis=2)
    best_prob = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    for row in range(n):
        steps = best[row]
        starts = np.flatnonzero(np.concatenate([[True], steps[1:] != steps[:-1]]))
        run_labels = steps[starts]
        run_conf = np.maximum.reduceat(best_prob[row], starts)
        emit = run_labels != blank
        count = int(emit.sum())
        labels[row, :count] = run_labels[emit]
        confidences[row, :count] = run_conf[emit]
        lengths[row] = count
    return CTCArrays(labels=labels, confidences=confidences, lengths=lengths)


def vote_and_best_ref(
    identity_keys: np.ndarray,
    actions: np.ndarray,
    quality: np.ndarray,
    size: np.ndarray,
    det_score: np.ndarray,
    votes_needed: int,
    window: int,
) -> tuple[int, int, int, int]:
    """A track's vote over its last ``window`` frames and its best shot over all ``n``.

    ``identity_keys`` ``(n,)`` int64: a key ``>= 0`` votes for that identity, ``-1`` for "usable
    but matched nobody", anything below ``-1`` casts no vote (unusable) but still takes a slot
    in the window; ``actions`` ``(n,)`` int8; ``quality``, ``size``, ``det_score`` ``(n,)``
    float32. The key with the most votes among the last ``window`` entries wins (ties: the
    key whose newest vote is newer); it is decided when it has ``>= votes_needed`` votes.
    Returns ``(decided_key, decided_action, agree_count, best_index)``: the winning key and the
    action of its newest entry, or ``(-1, 0)`` when undecided; the winner's vote count (0 when
    nobody voted); the first argmax of ``quality * size * det_score`` (float32, NaN as -inf),
    or ``-1`` when ``n == 0``.
    """
    n = identity_keys.shape[0]
    best_index = -1
    if n:
        shot = quality * size * det_score
        best_index = int(np.argmax(np.where(np.isnan(shot), np.float32(-np.inf), shot)))
    start = max(0, n - window)
    recent = identity_keys[start:]
    positions = np.flatnonzero(recent >= -1)
    if positions.size == 0:
        return -1, 0, 0, best_index
    keys, inverse, counts = np.unique(recent[positions], return_inverse=True, return_counts=True)
    newest = np.full(keys.size, -1, dtype=np.intp)
    np.maximum.at(newest, inverse, positions)
    winner = int(np.lexsort((newest, counts))[-1])  # most votes, then the newest vote
    agree = int(counts[winner])
    if agree < votes_needed:
        return -1, 0, agree, best_index
    return int(keys[winner]), int(actions[start + newest[winner]]), agree, best_index


def hwc_to_nchw_ref(
    images: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    swap_rb: bool,
    out: np.ndarray,
) -> np.ndarray:
    """Fill ``out`` ``(n, 3, h, w)`` float32 from ``images`` ``(n, h, w, 3)`` uint8; return it.

    Output plane ``c`` is ``(x - mean[c]) * float32(1 / std[c])`` in float32, where ``x`` is
    source channel ``c``, or ``2 - c`` with ``swap_rb`` (BGR→RGB); ``mean`` and ``std``
    ``(3,)`` float64 are in the output's channel order.
    """
    batch = images[..., ::-1] if swap_rb else images
    for c in range(3):
        np.subtract(batch[..., c], np.float32(mean[c]), out=out[:, c], dtype=np.float32)
        if std[c] != 1.0:
            out[:, c] *= np.float32(1.0 / std[c])
    return out
