"""Decompression bombs and truncated headers are refused from the header, before any pixel
buffer is allocated; the least-bytes bound never refuses a real (even flat) image."""

from __future__ import annotations

import resource
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_images import png_bomb, png_zeros, with_ihdr_size, with_sof_size

from recognizer.image import DecodeLimits, decode, probe
from smartgate.errors import DecodeError

LIMITS = DecodeLimits()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _flat_jpeg(width: int, height: int, progressive: bool) -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive), cv2.IMWRITE_JPEG_QUALITY, 50]
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: with_sof_size(f, 8000, 5000), "needs at least 78125"),
        (lambda f: with_sof_size(f, 10_000, 4_000), "decompression bomb"),
        (lambda f: with_sof_size(f, 65500, 65500), "declares 65500x65500"),
        (lambda f: png_bomb(9000, 4000), "decompression bomb"),
        (lambda f: png_bomb(6000, 6000, channels=4), "decompression bomb"),
        (lambda f: png_zeros(12_000, 12_000), "declares 12000x12000"),
        (lambda f: with_ihdr_size(png_zeros(64, 64), 9999, 4000), "decompression bomb"),
    ],
    ids=["jpeg-40mpx", "jpeg-side", "jpeg-65500", "png-rgb", "png-rgba", "png-zeros", "png-ihdr"],
)
def test_bombs_are_refused_without_allocating(faces_dir: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    data = make((faces_dir / "examples_obama_small.jpg").read_bytes())
    before = _peak_rss_mb()
    with pytest.raises(DecodeError, match=message):
        decode(data, LIMITS, 640)
    assert _peak_rss_mb() - before < 32  # a 40 Mpixel BGR buffer alone is 120 MB


def test_arithmetic_coded_jpeg_is_refused(faces_dir: Path) -> None:
    data = bytearray((faces_dir / "examples_obama_small.jpg").read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = 0xC9  # SOF9: extended sequential, arithmetic coding
    with pytest.raises(DecodeError, match="arithmetic-coded"):
        probe(bytes(data), LIMITS)


@pytest.mark.parametrize("progressive", [False, True])
def test_flat_images_are_above_the_least_bytes_bound(progressive: bool) -> None:
    data = _flat_jpeg(4000, 3000, progressive)
    assert len(data) < 4000 * 3000 // 50  # 3x below the sparsest real photo in the data
    assert decode(data, LIMITS).scaled.shape == (3000, 4000, 3)


def test_a_complete_png_of_zeros_within_the_limits_decodes() -> None:
    data = png_zeros(3000, 3000)
    assert len(data) < 20_000
    image = decode(data, LIMITS)
    assert image.scaled.shape == (3000, 3000, 3) and not image.scaled.any()


@pytest.mark.parametrize(("depth", "colour"), [(3, 2), (8, 5), (16, 3)])
def test_png_with_an_impossible_depth_or_colour_type_is_refused(depth: int, colour: int) -> None:
    data = bytearray(png_zeros(8, 8))
    data[24], data[25] = depth, colour
    with pytest.raises(DecodeError, match="invalid bit depth"):
        probe(bytes(data), LIMITS)
