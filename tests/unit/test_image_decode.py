"""Decoding: real photos, every kind of bad payload, and scaled decodes."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from recognizer.image import DecodeLimits, decode, probe
from smartgate.errors import DecodeError

LIMITS = DecodeLimits()


def _jpeg(width: int = 64, height: int = 48) -> bytes:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the SOF0 header of ``jpeg`` to claim ``width`` x ``height``."""
    i = jpeg.index(b"\xff\xc0")
    header = bytearray(jpeg)
    header[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(header)


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def test_real_jpeg_decodes_full_size(faces_dir: Path) -> None:
    data = (faces_dir / "examples_obama-720p.jpg").read_bytes()
    img = decode(data, LIMITS)
    assert img.scaled.shape == (720, 1280, 3)
    assert img.scale == 1.0
    assert img.full() is img.scaled


def test_large_jpeg_is_decoded_at_half_scale_with_full_on_demand(faces_dir: Path) -> None:
    data = (faces_dir / "examples_obama-1080p.jpg").read_bytes()
    img = decode(data, LIMITS, min_long_side=640)
    assert img.scaled.shape == (540, 960, 3)
    assert img.scale == pytest.approx(0.5)
    assert img.full().shape == (1080, 1920, 3)


def test_a_frame_whose_full_resolution_is_wanted_is_decoded_once(faces_dir: Path) -> None:
    data = (faces_dir / "examples_obama-1080p.jpg").read_bytes()
    scaled = decode(data, LIMITS, min_long_side=640)
    asked: list[float] = []
    both = decode(data, LIMITS, 640, lambda scale: asked.append(scale) or True)
    assert asked == [0.5]
    assert both.scale == scaled.scale and both.scaled.shape == scaled.scaled.shape
    assert both._full is not None  # already there: full() decodes nothing more
    np.testing.assert_array_equal(both.full(), scaled.full())
    # The 2x2 mean is the DCT-scaled decode up to JPEG noise.
    diff = np.abs(both.scaled.astype(int) - scaled.scaled.astype(int))
    assert diff.mean() < 1.0
    # Not wanted, or no reduced scale in use: decoded as before.
    assert decode(data, LIMITS, 640, lambda scale: False)._full is None
    small = (faces_dir / "examples_obama-720p.jpg").read_bytes()
    assert decode(small, LIMITS, 640, lambda scale: True).scale == 0.5
    assert decode(small, LIMITS, 0, lambda scale: True).scale == 1.0


def test_png_with_alpha_decodes_to_bgr(faces_dir: Path) -> None:
    img = decode((faces_dir / "tests_test_images_32bit.png").read_bytes(), LIMITS)
    assert img.scaled.ndim == 3 and img.scaled.shape[2] == 3
    assert img.info.format == "png"


def test_grayscale_jpeg_decodes_to_three_channels() -> None:
    ok, buf = cv2.imencode(".jpg", np.full((40, 30), 128, np.uint8))
    assert ok
    assert decode(buf.tobytes(), LIMITS).scaled.shape == (40, 30, 3)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"hello world, not an image", "neither JPEG nor PNG"),
        (b"GIF89a" + b"\x00" * 100, "neither JPEG nor PNG"),
        (b"\xff\xd8\xff", "JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated"),
        (_png_header(64, 64), "PNG data is corrupt"),
        (_png_header(100_000, 100_000), "declares 100000x100000"),
        (_png_header(0, 10), "empty size"),
        (_with_declared_size(_jpeg(), 60_000, 60_000), "declares 60000x60000"),
    ],
    ids=[
        "empty",
        "text",
        "gif",
        "jpeg-magic-only",
        "png-sig-only",
        "png-no-data",
        "png-bomb",
        "png-zero",
        "jpeg-bomb",
    ],
)
def test_bad_payloads_raise_decode_error(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(payload, LIMITS)


def test_truncated_jpeg_is_rejected(faces_dir: Path) -> None:
    data = (faces_dir / "examples_obama.jpg").read_bytes()
    with pytest.raises(DecodeError, match="corrupt or truncated"):
        decode(data[: len(data) // 2], LIMITS)


def test_corrupted_jpeg_body_is_rejected(faces_dir: Path) -> None:
    data = bytearray((faces_dir / "examples_obama.jpg").read_bytes())
    rng = np.random.default_rng(1)
    for i in rng.integers(len(data) // 4, len(data) - 4, 400):
        data[i] = 0xFF
    with pytest.raises(DecodeError):
        decode(bytes(data), LIMITS)


def test_oversized_payload_is_rejected_before_decoding() -> None:
    with pytest.raises(DecodeError, match="limit is 100"):
        decode(_jpeg(), DecodeLimits(max_bytes=100))


def test_pixel_limit_applies_to_declared_size() -> None:
    with pytest.raises(DecodeError, match="declares 64x48"):
        probe(_jpeg(), DecodeLimits(max_pixels=1000))
