"""benchmarks.gpu_models: the pure helpers (tables, combined frames/s, RetinaFace decode).

The GPU measurement itself runs on a lent device; here only what runs without one, plus the
torch conversion against onnxruntime when torch and onnx2torch happen to be installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.gpu_models import (
    DETECTOR,
    EMBEDDER,
    Timing,
    best_timing,
    combined_rows,
    cosine,
    images_per_s,
    keeps_gaining,
    one_face_frames_per_s,
    parse_variant,
    relative_error,
    retinaface_priors,
    summary_stats,
    timing_table,
    top_face_box,
)

EXTRA = {"steps": [8, 16, 32], "min_sizes": [[16, 32], [64, 128], [256, 512]]}


def _t(model: str, batch: int, ms: float, precision: str = "fp16", mode: str = "graph") -> Timing:
    return Timing(model, precision, mode, batch, ms, ms, ms, 20)


def test_rates_per_image_and_per_frame() -> None:
    assert images_per_s(5.0, 256) == pytest.approx(51_200.0)
    # 0.05 ms detection + 0.02 ms embedding per frame = 0.07 ms → 14,286 frames/s
    assert one_face_frames_per_s(0.05, 0.02) == pytest.approx(1000 / 0.07)
    with pytest.raises(ValueError, match="positive"):
        images_per_s(0.0, 8)
    with pytest.raises(ValueError, match="positive"):
        one_face_frames_per_s(0.0, 0.0)


def test_summary_stats_are_median_and_tails() -> None:
    median, p10, p90 = summary_stats([5.0, 1.0, 3.0, 2.0, 4.0, 100.0, 3.5, 2.5, 3.2, 2.8, 3.1])
    assert median == pytest.approx(3.1)
    assert p10 == pytest.approx(2.0) and p90 == pytest.approx(5.0)
    with pytest.raises(ValueError, match="no timed calls"):
        summary_stats([])


@pytest.mark.parametrize(
    ("previous", "current", "expected"),
    [(1000.0, 1050.0, True), (1000.0, 1049.0, False), (1000.0, 900.0, False)],
)
def test_keeps_gaining_needs_five_percent(previous: float, current: float, expected: bool) -> None:
    assert keeps_gaining(previous, current) is expected


def test_combined_rows_take_each_models_best_batch_per_variant() -> None:
    timings = [
        _t(DETECTOR, 64, 4.0),  # 16,000 img/s
        _t(DETECTOR, 128, 6.4),  # 20,000 img/s: best
        _t(EMBEDDER, 128, 2.56),  # 50,000 img/s: best
        _t(EMBEDDER, 256, 6.4),  # 40,000 img/s
        _t(DETECTOR, 64, 8.0, mode="eager"),
        _t(EMBEDDER, 64, 3.2, mode="eager"),
        _t(DETECTOR, 64, 1.0, mode="compiled"),  # no embedder in this variant: no row
    ]
    rows = combined_rows(timings)
    assert [(r["precision"], r["mode"]) for r in rows] == [("fp16", "graph"), ("fp16", "eager")]
    best = rows[0]
    assert (best["det_batch"], best["emb_batch"]) == (128, 128)
    assert best["frames_per_s"] == pytest.approx(1000 / (0.05 + 0.02))
    assert rows[1]["frames_per_s"] == pytest.approx(1000 / (0.125 + 0.05))
    top = best_timing(timings, DETECTOR)
    assert top is not None and top.mode == "compiled"
    assert best_timing(timings, EMBEDDER, "fp32") is None


def test_timing_table_bolds_the_best_batch_and_leaves_gaps_blank() -> None:
    lines = timing_table([_t(DETECTOR, 1, 0.5), _t(DETECTOR, 8, 0.8), _t(EMBEDDER, 8, 0.5)])
    assert lines[0] == "| model | precision | mode | b1 | b8 |"
    emb, det = lines[2], lines[3]
    assert emb.startswith(f"| {EMBEDDER} | fp16 | graph |  | **0.5 ms / 16,000** |")
    assert det == f"| {DETECTOR} | fp16 | graph | 0.5 ms / 2,000 | **0.8 ms / 10,000** |"


def test_parse_variant() -> None:
    assert parse_variant("fp16:graph-cl") == ("fp16", "graph-cl")
    for bad in ("fp8:graph", "fp16:lazy", "fp16"):
        with pytest.raises(ValueError, match="precision:mode"):
            parse_variant(bad)


def test_retinaface_priors_cover_every_level_in_order() -> None:
    priors = retinaface_priors(360, 640, EXTRA)
    # 45×80 cells at stride 8, 23×40 at 16, 12×20 at 32; two anchors per cell
    assert priors.shape == (2 * (45 * 80 + 23 * 40 + 12 * 20), 4)
    np.testing.assert_allclose(priors[0], [4 / 640, 4 / 360, 16 / 640, 16 / 360])
    np.testing.assert_allclose(priors[1], [4 / 640, 4 / 360, 32 / 640, 32 / 360])
    np.testing.assert_allclose(priors[2], [12 / 640, 4 / 360, 16 / 640, 16 / 360])
    np.testing.assert_allclose(priors[-1], [624 / 640, 368 / 360, 512 / 640, 512 / 360])


def test_top_face_box_decodes_the_best_anchor() -> None:
    priors = np.array([[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]], np.float32)
    conf = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    loc = np.zeros((2, 4), np.float32)
    loc[1] = [1.0, 0.0, np.log(2.0) / 0.2, 0.0]  # centre + 0.1·w, width doubled
    box, score = top_face_box(loc, conf, priors, [0.1, 0.2])
    assert score == pytest.approx(0.8)
    np.testing.assert_allclose(box, [0.26 - 0.1, 0.2, 0.26 + 0.1, 0.3], atol=1e-6)
    with pytest.raises(ValueError, match="priors"):
        top_face_box(loc[:1], conf, priors, [0.1, 0.2])


def test_cosine_and_relative_error() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(cosine(a, b), [1.0, -1.0])
    assert relative_error(np.array([3.0, 4.1]), np.array([3.0, 4.0])) == pytest.approx(0.1 / 5)


def test_torch_conversion_matches_onnxruntime(models_dir: Path) -> None:
    """fr-feature folded to batch 2 and converted to torch gives onnxruntime's embeddings."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx2torch")
    import onnxruntime as ort

    from benchmarks.gpu_models import model_file, static_onnx, to_torch

    path, _ = model_file(models_dir, EMBEDDER)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    module = to_torch(static_onnx(path, 2, 112, 112), "cpu", "fp32", False)
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 512)
    assert cosine(got, ref).min() > 0.99999
