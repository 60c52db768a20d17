"""Carrying a decided face's embedding over to the next frames of its passage.

Once a gate's passage has decided (the door opened), the person is still in view for many
frames. Embedding every one of them again buys nothing but a chance to escalate (a watchlist
hit after all), so a face whose box overlaps a decided face of the gate's previous frame takes
that face's embedding and liveness instead, for at most ``max_carry`` frames in a row; then it
is embedded afresh. Undecided faces are never carried: every frame of a passage before its
decision is a fresh, independent vote.

Pure logic: the passages publish ``Carried`` faces after each frame, the analyzer asks
``assign`` which of a new frame's faces may reuse one.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recognizer.faces.scene import Sketch, changed_outside


@dataclass(frozen=True, eq=False)
class Carried:
    """A decided face of a gate's latest frame. ``box`` ``(4,)`` original pixels;
    ``embedding`` ``(d,)`` unit vector from the last fresh frame, or None when only the
    liveness is lent (a STRANGER passage: it keeps embedding every frame); ``origin``: the
    ``CarryLedger`` id of what is lent; ``t``: the frame's time (seconds)."""

    box: np.ndarray = field(repr=False)
    embedding: np.ndarray | None = field(repr=False)
    liveness: float | None
    origin: int
    t: float


@dataclass(frozen=True)
class CarryPolicy:
    """``max_carry`` frames in a row at most (0 switches carrying, region searches and still
    scenes off); boxes must overlap by ``iou_min``; a carried face older than ``max_age_s`` is
    stale. ``region_margin`` > 0: between whole-frame searches (at least every
    ``region_frames`` + 1 frames) a frame is searched for faces only around where they were
    (``detection_region``), each box grown by this share of its size on every side.
    ``lend_liveness``: a decided face embedded afresh keeps the liveness scored before the
    decision instead of scoring it again. ``still_diff`` > 0: a whole-frame search is skipped
    while no cell of the frame's sketch outside the region changed by more than this many grey
    levels since the gate's last whole-searched frame, at most ``still_max_age_s`` ago
    (``still_scene``)."""

    max_carry: int = 3
    iou_min: float = 0.6
    max_age_s: float = 0.6
    region_margin: float = 0.0
    lend_liveness: bool = False
    still_diff: float = 0.0
    still_max_age_s: float = 1.0
    region_frames: int = 3


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes ``a`` ``(n, 4)`` and ``b`` ``(m, 4)`` → ``(n, m)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def assign(
    boxes: np.ndarray, carried: Sequence[Carried], t: float, policy: CarryPolicy
) -> list[Carried | None]:
    """For each box of ``boxes`` ``(n, 4)``, the carried face it may reuse, or None.

    One-to-one, greedy on the highest overlap; a carried face whose time is more than
    ``max_age_s`` from ``t`` (either way: frames of one gate may be recognised out of order)
    is not used. How often an embedding may still be lent is the ``CarryLedger``'s call.
    """
    out: list[Carried | None] = [None] * len(boxes)
    live = [c for c in carried if abs(t - c.t) <= policy.max_age_s]
    if policy.max_carry <= 0 or not live or len(boxes) == 0:
        return out
    overlap = iou_matrix(boxes, np.stack([c.box for c in live]))
    used: set[int] = set()
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        i, j = divmod(int(flat), overlap.shape[1])
        if overlap[i, j] < policy.iou_min:
            break
        if out[i] is None and j not in used:
            out[i] = live[j]
            used.add(j)
    return out


class Lender(Protocol):
    """Grants loans of lent faces: ``claim(origin)`` → the loan's number, or 0 when spent."""

    def claim(self, origin: int) -> int: ...


