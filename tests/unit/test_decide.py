"""The gate policy, as a table."""

from __future__ import annotations

import pytest

from cluster.decide import Action, FaceVerdict, decide

RESIDENT = FaceVerdict(True, True, "resident", True, "r1")
VISITOR = FaceVerdict(True, True, "visitor", True, "v1")
EXPIRED = FaceVerdict(True, True, "visitor", False, "v2")
WATCH = FaceVerdict(True, True, "watchlist", True, "w1")
UNKNOWN = FaceVerdict(True, False, None, False)
POOR = FaceVerdict(False, False, None, False)


@pytest.mark.parametrize(
    ("faces", "action", "reason"),
    [
        ([], Action.NONE, "no face"),
        ([POOR], Action.NONE, "no face of usable quality"),
        ([UNKNOWN], Action.STRANGER, "matched nobody"),
        ([RESIDENT], Action.OPEN, "resident r1"),
        ([VISITOR], Action.OPEN, "visitor v1"),
        ([EXPIRED], Action.STRANGER, "expired"),
        ([WATCH], Action.ALERT, "w1"),
        ([RESIDENT, WATCH], Action.ALERT, "w1"),
        ([UNKNOWN, RESIDENT], Action.OPEN, "r1"),
        ([POOR, UNKNOWN], Action.STRANGER, "matched nobody"),
    ],
)
def test_decide(faces: list[FaceVerdict], action: Action, reason: str) -> None:
    got, why = decide(faces)
    assert got == action
    assert reason in why
