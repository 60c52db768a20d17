"""What a gate should do about one frame: pure policy over matched faces and plates.

Priority: a watchlist match anywhere in the frame (face or plate, exact or fuzzy) → ALERT;
else an accepted resident or valid visitor → OPEN; else a usable face or plate reading that
matched nobody (or an expired visitor) → STRANGER; else NONE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Action(enum.IntEnum):
    # Values match smartgate.v1.Action.
    NONE = 1
    OPEN = 2
    ALERT = 3
    STRANGER = 4


@dataclass(frozen=True)
class Verdict:
    """What is known about one face or plate when deciding."""

    usable: bool  # good enough to recognise (face quality, or a plate reading that fits a format)
    accepted: bool  # matched a registered person or vehicle
    role: str | None  # "resident" | "visitor" | "watchlist" of the match
    valid: bool  # the match's pass is valid now (visitors expire)
    identity: str | None = None  # person id or plate
    kind: str = "face"  # "face" | "plate"
    fuzzy: bool = False  # a plate matched only approximately

    def describe(self) -> str:
        what = (
            f"{self.role} {self.identity}"
            if self.kind == "face"
            else (f"{self.role} plate {self.identity}")
        )
        return what + (" (fuzzy)" if self.fuzzy else "")


def decide(items: list[Verdict]) -> tuple[Action, str]:
    """The action for a frame and a one-line reason."""
    matched = [v for v in items if v.accepted and v.role is not None]
    watch = [v for v in matched if v.role == "watchlist"]
    if watch:
        return Action.ALERT, f"watchlist match: {watch[0].describe()}"
    allowed = [v for v in matched if v.role in ("resident", "visitor") and v.valid]
    if allowed:
        return Action.OPEN, allowed[0].describe()
    expired = [v for v in matched if v.role == "visitor" and not v.valid]
    if expired:
        return Action.STRANGER, f"visitor pass of {expired[0].identity} has expired"
    usable = [v for v in items if v.usable]
    if any(v.kind == "face" for v in usable):
        return Action.STRANGER, "usable face matched nobody"
    if usable:
        return Action.STRANGER, f"unknown vehicle {usable[0].identity}"
    if items:
        return Action.NONE, "nothing of usable quality"
    return Action.NONE, "no face or plate"
