"""Plate text: normalise what the recogniser read, and name the mainland plate format it fits.

Pure functions, no model. ``normalize`` only removes what is never part of a plate number
(separators, case, full-width forms) and applies the one positional rule mainland plates
allow: the serial part (after the province character and the issuing-authority letter) uses
neither ``O`` nor ``I``, so those are read as ``0`` and ``1``. It never guesses a character
the recogniser did not read; a text that fits no format stays as it is and ``classify``
returns ``None`` (the reader then reports it as invalid with a low score).

Formats enforced by ``classify`` (GA 36-2018, mainland China), written here with ``P`` a
province character, ``L`` a letter ``A-Z``, ``S`` a serial character (a digit or a letter
other than ``I`` and ``O``), ``9`` a digit:

==============  ======================  ====================================================
format          pattern                 notes
==============  ======================  ====================================================
STANDARD        ``P L SSSSS``           blue (small) or yellow (large) plates, 7 characters
NEW_ENERGY      ``P L [DF] S 9999``     small new-energy car (green gradient), 8 characters:
                                        the serial starts with D (battery electric) or F
                                        (other new energy), then a letter or digit, then
                                        four digits
NEW_ENERGY      ``P L 99999 [DF]``      large new-energy vehicle: five digits, then D or F
POLICE          ``P L SSSS 警``         white plate, red 警
COACH           ``P L SSSS 学``         learner car (yellow)
TRAILER         ``P L SSSS 挂``         trailer (yellow)
HK              ``粤 Z SSSS 港``        Hong Kong cross-border vehicle (black)
MACAO           ``粤 Z SSSS 澳``        Macao cross-border vehicle (black)
CONSULATE       ``P L SSSS 领``         consulate (black)
EMBASSY         ``使 999999``           embassy (black), first three digits name the mission
==============  ======================  ====================================================

Not covered (``classify`` returns ``None``): military and armed-police plates, the old
pre-2018 embassy layout, temporary, experimental (试) and oversize-test (超) plates.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum

__all__ = [
    "PLATE_CHARACTERS",
    "PROVINCES",
    "SERIAL_LOOKALIKES",
    "SUFFIXES",
    "PlateFormat",
    "classify",
    "is_separator",
    "normalize",
    "serial_start",
]

# The 31 mainland province-level abbreviations.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
# Characters that end (or, for 使, start) special plates.
SUFFIXES = "警学挂港澳领"
EMBASSY_PREFIX = "使"
# Every character a mainland plate can show: the recogniser's decoding vocabulary when the
# reader restricts it to plates.
PLATE_CHARACTERS = PROVINCES + LETTERS + DIGITS + SUFFIXES + EMBASSY_PREFIX
# In the serial part ``normalize`` reads the first of each pair as the second.
SERIAL_LOOKALIKES = (("O", "0"), ("I", "1"))

# What the recogniser may put between characters; never part of a plate number.
# (U+00B7 middle dot, U+2022 bullet, U+30FB katakana middle dot, full stops and colons in
# ASCII and full width, hyphens and dashes, and white space.)
_SEPARATORS = re.compile(r"[\s·•・.．:：\-‐‑‒–—_]+")


class PlateFormat(StrEnum):
    """The mainland plate layouts ``classify`` recognises (see the module docstring)."""

    STANDARD = "standard"
    NEW_ENERGY = "new_energy"
    POLICE = "police"
    COACH = "coach"
    TRAILER = "trailer"
    HK = "hk"
    MACAO = "macao"
    CONSULATE = "consulate"
    EMBASSY = "embassy"


_P = f"[{PROVINCES}]"
_L = "[A-Z]"
_S = "[A-HJ-NP-Z0-9]"  # serial character: no I, no O
_PATTERNS: tuple[tuple[PlateFormat, re.Pattern[str]], ...] = tuple(
    (fmt, re.compile(pattern))
    for fmt, pattern in (
        (PlateFormat.STANDARD, f"{_P}{_L}{_S}{{5}}"),
        (PlateFormat.NEW_ENERGY, f"{_P}{_L}(?:[DF]{_S}[0-9]{{4}}|[0-9]{{5}}[DF])"),
        (PlateFormat.POLICE, f"{_P}{_L}{_S}{{4}}警"),
        (PlateFormat.COACH, f"{_P}{_L}{_S}{{4}}学"),
        (PlateFormat.TRAILER, f"{_P}{_L}{_S}{{4}}挂"),
        (PlateFormat.HK, f"粤Z{_S}{{4}}港"),
        (PlateFormat.MACAO, f"粤Z{_S}{{4}}澳"),
        (PlateFormat.CONSULATE, f"{_P}{_L}{_S}{{4}}领"),
        (PlateFormat.EMBASSY, "使[0-9]{6}"),
    )
)


def normalize(raw: str) -> str:
    """The plate number in ``raw`` as recognised text, canonically written.

    Steps: Unicode NFKC (full-width ``Ａ１`` become ``A1``), drop separators and white space
    (``·``, ``-``, ``:``, ``.`` and their look-alikes), upper-case, then in the serial part
    read ``O`` as ``0`` and ``I`` as ``1``. The serial part starts after the first two
    characters (province + authority letter), or after the first one for embassy plates
    (``使`` + six digits). ``"皖a·z576j"`` → ``"皖AZ576J"``; ``"浙D-335DZ"`` → ``"浙D335DZ"``.
    """
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).upper()
    head = serial_start(text)
    serial = text[head:]
    for letter, digit in SERIAL_LOOKALIKES:
        serial = serial.replace(letter, digit)
    return text[:head] + serial


def serial_start(text: str) -> int:
    """Where the serial part of a plate text starts: after the province character and the
    authority letter, or after ``使`` for embassy plates."""
    return 1 if text.startswith(EMBASSY_PREFIX) else 2


def is_separator(char: str) -> bool:
    """Whether ``normalize`` drops ``char`` (a separator or white space)."""
    return bool(_SEPARATORS.fullmatch(unicodedata.normalize("NFKC", char)))


def classify(text: str) -> PlateFormat | None:
    """The format a *normalised* plate text fits, or ``None`` when it fits none.

    ``classify("皖AZ576J")`` is ``STANDARD``, ``classify("粤BD12345")`` is ``NEW_ENERGY``,
    ``classify("皖AZ576")`` (six characters) is ``None``.
    """
    for fmt, pattern in _PATTERNS:
        if pattern.fullmatch(text):
            return fmt
    return None
