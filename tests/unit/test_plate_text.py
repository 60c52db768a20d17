"""Plate text normalisation and format classification (pure tables)."""

from __future__ import annotations

import pytest

from recognizer.plates.text import (
    PLATE_CHARACTERS,
    PROVINCES,
    SERIAL_LOOKALIKES,
    PlateFormat,
    classify,
    is_separator,
    normalize,
    serial_start,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("皖A·Z576J", "皖AZ576J"),  # the recogniser's separator
        ("皖A Z576J", "皖AZ576J"),
        ("皖A-Z576J", "皖AZ576J"),
        ("皖a·z576j", "皖AZ576J"),  # upper-case
        ("浙D·335DZ", "浙D335DZ"),  # D stays D: only O and I are mapped
        ("皖AO5I28", "皖A05128"),  # O→0, I→1 in the serial
        ("京O·12345", "京O12345"),  # ... but not in the first two characters
        ("京I12345", "京I12345"),
        ("皖A：30B03", "皖A30B03"),  # full-width colon
        ("皖A•30B03", "皖A30B03"),
        ("皖Ａ１２３４５", "皖A12345"),  # full-width letters and digits
        ("  粤B·D12345 ", "粤BD12345"),
        ("使014·578", "使014578"),
        ("使O14578", "使014578"),  # embassy: the serial starts after 使
        ("京A·0123警", "京A0123警"),
        ("", ""),
        ("·- ", ""),
        ("第429C52", "第429C52"),  # not a province: kept as read, never corrected
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_is_idempotent() -> None:
    for raw in ("皖A·Z576J", "皖AO5I28", "使O14578", "粤Z·1234港"):
        once = normalize(raw)
        assert normalize(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # ordinary 7-character plates
        ("皖AZ576J", PlateFormat.STANDARD),
        ("京A12345", PlateFormat.STANDARD),
        ("浙D335DZ", PlateFormat.STANDARD),
        ("新ABCDEF", PlateFormat.STANDARD),
        # new energy: small (D/F, letter or digit, four digits), large (five digits, D/F)
        ("粤BD12345", PlateFormat.NEW_ENERGY),
        ("粤BF12345", PlateFormat.NEW_ENERGY),
        ("浙AFB2368", PlateFormat.NEW_ENERGY),
        ("黑AD03210", PlateFormat.NEW_ENERGY),
        ("沪A12345D", PlateFormat.NEW_ENERGY),
        ("沪A12345F", PlateFormat.NEW_ENERGY),
        ("粤BA12345", None),  # small: must start with D or F
        ("浙AF0J368", None),  # small: the last four must be digits
        ("陕AD6725D", None),  # neither small nor large
        ("沪A1234AD", None),  # large: five digits before D/F
        ("沪A12345X", None),
        # special suffixes and the embassy prefix
        ("京A0123警", PlateFormat.POLICE),
        ("川A3456学", PlateFormat.COACH),
        ("鲁B2345挂", PlateFormat.TRAILER),
        ("粤Z1234港", PlateFormat.HK),
        ("粤Z5678澳", PlateFormat.MACAO),
        ("沪A1234领", PlateFormat.CONSULATE),
        ("使014578", PlateFormat.EMBASSY),
        ("京A12345警", None),  # police serials have four characters
        ("沪Z1234港", None),  # Hong Kong plates are 粤Z
        ("粤B1234港", None),
        ("使01457", None),
        ("使01457A", None),
        # not plates
        ("", None),
        ("皖AZ576", None),  # six characters
        ("皖AZ576JK", None),  # eight, not new energy
        ("皖429C52", None),  # second character must be a letter
        ("AP666P", None),  # no province
        ("第A29C52", None),  # not a province
        ("GA13189", None),  # military plates are out of scope
        ("皖A1O234", None),  # un-normalised O in the serial
        ("皖I12345", PlateFormat.STANDARD),  # I as the authority letter is left alone
        ("皖A12I34", None),
    ],
)
def test_classify(text: str, expected: PlateFormat | None) -> None:
    assert classify(text) is expected


def test_every_province_makes_a_standard_plate() -> None:
    assert len(PROVINCES) == 31
    for province in PROVINCES:
        assert classify(f"{province}A12345") is PlateFormat.STANDARD


def test_plate_characters_cover_every_format() -> None:
    for text in ("皖AZ576J", "粤BD12345", "京A0123警", "粤Z1234港", "沪A1234领", "使014578"):
        assert set(text) <= set(PLATE_CHARACTERS)
    assert "·" not in PLATE_CHARACTERS


@pytest.mark.parametrize(
    ("char", "expected"),
    [("·", True), ("-", True), (" ", True), ("：", True), ("A", False), ("皖", False)],
)
def test_is_separator(char: str, expected: bool) -> None:
    assert is_separator(char) is expected


@pytest.mark.parametrize(("text", "start"), [("皖AZ576J", 2), ("使014578", 1), ("", 2), ("皖", 2)])
def test_serial_start(text: str, start: int) -> None:
    assert serial_start(text) == start


def test_serial_lookalikes_are_what_normalize_reads_alike() -> None:
    for letter, digit in SERIAL_LOOKALIKES:
        assert normalize(f"皖{letter}{letter}2345") == f"皖{letter}{digit}2345"