class CarryLedger:
    """How many times each fresh embedding has been lent, across compute threads.

    Frames of one gate are recognised in parallel, so several may borrow from the same
    decided face before any of them is tracked: counting the loans here, not along the chain
    of frames, keeps every embedding to at most ``max_carry`` frames.
    """

    def __init__(self, max_carry: int, capacity: int = 4096) -> None:
        self.max_carry = max_carry
        self.capacity = capacity
        self._ids = itertools.count(1)
        self._loans: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def new_origin(self) -> int:
        """An id for an embedding computed afresh."""
        return next(self._ids)

    def used(self, origin: int) -> int:
        """How many times ``origin`` has been lent so far."""
        with self._lock:
            return self._loans.get(origin, 0)

    def snapshot(self, origins: Sequence[int]) -> LoanSnapshot:
        """The loans left of ``origins`` now, for a frame recognised in another process."""
        with self._lock:
            return LoanSnapshot(self.max_carry, {o: self._loans.get(o, 0) for o in origins})

    def claim(self, origin: int) -> int:
        """Borrow ``origin`` once more: the loan's number (1..max_carry), or 0 when spent."""
        with self._lock:
            used = self._loans.get(origin, 0)
            if used >= self.max_carry:
                return 0
            self._loans[origin] = used + 1
            self._loans.move_to_end(origin)
            while len(self._loans) > self.capacity:
                self._loans.popitem(last=False)
            return used + 1


@dataclass
class LoanSnapshot:
    """A ``Lender`` for one frame recognised away from the ledger (a Ray worker): the loans
    ``used`` so far per origin when the frame was sent. The frontend records the loans the
    worker took with ``CarryLedger.claim`` when the answer is back; frames of one gate in flight
    at the same time may each take the last loan, so an embedding is lent at most
    ``max_carry`` + (frames in flight − 1) times."""

    max_carry: int
    used: dict[int, int]

    def claim(self, origin: int) -> int:
        used = self.used.get(origin, self.max_carry)
        if used >= self.max_carry:
            return 0
        self.used[origin] = used + 1
        return used + 1


@dataclass(frozen=True, eq=False)
class View:
    """Where a gate's faces were last seen: ``boxes`` ``(n, 4)`` and their face sizes ``sizes``
    ``(n,)`` (``quality.face_size``), original pixels, at ``t`` (seconds); ``sketch``: of the
    gate's last whole-searched frame (``scene``), at ``sketch_t``, when one was made."""

    boxes: np.ndarray
    t: float
    sizes: np.ndarray
    sketch: Sketch | None = None
    sketch_t: float = 0.0


#: A face of the view that a region search's box overlaps this much is that box's face.
MERGE_IOU = 0.3


def merge_view(
    previous: View | None,
    found: np.ndarray,
    t: float,
    whole: bool,
    sizes: np.ndarray,
    sketch: Sketch | None = None,
) -> View:
    """The gate's view after a frame whose faces are ``found`` ``(n, 4)`` (face sizes ``sizes``
    ``(n,)``). A whole-frame search replaces it, with the frame's ``sketch``; a region search
    only updates the faces it found and keeps the sketch: a face the view holds that no found
    box overlaps stays (a frame searched around an older view, recognised in parallel with the
    whole-frame search that found a newcomer, must not drop the newcomer)."""
    found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if whole or previous is None:
        return View(found, t, sizes, sketch if whole else None, t)
    keep = np.ones(len(previous.boxes), dtype=bool)
    if len(found) and len(previous.boxes):
        keep = iou_matrix(previous.boxes, found).max(axis=1) < MERGE_IOU
    return View(
        np.concatenate([found, previous.boxes[keep]]),
        t,
        np.concatenate([sizes, previous.sizes[keep]]),
        previous.sketch,
        previous.sketch_t,
    )


@dataclass(frozen=True)
class CarryOffer:
    """What a frame may reuse: its gate's latest decided ``faces``, the frame's time ``t``
    (seconds), the ``policy`` and the node's ``ledger``; ``view``: where the gate's faces were
    last seen, when that is fresh; ``region``: the frame may be searched for faces only around
    them (``detection_region``): the gate's passages allow that when its whole frame was
    searched less than ``region_frames`` frames ago."""

    faces: Sequence[Carried]
    t: float
    policy: CarryPolicy
    ledger: Lender
    view: View | None = None
    region: bool = False


