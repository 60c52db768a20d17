"""``native.hwc_to_nchw``: kernel == numpy reference, edge cases, input checks."""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import pytest

import native
from native.reference import hwc_to_nchw_ref

CYTHON = native._load_backend("cython")
IMPLEMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "cython": CYTHON.hwc_to_nchw,
    "reference": hwc_to_nchw_ref,
}
# (mean, std) of the shipped models: RetinaFace, fr-feature, fr-liveness, plate-rec.
NORMS = [
    ((104.0, 117.0, 127.0), (1.0, 1.0, 1.0)),
    ((127.5, 127.5, 127.5), (128.0, 128.0, 128.0)),
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    ((0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
]


def _plain(images: np.ndarray, mean: tuple, std: tuple, swap: bool) -> np.ndarray:
    """The definition, written the obvious way (float64, then rounded)."""
    src = images[..., ::-1] if swap else images
    x = (src.astype(np.float64) - np.array(mean)) / np.array(std)
    return x.transpose(0, 3, 1, 2).astype(np.float32)


def _run(impl: str, images: np.ndarray, mean: tuple, std: tuple, swap: bool) -> np.ndarray:
    n, h, w, _ = images.shape
    out = np.full((n, 3, h, w), np.nan, np.float32)
    result = IMPLEMENTATIONS[impl](
        np.ascontiguousarray(images),
        np.asarray(mean, np.float64),
        np.asarray(std, np.float64),
        swap,
        out,
    )
    assert result is out
    return out


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize(("mean", "std"), NORMS)
@pytest.mark.parametrize("shape", [(1, 360, 640), (8, 112, 112), (3, 17, 5), (2, 48, 333)])
def test_kernel_matches_reference(
    shape: tuple[int, int, int], mean: tuple, std: tuple, swap: bool
) -> None:
    rng = np.random.default_rng(sum(shape))
    images = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    ref = _run("reference", images, mean, std, swap)
    got = _run("cython", images, mean, std, swap)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(got, ref)  # same float32 operations: bit for bit
    np.testing.assert_allclose(ref, _plain(images, mean, std, swap), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_swap_sends_each_channel_to_the_right_plane(impl: str) -> None:
    images = np.array([[[[10, 20, 30]]]], np.uint8)  # one BGR pixel
    mean, std = (1.0, 2.0, 3.0), (1.0, 2.0, 4.0)
    assert _run(impl, images, mean, std, False).ravel().tolist() == [9.0, 9.0, 6.75]
    assert _run(impl, images, mean, std, True).ravel().tolist() == [29.0, 9.0, 1.75]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (2, 4, 0), (0, 0, 0)])
def test_empty_batches_and_images(impl: str, shape: tuple[int, int, int]) -> None:
    images = np.zeros((*shape, 3), np.uint8)
    assert _run(impl, images, (0, 0, 0), (1, 1, 1), False).shape == (shape[0], 3, *shape[1:])


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("n", [1, 5])
def test_one_pixel_images(impl: str, n: int) -> None:
    images = np.arange(3 * n, dtype=np.uint8).reshape(n, 1, 1, 3)
    got = _run(impl, images, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), True)
    np.testing.assert_array_equal(got, _plain(images, (1, 1, 1), (2, 2, 2), True))


@pytest.mark.parametrize(
    "view",
    [
        lambda a: a[:, ::2, 1::3],  # strided crop
        lambda a: a[..., ::-1],  # channel-reversed view
        lambda a: a.transpose(0, 2, 1, 3),  # transposed rows and columns
        np.asfortranarray,
        lambda a: a[::2],  # every other image
    ],
    ids=["strided", "channels-reversed", "transposed", "fortran", "batch-step"],
)
@pytest.mark.parametrize("backend", ["cython", "reference"])
def test_public_function_takes_non_contiguous_input(
    view: Callable[[np.ndarray], np.ndarray], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native, "_backend", native._load_backend(backend))
    images = np.random.default_rng(1).integers(0, 256, (4, 30, 40, 3), dtype=np.uint8)
    viewed = view(images)
    assert not viewed.flags.c_contiguous
    mean, std = NORMS[1]
    got = native.hwc_to_nchw(viewed, mean, std, swap_rb=True)
    np.testing.assert_allclose(got, _plain(viewed, mean, std, True), rtol=1e-6, atol=1e-6)


