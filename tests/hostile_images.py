"""Hostile image payloads built from real files: declared sizes rewritten (decompression
bombs), truncation at markers and chunks, oversized metadata segments, bit flips.

Pure functions over bytes, shared by ``tests/fuzz`` and ``tests/integration/test_hostile_input.py``.
"""

from __future__ import annotations

import struct
import zlib

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC.
SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE})


# -- JPEG structure -------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """``(offset, marker)`` of each marker up to and including the first SOS (header walk)."""
    out = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        out.append((pos, marker))
        if marker == 0xDA:
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        pos += 2 + length
    return out


def jpeg_marker_offsets(data: bytes) -> list[int]:
    """Offsets of every marker (``FF xx`` with xx not 00/FF), header and entropy data alike."""
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] not in (0, 0xFF)]


def with_sof_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` whose frame header (SOFn) declares ``width`` x ``height``."""
    for pos, marker in jpeg_segments(data):
        if marker in SOF_MARKERS:
            out = bytearray(data)
            out[pos + 5 : pos + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    return data


def with_app_segments(data: bytes, marker: int, payload: bytes, count: int) -> bytes:
    """``count`` APPn/COM segments of ``payload`` (at most 65533 bytes) after SOI."""
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment * count + data[2:]


def icc_chain(declared_chunks: int, chunk: bytes) -> bytes:
    """One APP2 ICC_PROFILE payload claiming to be chunk 1 of ``declared_chunks``."""
    return b"ICC_PROFILE\x00" + bytes([1, declared_chunks & 0xFF]) + chunk


# -- PNG structure --------------------------------------------------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with its length and a valid CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """``(offset, type, body length)`` of each chunk that fits in ``data``."""
    out = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((pos, data[pos + 4 : pos + 8], length))
        pos += 12 + length
    return out


def with_ihdr_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` whose IHDR declares ``width`` x ``height``, with the CRC recomputed."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return data
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + png_chunk(b"IHDR", body) + data[33:]


def png_bomb(width: int, height: int, channels: int = 3) -> bytes:
    """A valid PNG of ``width`` x ``height`` black pixels: a few KB per 100 Mpixel of zeros."""
    colour = {1: 0, 3: 2, 4: 6}[channels]
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width * channels)
    parts = [compressor.compress(row) for _ in range(min(height, 64))]
    # Identical rows compress to almost nothing; stop feeding real rows after 64 and let the
    # declared height do the rest (the stream ends early: a truncated bomb).
    parts.append(compressor.flush())
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


# -- generic mutations ----------------------------------------------------------------------


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    """``data`` with one bit flipped at each position (taken modulo the bit length)."""
    if not data:
        return data
    out = bytearray(data)
    for p in positions:
        bit = p % (len(out) * 8)
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def truncate_at_marker(data: bytes, which: int, extra: int) -> bytes:
    """``data`` cut ``extra`` bytes after one of its JPEG markers or PNG chunk starts."""
    if data.startswith(PNG_SIGNATURE):
        cuts = [pos for pos, _, _ in png_chunks(data)]
    else:
        cuts = jpeg_marker_offsets(data)
    if not cuts:
        return data[: extra % (len(data) + 1)]
    return data[: cuts[which % len(cuts)] + extra]


def png_zeros(width: int, height: int) -> bytes:
    """A complete, valid grayscale PNG of ``width`` x ``height`` black pixels: the classic
    decompression bomb (about 1 KB per Mpixel, as rows of zeros compress ~1000:1)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", body)
        + png_chunk(b"IEND", b"")
    )
