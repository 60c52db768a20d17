"""recognizer.faces.scene and the still-scene rules of recognizer.faces.carry: when a frame due
a whole-frame search may be searched around its faces only (or not at all)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from recognizer.faces.carry import (
    CarryLedger,
    CarryOffer,
    CarryPolicy,
    View,
    merge_view,
    still_check_due,
    still_scene,
)
from recognizer.faces.scene import CELL_PX, Sketch, changed_outside, face_cells, sketch

POLICY = CarryPolicy(max_carry=3, region_margin=1.0, still_diff=12.0, still_max_age_s=1.0)


def _frame(seed: int = 0, noise: float = 3.0) -> np.ndarray:
    """A 1280 x 720 grey frame with a darker block, plus camera noise of ``noise`` grey levels."""
    rng = np.random.default_rng(seed)
    frame = np.full((720, 1280, 3), 110.0)
    frame[300:500, 200:400] = 60.0
    frame += rng.normal(0, noise, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _reference_cells(image: np.ndarray, step: int) -> np.ndarray:
    """The numpy statement of a sketch: the mean grey of every whole ``step`` square."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    rows, cols = grey.shape[0] // step, grey.shape[1] // step
    blocks = grey[: rows * step, : cols * step].reshape(rows, step, cols, step)
    return blocks.mean(axis=(1, 3))


@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / 3])
def test_a_sketch_is_the_mean_grey_of_each_cell(scale: float) -> None:
    full = _frame()
    image = cv2.resize(full, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    s = sketch(image, scale)
    step = round(CELL_PX * scale)
    assert s.cell_px == pytest.approx(step / scale)
    assert s.cells.shape == (image.shape[0] // step, image.shape[1] // step)
    assert s.cells.dtype == np.uint8
    assert np.abs(s.cells - _reference_cells(image, step)).max() <= 1.0  # rounding


def test_a_frame_smaller_than_a_cell_has_an_empty_sketch_that_always_differs() -> None:
    tiny = sketch(np.zeros((8, 8, 3), np.uint8), 1.0)
    assert tiny.cells.shape == (0, 0)
    assert changed_outside(tiny, sketch(_frame(), 1.0), np.zeros((0, 4)), 1.0, 12.0)


def test_camera_noise_is_no_change_but_a_new_object_is() -> None:
    then = sketch(_frame(seed=1, noise=8.0), 1.0)
    assert not changed_outside(
        sketch(_frame(seed=2, noise=8.0), 1.0), then, np.zeros((0, 4)), 1.0, 12.0
    )
    frame = _frame(seed=2, noise=8.0)
    frame[100:140, 900:940] = 200  # a 40-pixel object coming into view
    assert changed_outside(sketch(frame, 1.0), then, np.zeros((0, 4)), 1.0, 12.0)


def test_a_change_under_the_grown_faces_does_not_count() -> None:
    then = sketch(_frame(), 1.0)
    frame = _frame()
    frame[320:480, 220:380] = 200  # the face itself changed (moved, turned)
    now = sketch(frame, 1.0)
    face = np.array([[220.0, 320.0, 380.0, 480.0]])
    assert not changed_outside(now, then, face, 0.0, 12.0)
    frame[320:480, 560:600] = 200  # next to it, further than the margin
    assert changed_outside(sketch(frame, 1.0), then, face, 1.0, 12.0)
    assert not changed_outside(sketch(frame, 1.0), then, face, 2.5, 12.0)


def test_face_cells_cover_the_grown_box_and_stay_inside_the_grid() -> None:
    mask = face_cells(np.array([[16.0, 16.0, 48.0, 48.0]]), 0.5, 16.0, (10, 10))
    # 32-pixel box grown by 16 per side: pixels 0..64, cells 0..3.
    expected = np.zeros((10, 10), bool)
    expected[0:4, 0:4] = True
    assert (mask == expected).all()
    edge = face_cells(np.array([[150.0, 150.0, 170.0, 170.0]]), 1.0, 16.0, (10, 10))
    assert edge[8:, 8:].all() and edge.sum() == 4


def test_sketches_of_different_frame_sizes_always_differ() -> None:
    a = sketch(_frame(), 1.0)
    b = Sketch(a.cells[:-1], a.cell_px)
    assert changed_outside(a, b, np.zeros((0, 4)), 1.0, 255.0)


def _view(boxes: list[list[float]], sketch_t: float = 0.0, with_sketch: bool = True) -> View:
    b = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    s = sketch(_frame(), 1.0) if with_sketch else None
    return View(b, sketch_t, np.full(len(b), 100.0), s, sketch_t)


def _offer(
    view: View | None, region: bool, t: float = 0.5, policy: CarryPolicy = POLICY
) -> CarryOffer:
    return CarryOffer((), t, policy, CarryLedger(3), view, region)


def test_a_still_check_is_due_only_when_a_whole_frame_search_would_be() -> None:
    face = [[220.0, 320.0, 380.0, 480.0]]
    assert still_check_due(_offer(_view(face), region=False))
    assert not still_check_due(_offer(_view(face), region=True))  # a region search anyway
    # No faces in view: every frame is checked (a still empty scene is not searched at all).
    assert still_check_due(_offer(_view([]), region=True))
    assert not still_check_due(_offer(None, region=False))
    assert not still_check_due(_offer(_view(face, with_sketch=False), region=False))
    # The sketch is older than still_max_age_s: the whole frame is searched.
    assert not still_check_due(_offer(_view(face, sketch_t=0.0), region=False, t=1.2))
    off = replace(POLICY, still_diff=0.0)
    assert not still_check_due(_offer(_view(face), region=False, policy=off))
    no_regions = replace(POLICY, region_margin=0.0)
    assert not still_check_due(_offer(_view(face), region=False, policy=no_regions))
    assert still_check_due(_offer(_view([]), region=False, policy=no_regions))


def test_still_scene_compares_outside_the_views_faces() -> None:
    face = [[220.0, 320.0, 380.0, 480.0]]
    offer = _offer(_view(face), region=False)
    assert still_scene(offer, sketch(_frame(seed=5), 1.0))
    frame = _frame(seed=5)
    frame[600:700, 1000:1100] = 250
    assert not still_scene(offer, sketch(frame, 1.0))
    assert not still_scene(_offer(None, region=False), sketch(_frame(), 1.0))


def test_merge_view_keeps_the_sketch_of_the_last_whole_searched_frame() -> None:
    s1, s2 = sketch(_frame(1), 1.0), sketch(_frame(2), 1.0)
    box = np.array([[220.0, 320.0, 380.0, 480.0]])
    whole = merge_view(None, box, 1.0, True, np.array([100.0]), s1)
    assert whole.sketch is s1 and whole.sketch_t == 1.0
    region = merge_view(whole, box + 5, 1.1, False, np.array([100.0]), s2)
    assert region.sketch is s1 and region.sketch_t == 1.0 and region.t == 1.1
    empty = merge_view(None, np.zeros((0, 4)), 2.0, True, np.zeros(0), s2)
    nothing = merge_view(empty, np.zeros((0, 4)), 2.1, False, np.zeros(0), None)
    assert nothing.sketch is s2 and len(nothing.boxes) == 0 and nothing.t == 2.1
    again = merge_view(region, box, 1.2, True, np.array([100.0]), s2)
    assert again.sketch is s2 and again.sketch_t == 1.2
