"""Cython kernels for the hot paths, each with a numpy reference in ``native.reference``.

The public functions here validate and normalise their inputs (dtype, C-contiguity,
shapes; a bad shape raises ``ValueError`` naming the expected and the actual shape), then
call the backend chosen at import:

* ``cython`` (default): the compiled ``native._*_cy`` modules. If they are not built,
  importing ``native`` raises ``ImportError``; there is no silent fallback.
* ``reference``: the numpy references, forced with ``SMARTGATE_NATIVE=reference``.

``BACKEND`` names the one in use; the choice is logged on the ``native`` logger.
"""

from __future__ import annotations

import importlib
import logging
import math
import operator
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from native import reference
from native.types import CTCArrays, DetectionArrays, MatchArrays

__all__ = [
    "BACKEND",
    "CTCArrays",
    "DetectionArrays",
    "MatchArrays",
    "VoteResult",
    "ctc_greedy_decode",
    "decode_detections",
    "hwc_to_nchw",
    "match_identities",
    "prior_boxes",
    "vote_and_best",
]

logger = logging.getLogger(__name__)

ENV_VAR = "SMARTGATE_NATIVE"
_BACKENDS = ("cython", "reference")

RETINAFACE_STEPS = (8, 16, 32)
RETINAFACE_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
PLATE_MIN_SIZES = ((24, 48), (96, 192), (384, 768))


class _Backend(NamedTuple):
    name: str
    decode_detections: Callable[..., DetectionArrays]
    match_identities: Callable[[np.ndarray, np.ndarray, float, float], MatchArrays]
    ctc_greedy_decode: Callable[[np.ndarray, int], CTCArrays]
    vote_and_best: Callable[..., tuple[int, int, int, int]]
    hwc_to_nchw: Callable[[np.ndarray, np.ndarray, np.ndarray, bool, np.ndarray], np.ndarray]


def _load_backend(name: str) -> _Backend:
    """Return the kernels named ``name`` (``"cython"`` or ``"reference"``)."""
    if name == "reference":
        return _Backend(
            name="reference",
            decode_detections=reference.decode_detections_ref,
            match_identities=reference.match_identities_ref,
            ctc_greedy_decode=reference.ctc_greedy_decode_ref,
            vote_and_best=reference.vote_and_best_ref,
            hwc_to_nchw=reference.hwc_to_nchw_ref,
        )
    if name != "cython":
        raise ValueError(f"{ENV_VAR} must be one of {_BACKENDS}, got {name!r}")
    try:
        _detect_cy, _match_cy, _ctc_cy, _track_cy, _preprocess_cy = (
            importlib.import_module(f"native.{module}")
            for module in ("_detect_cy", "_match_cy", "_ctc_cy", "_track_cy", "_preprocess_cy")
        )
    except ImportError as exc:
        raise ImportError(
            f"smartgate native kernels are not built ({exc}); run `pip install -e .` "
            f"from the repository root (needs a C compiler), or set {ENV_VAR}=reference "
            "to use the slow numpy references explicitly."
        ) from exc

    def decode_cy(
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
        boxes, kept_scores, kept_points = _detect_cy.decode_detections(
            loc,
            scores,
            points,
            priors,
            score_threshold,
            nms_iou,
            variances[0],
            variances[1],
            max_candidates,
            max_out,
        )
        n_points = points.shape[1] // 2
        return DetectionArrays(
            boxes=boxes,
            scores=kept_scores,
            points=kept_points.reshape(len(kept_scores), n_points, 2),
        )

    def match_cy(
        similarities: np.ndarray, person_keys: np.ndarray, threshold: float, margin: float
    ) -> MatchArrays:
        return MatchArrays(
            *_match_cy.match_identities(similarities, person_keys, threshold, margin)
        )

    def ctc_cy(probs: np.ndarray, blank: int = 0) -> CTCArrays:
        return CTCArrays(*_ctc_cy.ctc_greedy_decode(probs, blank))

    def hwc_to_nchw_cy(
        images: np.ndarray, mean: np.ndarray, std: np.ndarray, swap_rb: bool, out: np.ndarray
    ) -> np.ndarray:
        _preprocess_cy.hwc_to_nchw(images, mean, std, swap_rb, out)
        return out

    return _Backend(
        name="cython",
        decode_detections=decode_cy,
        match_identities=match_cy,
        ctc_greedy_decode=ctc_cy,
        vote_and_best=_track_cy.vote_and_best,
        hwc_to_nchw=hwc_to_nchw_cy,
    )


_backend = _load_backend(os.environ.get(ENV_VAR, "cython").strip().lower() or "cython")
BACKEND: str = _backend.name
logger.info("smartgate native kernels: %s backend loaded", BACKEND)


def _as_array(name: str, value: Any, dtype: type[np.generic], ndim: int) -> np.ndarray:
    """``value`` as a C-contiguous ``dtype`` array, or ``ValueError`` if it is not ``ndim``-D."""
    array = np.asarray(value)
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=dtype)


