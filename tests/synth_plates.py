"""Synthetic mainland plates for tests: every format and colour the reader knows.

Real photos of green, yellow, double-row, police, Hong Kong/Macao and embassy plates are
scarce in the shared data, so the tests render their own with Pillow and a CJK font from
Debian's ``fonts-noto-cjk`` (``apt-get install -y fonts-noto-cjk``). Proportions follow GA
36-2018 (440 × 140 mm single-row, 480 × 140 mm new-energy, 440 × 220 mm double-row); the
glyphs are Noto Sans CJK Bold stretched into each character cell, not the plate typeface,
so OCR on these renders is a coverage check, not an accuracy figure.

``render_plate`` returns a tight, flat BGR crop; ``place_in_scene`` pastes one, warped, into
a larger image (for the detector). Both are deterministic for a given seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FONT_CANDIDATES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSerifCJK-Bold.ttc"),
    Path("/usr/share/fonts/noto-cjk/NotoSansCJK-Bold.ttc"),
    Path("/usr/share/fonts/google-noto-cjk/NotoSansCJK-Bold.ttc"),
)
FONT_MISSING = (
    "no CJK font for synthetic plates: install Debian's fonts-noto-cjk "
    "(apt-get install -y fonts-noto-cjk) and Pillow (pip install pillow)"
)

# RGB.
WHITE = (245, 245, 245)
BLACK = (20, 20, 20)
RED = (215, 25, 30)
BACKGROUNDS = {
    "blue": (20, 70, 190),
    "yellow": (245, 190, 20),
    "white": (240, 240, 236),
    "black": (22, 22, 22),
}
GREEN_TOP = (225, 245, 230)  # small new-energy plates fade from near-white to green
GREEN_BOTTOM = (40, 185, 95)


@dataclass(frozen=True)
class SynthCase:
    """One rendered plate and what the reader should say about it."""

    text: str
    color: str  # "blue" | "yellow" | "green" | "white" | "black"
    format: str  # a recognizer.plates.text.PlateFormat value
    double_row: bool = False

    @property
    def id(self) -> str:
        return f"{self.format}-{self.color}{'-2row' if self.double_row else ''}"


CASES: tuple[SynthCase, ...] = (
    SynthCase("京A12345", "blue", "standard"),
    SynthCase("沪B7K2Q9", "blue", "standard"),
    SynthCase("苏E6Y521", "yellow", "standard"),
    SynthCase("粤BD12345", "green", "new_energy"),
    SynthCase("浙AFB2368", "green", "new_energy"),
    SynthCase("京A0123警", "white", "police"),
    SynthCase("川A3456学", "yellow", "coach"),
    SynthCase("鲁B2345挂", "yellow", "trailer", double_row=True),
    SynthCase("粤Z1234港", "black", "hk"),
    SynthCase("粤Z5678澳", "black", "macao"),
    SynthCase("沪A1234领", "black", "consulate"),
    SynthCase("使014578", "black", "embassy"),
    SynthCase("豫A58K26", "yellow", "standard", double_row=True),
)


@functools.cache
def find_cjk_font() -> Path | None:
    """The first installed CJK font file, or ``None``."""
    for path in FONT_CANDIDATES:
        if path.is_file():
            return path
    return None


def font_available() -> bool:
    try:
        import PIL  # noqa: F401
    except ImportError:
        return False
    return find_cjk_font() is not None


@functools.cache
def _glyph(char: str, size: int) -> np.ndarray:
    """A tight ``(h, w)`` uint8 coverage mask of ``char`` at ``size`` pixels."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = find_cjk_font()
    if font_path is None:
        raise RuntimeError(FONT_MISSING)
    # A .ttc holds several faces (JP, KR, SC, TC, HK); take SC (simplified Chinese) if there.
    font = ImageFont.truetype(str(font_path), size, index=0)
    for index in range(10):
        try:
            face = ImageFont.truetype(str(font_path), size, index=index)
        except OSError:
            break
        if "SC" in " ".join(str(part) for part in face.getname()):
            font = face
            break
    canvas = Image.new("L", (size * 2, size * 2), 0)
    ImageDraw.Draw(canvas).text((size // 2, size // 4), char, fill=255, font=font)
    mask = np.asarray(canvas)
    ys, xs = np.nonzero(mask)
    return np.ascontiguousarray(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


def _stamp(
    image: np.ndarray, char: str, box: tuple[float, float, float, float], rgb: tuple[int, ...]
) -> None:
    """Draw ``char`` stretched into ``box`` = (x, y, w, h) of the float RGB ``image``."""
    x, y, w, h = (round(v) for v in box)
    glyph = _glyph(char, 160)
    gh, gw = glyph.shape
    # Every glyph fills its cell (the plate typeface is tall and narrow), except "1".
    if char == "1":
        # A narrow glyph stays narrow, centred.
        tw = max(1, round(gw * h / gh))
        x, w = x + (w - tw) // 2, tw
    alpha = cv2.resize(glyph, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    region = image[y : y + h, x : x + w]
    colour = np.array(rgb, dtype=np.float32)
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]


def _background(color: str, height: int, width: int) -> np.ndarray:
    if color == "green":
        t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
        top = np.array(GREEN_TOP, dtype=np.float32)
        bottom = np.array(GREEN_BOTTOM, dtype=np.float32)
        column = top * (1 - t) + bottom * t
        return np.repeat(column, width, axis=1)
    return np.full((height, width, 3), BACKGROUNDS[color], dtype=np.float32)


def _ink(color: str) -> tuple[int, int, int]:
    return WHITE if color in ("blue", "black") else BLACK


def render_plate(case: SynthCase, scale: float = 1.0) -> np.ndarray:
    """A flat BGR uint8 crop of ``case``: 1 px per mm at ``scale`` 1 (440 × 140 and so on)."""
    chars = list(case.text)
    color = case.color
    ink = _ink(color)
    if case.double_row:
        w_mm, h_mm = 440, 220
    elif len(chars) == 8:
        w_mm, h_mm = 480, 140
    else:
        w_mm, h_mm = 440, 140
    image = _background(color, h_mm, w_mm)
    # Frame line, 3 mm wide, inset 3 mm, in the ink colour (as on the real plates).
    cv2.rectangle(image, (4, 4), (w_mm - 5, h_mm - 5), [float(v) for v in ink], 3, cv2.LINE_AA)

    def char_ink(ch: str) -> tuple[int, int, int]:
        if ch == "警" or (ch in "使领" and color == "black"):
            return RED
        return ink

    if case.double_row:
        top, bottom = chars[:2], chars[2:]
        for i, ch in enumerate(top):  # two 80 × 60 mm cells, centred
            _stamp(image, ch, (110 + i * 140, 15, 80, 60), char_ink(ch))
        for i, ch in enumerate(bottom):  # 65 × 110 mm cells, 15 mm apart
            _stamp(image, ch, (27.5 + i * 80, 90, 65, 110), char_ink(ch))
    else:
        n = len(chars)
        cell_w = 43 if n == 8 else 45
        gap = 9 if n == 8 else 12
        dot_gap = 49 if n == 8 else 34
        x = (w_mm - (n * cell_w + (n - 2) * gap + dot_gap)) / 2
        dot_after = 3 if case.text.startswith("使") else 1
        for i, ch in enumerate(chars):
            _stamp(image, ch, (x, 25, cell_w, 90), char_ink(ch))
            x += cell_w + (dot_gap if i == dot_after else gap)
            if i == dot_after:  # the separator dot
                centre = (round(x - dot_gap / 2 - gap / 2 + 6), 70)
                cv2.circle(image, centre, 5, [float(v) for v in ink], -1, cv2.LINE_AA)
    rgb = np.clip(image, 0, 255).astype(np.uint8)
    if scale != 1.0:
        size = (max(1, round(w_mm * scale)), max(1, round(h_mm * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb[..., ::-1])


def place_in_scene(
    plate: np.ndarray,
    scene_hw: tuple[int, int] = (720, 960),
    plate_width: int = 240,
    tilt_deg: float = 6.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``plate`` into a textured grey scene, rotated by ``tilt_deg``.

    Returns the BGR scene and the plate's corners ``(4, 2)`` as [top-left, top-right,
    bottom-right, bottom-left] in scene pixels.
    """
    rng = np.random.default_rng(seed)
    h, w = scene_hw
    noise = rng.normal(0, 1, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    scene = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC) * 18 + 110
    scene = np.clip(scene, 0, 255).astype(np.uint8)
    ph, pw = plate.shape[:2]
    plate_height = plate_width * ph / pw
    cx, cy = w / 2 + rng.uniform(-w / 6, w / 6), h / 2 + rng.uniform(-h / 6, h / 6)
    angle = np.deg2rad(tilt_deg)
    ux = np.array([np.cos(angle), np.sin(angle)]) * plate_width / 2
    uy = np.array([-np.sin(angle), np.cos(angle)]) * plate_height / 2
    centre = np.array([cx, cy])
    corners = np.array(
        [centre - ux - uy, centre + ux - uy, centre + ux + uy, centre - ux + uy], np.float32
    )
    src = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float32) - np.float32(0.5)
    matrix = cv2.getPerspectiveTransform(src, corners)
    warped = cv2.warpPerspective(plate, matrix, (w, h), flags=cv2.INTER_AREA)
    mask = cv2.warpPerspective(np.full((ph, pw), 255, np.uint8), matrix, (w, h))
    alpha = (mask.astype(np.float32) / 255)[..., None]
    out = scene * (1 - alpha) + warped * alpha
    return np.clip(out, 0, 255).astype(np.uint8), corners
