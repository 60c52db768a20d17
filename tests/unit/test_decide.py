"""The gate policy, as a table."""

from __future__ import annotations

import pytest

from cluster.decide import Action, Verdict, decide

RESIDENT = Verdict(True, True, "resident", True, "r1")
VISITOR = Verdict(True, True, "visitor", True, "v1")
EXPIRED = Verdict(True, True, "visitor", False, "v2")
WATCH = Verdict(True, True, "watchlist", True, "w1")
UNKNOWN = Verdict(True, False, None, False)
POOR = Verdict(False, False, None, False)
PLATE_RESIDENT = Verdict(True, True, "resident", True, "皖A0N718", kind="plate")
PLATE_WATCH_FUZZY = Verdict(True, True, "watchlist", True, "皖A5P237", kind="plate", fuzzy=True)
PLATE_UNKNOWN = Verdict(True, False, None, False, "沪AMS087", kind="plate")
PLATE_UNREADABLE = Verdict(False, False, None, False, "XX", kind="plate")


@pytest.mark.parametrize(
    ("faces", "action", "reason"),
    [
        ([], Action.NONE, "no face or plate"),
        ([POOR], Action.NONE, "nothing of usable quality"),
        ([UNKNOWN], Action.STRANGER, "matched nobody"),
        ([RESIDENT], Action.OPEN, "resident r1"),
        ([VISITOR], Action.OPEN, "visitor v1"),
        ([EXPIRED], Action.STRANGER, "expired"),
        ([WATCH], Action.ALERT, "w1"),
        ([RESIDENT, WATCH], Action.ALERT, "w1"),
        ([UNKNOWN, RESIDENT], Action.OPEN, "r1"),
        ([POOR, UNKNOWN], Action.STRANGER, "matched nobody"),
        ([PLATE_RESIDENT], Action.OPEN, "resident plate 皖A0N718"),
        ([PLATE_WATCH_FUZZY, PLATE_RESIDENT], Action.ALERT, "皖A5P237 (fuzzy)"),
        ([PLATE_UNKNOWN], Action.STRANGER, "unknown vehicle 沪AMS087"),
        ([PLATE_UNREADABLE], Action.NONE, "nothing of usable quality"),
        ([PLATE_UNREADABLE, UNKNOWN], Action.STRANGER, "usable face"),
    ],
)
def test_decide(faces: list[Verdict], action: Action, reason: str) -> None:
    got, why = decide(faces)
    assert got == action
    assert reason in why