def _expect_shape(name: str, array: np.ndarray, expected: tuple[int | str, ...]) -> None:
    """Raise ``ValueError`` unless ``array.shape`` matches ``expected`` (str = any size)."""
    ok = len(expected) == array.ndim and all(
        isinstance(want, str) or want == got
        for want, got in zip(expected, array.shape, strict=True)
    )
    if not ok:
        shown = "(" + ", ".join(map(str, expected)) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {shown}, got {array.shape}")


def prior_boxes(
    height: int,
    width: int,
    steps: Sequence[int] = RETINAFACE_STEPS,
    min_sizes: Sequence[Sequence[int]] = RETINAFACE_MIN_SIZES,
) -> np.ndarray:
    """Anchor priors ``(p, 4)`` float32 ``[cx, cy, w, h]`` in input pixels (read-only, cached).

    For each level ``k`` with feature map ``(ceil(height / steps[k]), ceil(width / steps[k]))``,
    for each row ``i``, column ``j`` and size ``s`` in ``min_sizes[k]``:
    ``[(j + 0.5) * step, (i + 0.5) * step, s, s]``. Defaults are RetinaFace's; the plate
    detector passes ``min_sizes=PLATE_MIN_SIZES``. Zero height or width gives ``(0, 4)``.
    """
    h, w = operator.index(height), operator.index(width)
    if h < 0 or w < 0:
        raise ValueError(f"prior_boxes: height and width must be >= 0, got ({h}, {w})")
    steps_t = tuple(operator.index(s) for s in steps)
    sizes_t = tuple(tuple(operator.index(s) for s in level) for level in min_sizes)
    if len(steps_t) != len(sizes_t):
        raise ValueError(
            f"prior_boxes: expected one min_sizes entry per step ({len(steps_t)}), "
            f"got {len(sizes_t)}"
        )
    if any(s <= 0 for s in steps_t) or any(s <= 0 for level in sizes_t for s in level):
        raise ValueError(f"prior_boxes: steps and sizes must be > 0, got {steps_t}, {sizes_t}")
    return reference.prior_boxes_cached(h, w, steps_t, sizes_t)


