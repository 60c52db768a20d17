"""What a frontend forgets on an index change (``cluster.events.index_changes``): the handler
maps a removal's pseudonym to the identities the passages hold (pure logic, a recording stand-in
for ``Passages``), ``GateTracker.forget`` drops exactly the open tracks of that identity, and a
store opened without a publisher no longer holds back its unsent changes (real SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from cluster.decide import Action
from cluster.events.index_changes import changes_stream, forget_removed, unpublished
from cluster.passages import Passages
from cluster.tracking import GateTracker, Observation, TrackingConfig
from indexer.changelog import PUBLISHER, Change, Retention, pseudonym
from indexer.crypto import KeyRing, new_key
from indexer.store import Store
from smartgate.config import load_config
from smartgate.errors import ConfigError

KEYS = KeyRing([new_key()])
DIM = 16


class Recorder:
    """Stands in for ``Passages``: records each ``forget`` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Callable[[str], bool]]] = []

    def forget(self, community: str, kind: str, is_identity: Callable[[str], bool]) -> int:
        self.calls.append((community, kind, is_identity))
        return 0


def change(kind: str, what: str, subject: str, community: str = "c1") -> Change:
    ref = pseudonym(KEYS, community, what, subject)  # type: ignore[arg-type]
    return Change(9, community, kind, ref, 1.0)  # type: ignore[arg-type]


def test_a_removal_makes_the_passages_forget_that_identity_only() -> None:
    passages = Recorder()
    handle = forget_removed(cast(Passages, passages), KEYS)
    handle(change("person_enrolled", "person", "p1"))
    handle(change("person_replaced", "person", "p1"))
    handle(change("vehicle_added", "vehicle", "A12345"))
    assert passages.calls == []  # matching asks the index actor: nothing to forget
    handle(change("person_removed", "person", "p1"))
    handle(change("vehicle_removed", "vehicle", "A12345", community="c2"))
    (c1, face, is_p1), (c2, plate, is_plate) = passages.calls
    assert (c1, face, c2, plate) == ("c1", "face", "c2", "plate")
    assert is_p1("p1") and not is_p1("p2") and not is_p1("A12345")
    assert is_plate("A12345") and not is_plate("A12346") and not is_plate("p1")


def test_the_stream_names_the_community_then_the_topic() -> None:
    assert changes_stream("小区 1") == "smartgate:小区 1:index-changes"
    assert changes_stream("a:index-changes") != changes_stream("a")


def _face(
    rng: np.random.Generator, base: np.ndarray, box: tuple[float, ...], who: str
) -> Observation:
    emb = base + rng.normal(0.0, 0.02, DIM)
    return Observation(
        kind="face",
        box=np.asarray(box, np.float64),
        det_score=0.9,
        quality=0.8,
        size_px=100.0,
        embedding=emb / np.linalg.norm(emb),
        identity=who,
        action=Action.OPEN,
        score=0.7,
    )


def test_the_tracker_drops_the_open_tracks_of_a_forgotten_identity() -> None:
    rng = np.random.default_rng(3)
    bases = [rng.standard_normal(DIM) for _ in range(2)]
    bases = [b / np.linalg.norm(b) for b in bases]
    boxes = [(100.0, 80.0, 200.0, 210.0), (600.0, 80.0, 700.0, 210.0)]
    tracker = GateTracker(TrackingConfig(quiet_s=5.0), gate="door")
    decided: dict[str, str] = {}
    for seq in range(3):
        frame = [_face(rng, bases[i], boxes[i], who) for i, who in enumerate(("p1", "p2"))]
        outcome = tracker.update(seq * 0.1, seq, frame)
        for track_id, emit in zip(outcome.track_ids, outcome.emits, strict=True):
            if emit is not None:
                assert emit.action == Action.OPEN and track_id is not None
                decided[str(emit.identity)] = track_id
    assert set(decided) == {"p1", "p2"} and len(tracker.open_tracks) == 2
    assert tracker.forget("plate", lambda who: who == "p1") == []  # other kind: untouched
    assert tracker.forget("face", lambda who: who == "p1") == [decided["p1"]]
    assert tracker.open_tracks == [decided["p2"]]
    # The person seen again (now unknown to the index) starts a new, undecided passage; the
    # dropped one is never finished, so never recorded.
    again = _face(rng, bases[0], boxes[0], "p1")
    outcome = tracker.update(0.3, 3, [again])
    assert outcome.track_ids[0] not in (decided["p1"], decided["p2"])
    assert outcome.emits == (None,)
    finished = tracker.close()
    assert {f.track_id for f in finished} == {decided["p2"], outcome.track_ids[0]}


def test_a_store_without_a_publisher_stops_holding_back_unsent_changes(tmp_path: Path) -> None:
    store = Store(tmp_path, KEYS, retention=Retention(keep_s=1e9, keep_rows=2))
    try:
        store.create_community("c1", 1.0)
        for i in range(6):
            store.add_vehicle(
                "c1",
                f"A{i:05d}",
                role="resident",
                owner="",
                expires_at=None,
                replace=False,
                now=1.0,
            )
        store.set_changes_cursor(PUBLISHER, 2)  # a publisher sent two, then Redis went away
        assert store.trim_changes(now=2.0) == 2  # only what was sent may go
        unpublished(store)  # opened again without Redis
        assert store.changes_cursor(PUBLISHER) is None
        assert store.trim_changes(now=2.0) == 2 and len(store.community_changes("c1")) == 2
    finally:
        store.close()


def test_the_settings_are_typed_and_checked() -> None:
    cfg = load_config(
        environ={
            "SMARTGATE_EVENTS__INDEX_CHANGES": "false",
            "SMARTGATE_EVENTS__INDEX_CHANGES_MAXLEN": "500",
            "SMARTGATE_INDEX__CHANGES_KEEP_DAYS": "7",
            "SMARTGATE_INDEX__CHANGES_KEEP_ROWS": "100",
        }
    )
    assert cfg.events.index_changes is False and cfg.events.index_changes_maxlen == 500
    assert Retention.from_config(cfg.index) == Retention(keep_s=7 * 86_400.0, keep_rows=100)
    with pytest.raises(ConfigError, match="index_changes_maxlen"):
        load_config(environ={"SMARTGATE_EVENTS__INDEX_CHANGES_MAXLEN": "0"})
    with pytest.raises(ConfigError, match="changes_keep"):
        load_config(environ={"SMARTGATE_INDEX__CHANGES_KEEP_DAYS": "0"})