def still_check_due(offer: CarryOffer) -> bool:
    """Whether ``still_scene`` may spare this frame a whole-frame search: the policy allows it,
    the frame is due one (its gate's region streak is spent, or no faces are in view) and the
    gate has a sketch of a whole-searched frame at most ``still_max_age_s`` old."""
    policy, view = offer.policy, offer.view
    if policy.still_diff <= 0 or view is None or view.sketch is None:
        return False
    if len(view.boxes) and (offer.region or policy.region_margin <= 0):
        return False  # a region search anyway, or none possible
    return abs(offer.t - view.sketch_t) <= policy.still_max_age_s


def still_scene(offer: CarryOffer, now: Sketch) -> bool:
    """Whether nothing changed outside the gate's faces since its last whole-searched frame:
    no cell of ``now`` (this frame's sketch) outside the view's boxes, each grown by the region
    margin (the region a region search looks at), moved by more than ``still_diff`` grey
    levels from the view's sketch. Call only when ``still_check_due``."""
    view = offer.view
    if view is None or view.sketch is None:
        return False
    policy = offer.policy
    return not changed_outside(
        now, view.sketch, view.boxes, policy.region_margin, policy.still_diff
    )


#: A region smaller than this (pixels of the image searched, per side) is grown to it: the
#: detector needs some context around a face.
MIN_REGION_PX = 48


def detection_region(
    offer: CarryOffer, width: int, height: int, scale: float
) -> tuple[int, int, int, int] | None:
    """Where to look for faces in a frame, or None to search the whole frame.

    A region is searched only when the offer allows it (the gate's whole frame was searched
    less than ``region_frames`` frames ago) and the view is fresh enough: the frame's
    faces are then where they were, grown or moved a little. Since the whole frame is searched
    at least every ``region_frames`` + 1 frames, a newcomer elsewhere is seen at most
    ``region_frames`` frames late. ``width`` x ``height``: the image the detector gets, which
    is the original frame times ``scale``; returns ``(x0, y0, x1, y1)`` in its pixels: the
    union of the view's boxes, each grown by ``policy.region_margin`` of its size on every side.
    """
    policy = offer.policy
    view = offer.view
    if policy.region_margin <= 0 or not offer.region or view is None or len(view.boxes) == 0:
        return None
    if abs(offer.t - view.t) > policy.max_age_s:
        return None
    boxes = np.asarray(view.boxes, dtype=np.float64).reshape(-1, 4) * scale
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    grown = boxes + np.concatenate([-size, -size, size, size], axis=1) * policy.region_margin
    x0, y0 = grown[:, 0].min(), grown[:, 1].min()
    x1, y1 = grown[:, 2].max(), grown[:, 3].max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = max(x1 - x0, MIN_REGION_PX) / 2, max(y1 - y0, MIN_REGION_PX) / 2
    box = (
        max(0, int(np.floor(cx - half_w))),
        max(0, int(np.floor(cy - half_h))),
        min(width, int(np.ceil(cx + half_w))),
        min(height, int(np.ceil(cy + half_h))),
    )
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        return None
    return box


def region_misses(
    boxes: np.ndarray,
    region: tuple[int, int, int, int],
    width: int,
    height: int,
    scale: float,
    expected: int,
    edge_px: float = 2.0,
) -> bool:
    """True when a search of ``region`` (image pixels, see ``detection_region``) may have missed
    something and the whole frame should be searched: fewer than ``expected`` faces found, or a
    face ``boxes`` ``(n, 4)`` (original pixels) touching an edge of the region that is not an
    edge of the image (a face cut by the region, or one coming into it)."""
    if len(boxes) < expected:
        return True
    x0, y0, x1, y1 = region
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    cut = (
        ((b[:, 0] <= x0 + edge_px) & (x0 > 0))
        | ((b[:, 1] <= y0 + edge_px) & (y0 > 0))
        | ((b[:, 2] >= x1 - edge_px) & (x1 < width))
        | ((b[:, 3] >= y1 - edge_px) & (y1 < height))
    )
    return bool(cut.any())
