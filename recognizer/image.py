"""Decoding camera frames: JPEG through libjpeg-turbo (simplejpeg), PNG through OpenCV.

Sizes are checked from the header before any pixel buffer is allocated, so a small file that
declares a huge image (a decompression bomb) is refused cheaply. JPEGs are decoded at a reduced
scale when the detector does not need full resolution; the full-resolution image is decoded
only when a crop needs it (``DecodedImage.full``).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import simplejpeg

from smartgate.errors import DecodeError

if TYPE_CHECKING:
    from recognizer.faces.scene import Sketch

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_IHDR_END = 33  # signature (8) + length (4) + b"IHDR" (4) + 13 bytes of header + CRC (4)
# The fewest bytes a file can spend on each declared pixel. A Huffman-coded JPEG codes every
# 8x8 luma block's DC coefficient with at least one bit: width * height / 512 bytes at least.
# Deflate (PNG) expands at most 1032:1. A header that declares more than its bytes can hold is
# a truncated file or a decompression bomb: refused before any pixel buffer is allocated.
JPEG_PIXELS_PER_BYTE = 512
DEFLATE_MAX_RATIO = 1032
ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
HUFFMAN_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 12 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 10_000


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png"
    width: int
    height: int


def sniff_format(data: bytes) -> str:
    """Return ``"jpeg"`` or ``"png"`` from the magic bytes, or raise DecodeError."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    head = data[:8].hex(" ") if data else "nothing"
    raise DecodeError(f"image is neither JPEG nor PNG (first bytes: {head})")


def probe(data: bytes, limits: DecodeLimits) -> ImageInfo:
    """Read format and size from the header and check them against ``limits``."""
    if not data:
        raise DecodeError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise DecodeError(f"image is {len(data)} bytes; the limit is {limits.max_bytes}")
    fmt = sniff_format(data)
    if fmt == "jpeg":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise DecodeError(f"JPEG header is unreadable: {exc}") from exc
    else:
        # PNG: signature (8) + IHDR length (4) + b"IHDR" (4) + width (4) + height (4) + ...
        if len(data) < PNG_IHDR_END or data[12:16] != b"IHDR":
            raise DecodeError("PNG is truncated before its IHDR header")
        width, height = struct.unpack(">II", data[16:24])
    if width <= 0 or height <= 0:
        raise DecodeError(f"image declares an empty size {width}x{height}")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise DecodeError(
            f"image declares {width}x{height} pixels; the limits are {limits.max_side} per side "
            f"and {limits.max_pixels} in total"
        )
    least = _least_bytes_jpeg(data, width, height) if fmt == "jpeg" else _least_bytes_png(data)
    if len(data) < least:
        raise DecodeError(
            f"image declares {width}x{height} pixels in only {len(data)} bytes (it needs at "
            f"least {least}): truncated, or a decompression bomb"
        )
    return ImageInfo(fmt, width, height)


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker of ``data`` from a walk over the header segments (None: not found)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in HUFFMAN_SOF or marker in ARITHMETIC_SOF:
            return marker
        elif marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _least_bytes_jpeg(data: bytes, width: int, height: int) -> int:
    if _jpeg_frame_marker(data) in ARITHMETIC_SOF:
        # An arithmetic coder spends almost nothing on a flat image: no lower bound holds.
        raise DecodeError("arithmetic-coded JPEG is not accepted; send Huffman-coded JPEG")
    return width * height // JPEG_PIXELS_PER_BYTE


def _least_bytes_png(data: bytes) -> int:
    width, height = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    channels = PNG_CHANNELS.get(colour)
    if channels is None or depth not in PNG_DEPTHS[colour]:
        raise DecodeError(f"PNG declares an invalid bit depth {depth} or colour type {colour}")
    raw = height * (1 + (width * channels * depth + 7) // 8)  # a filter byte per row
    return raw // DEFLATE_MAX_RATIO


def _decode_jpeg(data: bytes, min_width: int = 0, min_height: int = 0) -> np.ndarray:
    try:
        return simplejpeg.decode_jpeg(
            data, colorspace="BGR", min_width=min_width, min_height=min_height, strict=True
        )
    except ValueError as exc:
        raise DecodeError(f"JPEG data is corrupt or truncated: {exc}") from exc


def _decode_png(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DecodeError("PNG data is corrupt or truncated")
    return image


@dataclass
class DecodedImage:
    """A frame decoded for detection, with the full resolution available on demand.

    ``scaled``: ``(h, w, 3)`` uint8 BGR, possibly reduced by libjpeg-turbo's DCT scaling;
    ``scale`` maps it back: original = scaled / scale (``scale`` <= 1). ``sketch``: the
    frame's grey sketch, once the face analyzer made one (``recognizer.faces.scene``).
    """

    data: bytes
    info: ImageInfo
    scaled: np.ndarray
    scale: float
    _full: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    sketch: Sketch | None = field(default=None, repr=False)

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    def full(self) -> np.ndarray:
        """``(height, width, 3)`` uint8 BGR at the original resolution (decoded once)."""
        if self.scale == 1.0:
            return self.scaled
        with self._lock:
            if self._full is None:
                self._full = _decode_jpeg(self.data)
            return self._full


def decode(
    data: bytes,
    limits: DecodeLimits,
    min_long_side: int = 0,
    full_when: Callable[[float], bool] | None = None,
) -> DecodedImage:
    """Decode ``data`` (JPEG or PNG) to BGR.

    With ``min_long_side`` > 0, a JPEG is decoded at the smallest libjpeg-turbo scale whose long
    side is still at least ``min_long_side`` (and never below 1/2: smaller scales save little
    and cost crop resolution). PNGs are always decoded at full size. ``full_when(scale)``: True
    when the full resolution will be wanted anyway at that reduced scale (small faces to align):
    the JPEG is then decoded once at full size and reduced by a 2x2 mean (~0.25 ms for 1080p,
    within JPEG noise of the DCT-scaled decode) instead of decoded twice.
    """
    info = probe(data, limits)
    if info.format == "png":
        image = _decode_png(data)
        return DecodedImage(data, info, image, 1.0)
    if min_long_side > 0 and max(info.width, info.height) >= 2 * min_long_side:
        if full_when is not None and full_when(0.5):
            full = _decode_jpeg(data)
            size = ((info.width + 1) // 2, (info.height + 1) // 2)  # as libjpeg-turbo's 1/2
            half = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
            return DecodedImage(data, info, half, half.shape[1] / info.width, full)
        if info.width >= info.height:
            image = _decode_jpeg(data, min_width=(info.width + 1) // 2)
        else:
            image = _decode_jpeg(data, min_height=(info.height + 1) // 2)
    else:
        image = _decode_jpeg(data)
    scale = image.shape[1] / info.width
    return DecodedImage(data, info, image, scale)
