"""Hypothesis strategies of hostile image payloads: random bytes, magic-prefixed junk, real
JPEG/PNG files through one or two structural mutations (``hostile_images``), PNG bombs.

The seeds are real photos from the shared data plus encoder variants of a real face crop
(progressive, restart intervals, grayscale, 16-bit, gray and BGRA PNG) made with OpenCV.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from hostile_images import (
    JPEG_SOI,
    PNG_SIGNATURE,
    flip_bits,
    icc_chain,
    png_bomb,
    truncate_at_marker,
    with_app_segments,
    with_ihdr_size,
    with_sof_size,
)
from hypothesis import strategies as st

from benchmarks.datasets import data_dir

SEED_PHOTOS = ("examples_obama_small.jpg", "examples_obama-240p.jpg")


def _encode(ext: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, image, params or [])
    if not ok:
        raise ValueError(f"cannot encode {ext}")
    return buf.tobytes()


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Real files to mutate: two real photos, and encoder variants of a real face crop."""
    faces = data_dir() / "faces"
    out = [(faces / name).read_bytes() for name in SEED_PHOTOS]
    photo = cv2.imread(str(faces / "examples_obama_small.jpg"), cv2.IMREAD_COLOR)
    small = cv2.resize(photo, (96, 72), interpolation=cv2.INTER_AREA)
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    out += [
        _encode(".jpg", small, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        _encode(".jpg", gray),
        _encode(".jpg", small, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
        _encode(".png", small),
        _encode(".png", (small.astype(np.uint16) * 257)),
        _encode(".png", gray),
        _encode(".png", cv2.cvtColor(small, cv2.COLOR_BGR2BGRA)),
    ]
    return tuple(out)


# -- strategies -----------------------------------------------------------------------------

_seed = st.integers(min_value=0).map(lambda i: seeds()[i % len(seeds())])
_dims = st.one_of(
    st.sampled_from([0, 1, 2, 7, 8, 9, 16, 65500, 65535]),
    st.integers(min_value=0, max_value=65535),
)


@st.composite
def mutated_image(draw: st.DrawFn) -> bytes:
    """One real seed file through one or two structural mutations."""
    data = draw(_seed)
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        kind = draw(
            st.sampled_from(
                ["flip", "truncate", "sof", "ihdr", "app", "icc", "splice", "zero", "bytes"]
            )
        )
        if kind == "flip":
            data = flip_bits(data, draw(st.lists(st.integers(min_value=0), min_size=1, max_size=8)))
        elif kind == "truncate":
            data = truncate_at_marker(
                data, draw(st.integers(min_value=0)), draw(st.integers(min_value=0, max_value=8))
            )
        elif kind == "sof":
            data = with_sof_size(data, draw(_dims), draw(_dims))
        elif kind == "ihdr":
            data = with_ihdr_size(data, draw(_dims), draw(_dims))
        elif kind == "app":
            marker = draw(st.sampled_from([0xE0, 0xE1, 0xE2, 0xED, 0xEE, 0xFE]))
            size = draw(st.sampled_from([0, 1, 1000, 65533]))
            count = draw(st.integers(min_value=1, max_value=150))
            data = with_app_segments(data, marker, b"\xff" * size, count)
        elif kind == "icc":
            declared = draw(st.integers(min_value=0, max_value=255))
            chunk = draw(st.binary(max_size=256))
            data = with_app_segments(data, 0xE2, icc_chain(declared, chunk), 1)
        elif kind == "splice":
            at = draw(st.integers(min_value=0, max_value=len(data)))
            data = data[:at] + draw(st.binary(max_size=64)) + data[at:]
        elif kind == "zero":
            at = draw(st.integers(min_value=0, max_value=len(data)))
            size = draw(st.integers(min_value=1, max_value=4096))
            data = data[:at] + b"\x00" * size + data[at + size :]
        else:
            at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
            data = data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at + 16 :]
    return data


@st.composite
def png_bombs(draw: st.DrawFn) -> bytes:
    side = st.integers(min_value=1, max_value=70_000)
    channels = draw(st.sampled_from([1, 3, 4]))
    return png_bomb(draw(side), draw(side), channels)


def image_payloads() -> st.SearchStrategy[bytes]:
    """Random bytes, magic-prefixed junk, mutated real files and bombs."""
    magic = st.sampled_from([b"", JPEG_SOI + b"\xff", PNG_SIGNATURE])
    return st.one_of(
        st.binary(max_size=2048),
        st.tuples(magic, st.binary(max_size=2048)).map(lambda t: t[0] + t[1]),
        mutated_image(),
        mutated_image(),
        mutated_image(),
        png_bombs(),
    )
