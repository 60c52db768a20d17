"""uint8 HWC → float32 NCHW blobs."""

from __future__ import annotations

import numpy as np
import pytest

from recognizer.preprocess import to_blob


@pytest.mark.parametrize("swap", [False, True])
def test_blob_matches_a_plain_reference(swap: bool) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    mean, std = (104.0, 117.0, 127.0), (1.0, 2.0, 128.0)
    ref = imgs[..., ::-1] if swap else imgs
    ref = (ref.astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(to_blob(imgs, mean, std, swap), ref.transpose(0, 3, 1, 2), rtol=1e-6)


def test_single_image_gets_a_batch_axis_and_bad_shapes_fail() -> None:
    assert to_blob(np.zeros((4, 5, 3), np.uint8), (0, 0, 0), (1, 1, 1)).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError, match=r"\(n, h, w, 3\)"):
        to_blob(np.zeros((4, 5), np.uint8), (0, 0, 0), (1, 1, 1))


@pytest.mark.parametrize("backend", ["cython", "reference"])
def test_blob_goes_through_the_native_dispatcher(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import native

    monkeypatch.setattr(native, "_backend", native._load_backend(backend))
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (8, 6, 3), dtype=np.uint8) for _ in range(2)]
    mean, std = (127.5, 127.5, 127.5), (128.0, 128.0, 128.0)
    stacked = np.stack(crops)
    ref = (stacked[..., ::-1].astype(np.float32) - np.float32(127.5)) * np.float32(1 / 128)
    np.testing.assert_array_equal(to_blob(crops, mean, std, True), ref.transpose(0, 3, 1, 2))


def test_non_uint8_images_are_refused() -> None:
    with pytest.raises(ValueError, match="expected dtype uint8, got float32"):
        to_blob(np.zeros((1, 4, 5, 3), np.float32), (0, 0, 0), (1, 1, 1))
