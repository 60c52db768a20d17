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

    @property
    def action(self) -> Action:
        """What this face or plate alone calls for."""
        if self.accepted and self.role == "watchlist":
            return Action.ALERT
        if self.accepted and self.role in ("resident", "visitor") and self.valid:
            return Action.OPEN
        return Action.STRANGER if self.usable or self.accepted else Action.NONE

    def describe(self) -> str:
        what = (
            f"{self.role} {self.identity}"
            if self.kind == "face"
            else (f"{self.role} plate {self.identity}")
        )
        return what + (" (fuzzy)" if self.fuzzy else "")


def decide(items: list[Verdict]) -> tuple[Action, str]:
    """The action for a frame (the most urgent of its items) and a one-line reason."""
    for wanted in (Action.ALERT, Action.OPEN):
        hit = next((v for v in items if v.action == wanted), None)
        if hit is not None:
            prefix = "watchlist match: " if wanted == Action.ALERT else ""
            return wanted, prefix + hit.describe()
    strangers = [v for v in items if v.action == Action.STRANGER]
    expired = next((v for v in strangers if v.accepted), None)
    if expired is not None:
        return Action.STRANGER, f"visitor pass of {expired.identity} has expired"
    if any(v.kind == "face" for v in strangers):
        return Action.STRANGER, "usable face matched nobody"
    if strangers:
        return Action.STRANGER, f"unknown vehicle {strangers[0].identity}"
    if items:
        return Action.NONE, "nothing of usable quality"
    return Action.NONE, "no face or plate"