def test_public_function_fills_and_returns_out() -> None:
    images = np.full((2, 3, 4, 3), 7, np.uint8)
    out = np.zeros((2, 3, 3, 4), np.float32)
    assert native.hwc_to_nchw(images, [1, 2, 3], [1, 1, 2], out=out) is out
    np.testing.assert_array_equal(out[:, :, 0, 0], [[6, 5, 2], [6, 5, 2]])


def test_public_function_accepts_sequences_and_numpy_norms() -> None:
    images = np.ones((1, 2, 2, 3), np.uint8)
    a = native.hwc_to_nchw(images, (0, 0, 0), (1, 1, 1))
    b = native.hwc_to_nchw(images, np.zeros(3, np.float32), np.ones(3, np.int64))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert a.flags.c_contiguous


GOOD = np.zeros((2, 4, 5, 3), np.uint8)
BAD_INPUTS = [
    ("3-D images", {"images": GOOD[0]}, r"images: expected shape \(n, h, w, 3\), got \(4, 5, 3\)"),
    ("4 channels", {"images": np.zeros((2, 4, 5, 4), np.uint8)},
     r"images: expected shape \(n, h, w, 3\), got \(2, 4, 5, 4\)"),
    ("float images", {"images": GOOD.astype(np.float32)},
     r"images: expected dtype uint8, got float32"),
    ("mean of 4", {"mean": (0, 0, 0, 0)}, r"mean: expected shape \(3,\), got \(4,\)"),
    ("scalar std", {"std": 1.0}, r"std: expected shape \(3,\), got \(\)"),
    ("zero std", {"std": (1, 0, 1)},
     r"std: expected finite non-zero values, got \[1.0, 0.0, 1.0\]"),
    ("nan std", {"std": (1, np.nan, 1)}, r"std: expected finite non-zero values"),
    ("out shape", {"out": np.zeros((2, 3, 5, 4), np.float32)},
     r"out: expected shape \(2, 3, 4, 5\), got \(2, 3, 5, 4\)"),
    ("out dtype", {"out": np.zeros((2, 3, 4, 5), np.float64)},
     r"out: expected a float32 numpy array, got float64"),
    ("out not an array", {"out": [0.0]}, r"out: expected a float32 numpy array, got list"),
    ("out strided", {"out": np.zeros((2, 3, 4, 10), np.float32)[..., ::2]},
     r"out: expected a writeable C-contiguous array"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"), [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_inputs_raise_value_error(changes: dict, message: str) -> None:
    kwargs = {"images": GOOD, "mean": (0, 0, 0), "std": (1, 1, 1), **changes}
    with pytest.raises(ValueError, match=message):
        native.hwc_to_nchw(**kwargs)


def test_read_only_or_overlapping_out_is_refused() -> None:
    out = np.zeros((2, 3, 4, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        native.hwc_to_nchw(GOOD, (0, 0, 0), (1, 1, 1), out=out)
    buffer = np.zeros(2 * 3 * 4 * 5 * 4, np.uint8)
    images = buffer[: 2 * 4 * 5 * 3].reshape(2, 4, 5, 3)
    overlapping = buffer.view(np.float32).reshape(2, 3, 4, 5)
    with pytest.raises(ValueError, match="must not overlap"):
        native.hwc_to_nchw(images, (0, 0, 0), (1, 1, 1), out=overlapping)


def test_read_only_input_is_fine() -> None:
    images = np.full((1, 2, 2, 3), 3, np.uint8)
    images.flags.writeable = False
    got = native.hwc_to_nchw(images, (1, 1, 1), (1, 1, 1))
    np.testing.assert_array_equal(got, np.full((1, 3, 2, 2), 2.0, np.float32))


def test_reference_backend_and_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    assert native._load_backend("reference").hwc_to_nchw is hwc_to_nchw_ref
    monkeypatch.setitem(sys.modules, "native._preprocess_cy", None)
    with pytest.raises(ImportError, match=r"run `pip install -e \.`"):
        native._load_backend("cython")
