"""What a gate should do about one frame: pure policy over matched faces.

Priority: a watchlist match anywhere in the frame → ALERT; else an accepted resident or valid
visitor → OPEN; else a usable face that matched nobody (or an expired visitor) → STRANGER;
else NONE.
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
class FaceVerdict:
    """What is known about one face when deciding."""

    usable: bool
    accepted: bool  # matched a person above threshold and margin
    role: str | None  # "resident" | "visitor" | "watchlist" of the matched person
    valid: bool  # the matched person's pass is valid now (visitors expire)
    person_id: str | None = None


def decide(faces: list[FaceVerdict]) -> tuple[Action, str]:
    """The action for a frame and a one-line reason."""
    matched = [f for f in faces if f.accepted and f.role is not None]
    watch = [f for f in matched if f.role == "watchlist"]
    if watch:
        return Action.ALERT, f"watchlist match: {watch[0].person_id}"
    allowed = [f for f in matched if f.role in ("resident", "visitor") and f.valid]
    if allowed:
        f = allowed[0]
        return Action.OPEN, f"{f.role} {f.person_id}"
    expired = [f for f in matched if f.role == "visitor" and not f.valid]
    if expired:
        return Action.STRANGER, f"visitor pass of {expired[0].person_id} has expired"
    if any(f.usable for f in faces):
        return Action.STRANGER, "usable face matched nobody"
    if faces:
        return Action.NONE, "no face of usable quality"
    return Action.NONE, "no face"