def decode_detections(
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
    """Decode a RetinaFace-style head into boxes, scores and points, after greedy NMS.

    Inputs (coerced to C-contiguous float32), ``p`` priors and ``L`` points per prior:

    * ``loc`` ``(p, 4)`` regressions ``[dx, dy, dw, dh]``;
    * ``scores`` ``(p,)`` foreground probabilities;
    * ``points`` ``(p, 2L)`` regressions ``[dx0, dy0, dx1, dy1, ...]`` (``L`` = 5 face
      landmarks or 4 plate corners; ``(p, 0)`` for none);
    * ``priors`` ``(p, 4)`` ``[cx, cy, w, h]`` from ``prior_boxes``.

    ``cx = pcx + dx * v0 * pw``, ``w = pw * exp(dw * v1)`` (likewise ``y``/``h``); points decode
    like centres. Priors with ``score >= score_threshold`` are kept, the best
    ``max_candidates`` go through greedy NMS (a box whose IoU with a kept one is
    ``> nms_iou`` is dropped; IoU uses ``(x2 - x1) * (y2 - y1)`` areas, zero-area boxes never
    suppress), and at most ``max_out`` survive.

    Returns ``DetectionArrays``: ``boxes`` ``(n, 4)`` ``[x1, y1, x2, y2]``, ``scores`` ``(n,)``,
    ``points`` ``(n, L, 2)``, float32 in the priors' pixel coordinates, sorted by score
    descending (ties: lower prior index first).
    """
    loc = _as_array("loc", loc, np.float32, 2)
    scores = _as_array("scores", scores, np.float32, 1)
    points = _as_array("points", points, np.float32, 2)
    priors = _as_array("priors", priors, np.float32, 2)
    p = priors.shape[0]
    _expect_shape("priors", priors, ("p", 4))
    _expect_shape("loc", loc, (p, 4))
    _expect_shape("scores", scores, (p,))
    if points.shape[0] != p or points.shape[1] % 2:
        raise ValueError(f"points: expected shape ({p}, 2L), got {points.shape}")
    if len(variances) != 2:
        raise ValueError(f"variances: expected 2 values, got {len(variances)}")
    max_candidates = operator.index(max_candidates)
    max_out = operator.index(max_out)
    if max_candidates < 0 or max_out < 0:
        raise ValueError(
            f"max_candidates and max_out must be >= 0, got {max_candidates}, {max_out}"
        )
    return _backend.decode_detections(
        loc,
        scores,
        points,
        priors,
        score_threshold=float(score_threshold),
        nms_iou=float(nms_iou),
        variances=(float(variances[0]), float(variances[1])),
        max_candidates=max_candidates,
        max_out=max_out,
    )


def match_identities(
    similarities: np.ndarray,
    person_keys: np.ndarray,
    threshold: float,
    margin: float,
) -> MatchArrays:
    """Collapse top-k template hits into one identity per query.

    ``similarities`` ``(q, k)`` float32 cosine scores of the k nearest templates (any
    order); ``person_keys`` ``(q, k)`` int64 owner of each template, ``-1`` for an empty
    slot (a NaN or ``-inf`` similarity is no candidate either). Each person counts with its
    best template; ties go to the higher score, then the lower key. A query is accepted
    when its best person scores ``>= threshold`` and beats the best *other* person by
    ``>= margin``. Returns ``MatchArrays`` of ``(q,)`` arrays; ``person`` is ``-1`` and the
    scores ``-1.0`` where a query has no candidate.
    """
    similarities = _as_array("similarities", similarities, np.float32, 2)
    person_keys = _as_array("person_keys", person_keys, np.int64, 2)
    if person_keys.shape != similarities.shape:
        raise ValueError(
            f"person_keys: expected shape {similarities.shape} (as similarities), "
            f"got {person_keys.shape}"
        )
    return _backend.match_identities(similarities, person_keys, float(threshold), float(margin))


def ctc_greedy_decode(probs: np.ndarray, blank: int = 0) -> CTCArrays:
    """Greedy (best-path) CTC decode of ``probs`` ``(n, t, c)`` (coerced to float32).

    ``probs`` are per-step class probabilities (the recogniser's softmax output), ``c >= 1``,
    ``0 <= blank < c``, NaN-free. Per step take the argmax (first index on ties), collapse
    consecutive repeats, drop ``blank``; an emitted label's confidence is the max
    probability over its run of identical argmax steps. Returns ``CTCArrays``: ``labels``
    ``(n, t)`` int32 padded with ``-1``, ``confidences`` ``(n, t)`` float32 padded with
    ``0.0``, ``lengths`` ``(n,)`` int32.
    """
    probs = _as_array("probs", probs, np.float32, 3)
    classes = probs.shape[2]
    if classes == 0:
        raise ValueError(f"probs: expected shape (n, t, c) with c >= 1, got {probs.shape}")
    blank = operator.index(blank)
    if not 0 <= blank < classes:
        raise ValueError(f"blank: expected 0 <= blank < {classes}, got {blank}")
    return _backend.ctc_greedy_decode(probs, blank)


class VoteResult(NamedTuple):
    """What ``vote_and_best`` found for one track."""

    decided_key: int  # the winning identity key (-1: "matched nobody"), -1 when undecided
    decided_action: int  # action code of the winner's newest entry, 0 when undecided
    agree_count: int  # the winner's votes in the window (0 when nobody voted)
    best_index: int  # the best shot over all entries, -1 when there are none


def vote_and_best(
    identity_keys: np.ndarray,
    actions: np.ndarray,
    quality: np.ndarray,
    size: np.ndarray,
    det_score: np.ndarray,
    votes_needed: int,
    window: int,
) -> VoteResult:
    """A track's vote over its last ``window`` frames, and its best shot over all of them.

    Inputs are ``(n,)`` arrays, one entry per frame of the track, oldest first:
    ``identity_keys`` (coerced to int64; ``>= 0`` votes for that identity, ``-1`` for "usable
    face that matched nobody", ``<= -2`` unusable: no vote, but it takes a slot in the window),
    ``actions`` (int8 action codes, ``>= 1``; ``0`` is reserved for "undecided"), and
    ``quality``, ``size``, ``det_score`` (float32). ``votes_needed`` and ``window`` are
    ``>= 1``.

    The key with the most votes among the last ``window`` entries wins (a tie goes to the key
    whose newest vote is newer) and is decided when it has ``>= votes_needed`` votes; its
    action is that of its newest entry. ``best_index`` is the first argmax of
    ``quality * size * det_score`` (float32 products; NaN counts as ``-inf``).
    """
    identity_keys = _as_array("identity_keys", identity_keys, np.int64, 1)
    n = identity_keys.shape[0]
    actions = _as_array("actions", actions, np.int8, 1)
    quality = _as_array("quality", quality, np.float32, 1)
    size = _as_array("size", size, np.float32, 1)
    det_score = _as_array("det_score", det_score, np.float32, 1)
    for name, array in (
        ("actions", actions),
        ("quality", quality),
        ("size", size),
        ("det_score", det_score),
    ):
        _expect_shape(name, array, (n,))
    votes_needed = operator.index(votes_needed)
    window = operator.index(window)
    if votes_needed < 1 or window < 1:
        raise ValueError(f"votes_needed and window must be >= 1, got {votes_needed}, {window}")
    return VoteResult(
        *_backend.vote_and_best(
            identity_keys, actions, quality, size, det_score, votes_needed, window
        )
    )


def hwc_to_nchw(
    images: np.ndarray,
    mean: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray,
    swap_rb: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise a batch of uint8 HWC images into a float32 NCHW blob, in one pass.

    ``images`` ``(n, h, w, 3)`` uint8 (made C-contiguous if it is not); ``mean`` and ``std``
    ``(3,)`` in the output's channel order, ``std`` finite and non-zero. Output plane ``c`` is
    ``(x - mean[c]) * float32(1 / std[c])`` in float32, ``x`` being source channel ``c``, or
    ``2 - c`` with ``swap_rb`` (BGR→RGB). ``out``, if given, must be a writeable C-contiguous
    ``(n, 3, h, w)`` float32 array; it is filled and returned. Returns ``(n, 3, h, w)`` float32.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"images: expected shape (n, h, w, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"images: expected dtype uint8, got {images.dtype}")
    images = np.ascontiguousarray(images)
    mean_a = np.array(mean, dtype=np.float64)  # a small contiguous copy, scalars stay 0-D
    std_a = np.array(std, dtype=np.float64)
    _expect_shape("mean", mean_a, (3,))
    _expect_shape("std", std_a, (3,))
    if not all(math.isfinite(v) and v != 0 for v in std_a.tolist()):  # 20x np.isfinite's speed
        raise ValueError(f"std: expected finite non-zero values, got {std_a.tolist()}")
    n, h, w, _ = images.shape
    if out is None:
        out = np.empty((n, 3, h, w), dtype=np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32:
            got = getattr(out, "dtype", type(out).__name__)
            raise ValueError(f"out: expected a float32 numpy array, got {got}")
        _expect_shape("out", out, (n, 3, h, w))
        if not (out.flags.c_contiguous and out.flags.writeable):
            raise ValueError("out: expected a writeable C-contiguous array")
        if np.may_share_memory(out, images):
            raise ValueError("out: must not overlap images")
    return _backend.hwc_to_nchw(images, mean_a, std_a, bool(swap_rb), out)
