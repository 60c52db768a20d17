"""``cluster.tracking``: one decision per passage, association, and the documented faults."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from cluster.decide import Action
from cluster.tracking import (
    FinishedTrack,
    FrameOutcome,
    GateTracker,
    Observation,
    TrackDecision,
    TrackingConfig,
    edit_distance,
)
from smartgate.errors import ConfigError

DIM = 64
FPS = 10.0
BOX = (100.0, 80.0, 200.0, 210.0)


@dataclass(frozen=True)
class Person:
    base: np.ndarray
    box: tuple[float, float, float, float]
    identity: str | None
    action: str


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def person(
    rng: np.random.Generator,
    identity: str | None = "p1",
    action: str = "OPEN",
    box: tuple[float, float, float, float] = BOX,
) -> Person:
    return Person(_unit(rng), box, identity, action)


def face(
    p: Person,
    rng: np.random.Generator,
    *,
    usable: bool = True,
    identity: str | bool | None = True,
    action: str | None = None,
    quality: float = 0.8,
    size: float = 100.0,
    det: float = 0.9,
    box: tuple[float, float, float, float] | None = None,
) -> Observation:
    """A jittered, noisy sighting of ``p`` (cosine to its base ~0.9 at DIM 64)."""
    jitter = rng.normal(0.0, 2.0, 4)
    emb = p.base + rng.normal(0.0, 0.06, DIM) if usable else None
    return Observation(
        kind="face",
        box=np.asarray(box or p.box) + jitter,
        det_score=det,
        quality=quality if usable else 0.2,
        size_px=size,
        embedding=emb,
        identity=(p.identity if identity is True else identity or None) if usable else None,
        action=(action or p.action) if usable else "NONE",
        score=0.7 if usable else 0.0,
    )


def plate(
    text: str | None, box: tuple[float, float, float, float] = BOX, **kw: object
) -> Observation:
    return Observation(
        kind="plate",
        box=np.asarray(box),
        det_score=0.9,
        quality=0.8,
        size_px=120.0,
        plate_text=text,
        identity=kw.get("identity", "car-owner-1"),  # type: ignore[arg-type]
        action=kw.get("action", "OPEN"),  # type: ignore[arg-type]
    )


def run(
    tracker: GateTracker, frames: list[list[Observation]], t0: float = 1000.0
) -> Iterator[FrameOutcome]:
    for i, obs in enumerate(frames):
        yield tracker.update(t0 + i / FPS, i, obs)


def decisions(outcomes: list[FrameOutcome]) -> list[tuple[int, str, str | None, bool]]:
    return [(o.seq, d.action.name, d.identity, d.is_update) for o in outcomes for d in o.decisions]


def finished(outcomes: list[FrameOutcome]) -> list[FinishedTrack]:
    return [f for o in outcomes for f in o.finished]


# --- one passage, one decision -----------------------------------------------------------------


@pytest.mark.parametrize("recognisable_from", [0, 3, 12])
def test_passage_of_30_frames_gives_one_decision_and_one_event(recognisable_from: int) -> None:
    rng = np.random.default_rng(recognisable_from)
    p = person(rng)
    frames = [[face(p, rng, usable=i >= recognisable_from)] for i in range(30)]
    tracker = GateTracker(gate="door-1")
    outcomes = list(run(tracker, frames))

    # Decided on the 2nd recognisable frame, never again.
    assert decisions(outcomes) == [(recognisable_from + 1, "OPEN", "p1", False)]
    assert len({o.track_ids[0] for o in outcomes}) == 1
    assert finished(outcomes) == []
    # Not yet quiet for longer than quiet_s, then ended.
    last_t = 1000.0 + 29 / FPS
    assert tracker.expire(last_t + 1.5) == []
    (done,) = tracker.expire(last_t + 1.6)
    assert tracker.open_tracks == []
    assert (done.track_id, done.kind, done.reason) == (outcomes[0].track_ids[0], "face", "quiet")
    assert (done.first_seq, done.last_seq, done.frames) == (0, 29, 30)
    assert (done.start_t, done.end_t) == (1000.0, pytest.approx(last_t))
    assert (done.action, done.identity, done.decisions) == (Action.OPEN, "p1", 1)
    assert done.score == pytest.approx(0.7)
    assert done.votes == {"p1": 30 - recognisable_from}
    assert done.unusable == recognisable_from
    assert recognisable_from <= done.best_index < 30  # unusable frames have quality 0.2
    assert done.best_seq == done.best_index
    assert tracker.expire(last_t + 100) == []


def test_best_shot_is_the_highest_quality_size_score() -> None:
    rng = np.random.default_rng(1)
    p = person(rng)
    shots = [(0.8, 90.0, 0.9), (0.9, 100.0, 0.95), (0.95, 110.0, 0.97), (0.9, 80.0, 0.99)]
    frames = [[face(p, rng, quality=q, size=s, det=d)] for q, s, d in shots]
    tracker = GateTracker()
    list(run(tracker, frames))
    (done,) = tracker.close()
    assert (done.best_index, done.best_seq, done.reason) == (2, 2, "closed")
    assert done.best_observation.quality == 0.95
    assert done.best_observation.size_px == 110.0


# --- decision table: what is sent, and when ----------------------------------------------------

# per frame: (identity override or True for the person's own, action override, usable)
R, W, S, U = (
    (True, "OPEN", True),
    ("w1", "ALERT", True),
    (None, "STRANGER", True),
    (None, None, False),
)
SCENARIOS = [
    ("resident", [R] * 6, [(1, "OPEN", "p1", False)]),
    (
        "resident then watchlist hit",
        [R, R, R, W, R, W],
        [(1, "OPEN", "p1", False), (3, "ALERT", "w1", True)],
    ),
    ("watchlist on the first frame", [W, R, R], [(0, "ALERT", "w1", False)]),
    ("unmatched usable faces", [S] * 6, [(1, "STRANGER", None, False)]),
    ("unusable faces", [U] * 6, []),
    (
        "stranger turns out a resident",
        [S, S, R, R, R],
        [(1, "STRANGER", None, False), (3, "OPEN", "p1", True)],
    ),
    ("resident, then unmatched frames", [R, R, S, S, S], [(1, "OPEN", "p1", False)]),
    ("single recognisable frame", [U, R, U, U, U], []),
    ("two of three with a gap", [R, U, R, U], [(2, "OPEN", "p1", False)]),
    ("alternating never agrees twice in 3", [R, S, U, R, S, U], []),
    (
        "another resident later: not repeated",
        [R, R, ("p2", "OPEN", True), ("p2", "OPEN", True)],
        [(1, "OPEN", "p1", False)],
    ),
]


@pytest.mark.parametrize(
    ("frames", "expected"), [s[1:] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS]
)
def test_decision_table(
    frames: list[tuple[str | bool | None, str | None, bool]],
    expected: list[tuple[int, str, str | None, bool]],
) -> None:
    rng = np.random.default_rng(7)
    p = person(rng)
    obs = [[face(p, rng, identity=ident, action=act, usable=use)] for ident, act, use in frames]
    outcomes = list(run(GateTracker(), obs))
    assert len({o.track_ids[0] for o in outcomes}) == 1  # one person, one track
    assert decisions(outcomes) == expected


def test_votes_needed_and_window_are_configurable() -> None:
    rng = np.random.default_rng(3)
    p = person(rng)
    frames = [[face(p, rng, usable=use)] for use in (True, False, True, False, True)]
    config = TrackingConfig(votes_needed=3, vote_window=5)
    assert decisions(list(run(GateTracker(config), frames))) == [(4, "OPEN", "p1", False)]


def test_decision_fields() -> None:
    rng = np.random.default_rng(4)
    p = person(rng)
    outcomes = list(run(GateTracker(gate="g7"), [[face(p, rng)] for _ in range(2)]))
    (d,) = outcomes[1].decisions
    assert d == TrackDecision(
        track_id=outcomes[0].track_ids[0],  # type: ignore[arg-type]
        action=Action.OPEN,
        identity="p1",
        is_update=False,
        kind="face",
        seq=1,
        t=pytest.approx(1000.1),  # type: ignore[arg-type]
        votes=2,
        score=0.7,
    )
    assert outcomes[1].emits == (d,)


# --- association ------------------------------------------------------------------------------


def test_two_people_side_by_side_are_two_tracks() -> None:
    rng = np.random.default_rng(5)
    a = person(rng, "p1", box=(100, 80, 200, 210))
    b = person(rng, "p2", box=(260, 80, 360, 210))
    frames = [
        [face(a, rng), face(b, rng)] if i % 2 else [face(b, rng), face(a, rng)] for i in range(20)
    ]
    outcomes = list(run(GateTracker(), frames))
    ids_a = {o.track_ids[i % 2] for i, o in enumerate(outcomes)}
    ids_b = {o.track_ids[1 - i % 2] for i, o in enumerate(outcomes)}
    assert len(ids_a) == len(ids_b) == 1
    assert ids_a != ids_b
    assert sorted((d[1], d[2]) for d in decisions(outcomes)) == [("OPEN", "p1"), ("OPEN", "p2")]


def test_overlapping_faces_that_disagree_do_not_join() -> None:
    rng = np.random.default_rng(6)
    a, b = person(rng, "p1"), person(rng, "p2")  # same box, different people
    outcomes = list(run(GateTracker(), [[face(a, rng)], [face(b, rng)], [face(a, rng)]]))
    assert outcomes[0].track_ids == outcomes[2].track_ids != outcomes[1].track_ids


def test_face_stepping_out_of_view_and_back_stays_one_track() -> None:
    rng = np.random.default_rng(8)
    p = person(rng)
    far = (500.0, 300.0, 600.0, 430.0)  # no overlap with BOX: only the embedding links them
    frames = [
        [face(p, rng)],
        [face(p, rng)],
        [],
        [],
        [face(p, rng, box=far)],
        [face(p, rng, box=far)],
    ]
    outcomes = list(run(GateTracker(), frames))
    assert len({tid for o in outcomes for tid in o.track_ids}) == 1
    assert len(decisions(outcomes)) == 1


def test_unusable_face_joins_by_box_overlap_only() -> None:
    rng = np.random.default_rng(9)
    p = person(rng)
    far = (500.0, 300.0, 600.0, 430.0)
    frames = [[face(p, rng)], [face(p, rng, usable=False)], [face(p, rng, usable=False, box=far)]]
    outcomes = list(run(GateTracker(), frames))
    assert outcomes[0].track_ids == outcomes[1].track_ids != outcomes[2].track_ids


@pytest.mark.parametrize(
    ("texts", "tracks"),
    [
        (["京A12345", "京A12345", "京A12345"], 1),
        (["京A12345", "京A1234S", "京A12345"], 1),  # one OCR error: same car
        (["京A12345", "京A 123·45", "京a12345"], 1),  # spaces, dots and case are normalised
        (["京A12345", "京B67890", "京A12345"], 2),  # another car at the same spot
        (["京A12345", "京A12S4S", "京A12345"], 2),  # two errors: not the same text
        (["京A12345", None, "京A12345"], 1),  # unreadable plate: box overlap links it
    ],
)
def test_plates_associate_by_text_distance(texts: list[str | None], tracks: int) -> None:
    outcomes = list(run(GateTracker(), [[plate(t)] for t in texts]))
    assert len({o.track_ids[0] for o in outcomes}) == tracks
    assert outcomes[0].track_ids == outcomes[2].track_ids


def test_plate_track_decides_once() -> None:
    outcomes = list(run(GateTracker(gate="barrier-2"), [[plate("沪C88888")] for _ in range(30)]))
    assert decisions(outcomes) == [(1, "OPEN", "car-owner-1", False)]
    assert outcomes[0].track_ids[0].startswith("barrier-2-000001-")  # type: ignore[union-attr]


def test_faces_and_plates_never_share_a_track() -> None:
    rng = np.random.default_rng(10)
    p = person(rng)
    outcomes = list(run(GateTracker(), [[face(p, rng), plate("京A12345")] for _ in range(3)]))
    face_ids = {o.track_ids[0] for o in outcomes}
    plate_ids = {o.track_ids[1] for o in outcomes}
    assert len(face_ids) == len(plate_ids) == 1
    assert face_ids != plate_ids


# --- faults -----------------------------------------------------------------------------------


def test_duplicated_seq_is_ignored_and_repeats_the_assignment() -> None:
    rng = np.random.default_rng(11)
    p = person(rng)
    tracker = GateTracker()
    first = tracker.update(1.0, 0, [face(p, rng)])
    decided = tracker.update(1.1, 1, [face(p, rng)])
    again = tracker.update(1.1, 1, [face(p, rng)])
    assert decided.decisions and again.status == "duplicate"
    assert again.track_ids == decided.track_ids == first.track_ids
    assert again.emits == (None,) and again.finished == []
    (done,) = tracker.close()
    assert done.frames == 2


def test_late_frame_votes_but_starts_no_track() -> None:
    rng = np.random.default_rng(12)
    p, q = person(rng), person(rng, "p2", box=(300, 80, 400, 210))
    tracker = GateTracker()
    tracker.update(1.0, 10, [face(p, rng)])
    late = tracker.update(1.2, 8, [face(p, rng), face(q, rng)])  # 2 behind: within the window
    assert late.status == "late"
    assert late.track_ids[1] is None  # q would need a new track
    assert [(d.action, d.identity, d.seq) for d in late.decisions] == [(Action.OPEN, "p1", 8)]
    assert tracker.clock == 1.0  # a late frame does not move the clock
    assert len(tracker.open_tracks) == 1
    (done,) = tracker.close()
    assert (done.first_seq, done.last_seq, done.frames) == (8, 10, 2)


def test_stale_frames_are_ignored_until_a_counter_restart_is_evident() -> None:
    rng = np.random.default_rng(13)
    p = person(rng)
    tracker = GateTracker(TrackingConfig(reorder_window=8, restart_after=3))
    ok = tracker.update(1.0, 100, [face(p, rng)])
    assert tracker.update(1.1, 50, [face(p, rng)]).status == "stale"
    assert tracker.update(1.1, 50, [face(p, rng)]).status == "stale"  # not rising: no restart
    statuses = [tracker.update(1.2 + i / 10, i, [face(p, rng)]).status for i in range(3)]
    assert statuses == ["stale", "stale", "restart"]
    after = tracker.update(1.5, 3, [face(p, rng)])
    assert after.status == "ok"
    assert after.track_ids == ok.track_ids  # the track carried on across the device restart


def test_backwards_clock_jump_ends_nothing() -> None:
    rng = np.random.default_rng(14)
    p = person(rng)
    tracker = GateTracker()
    times = [100.0, 100.1, 100.2, 40.0, 40.1, 40.2, 40.3]  # the device clock jumps back 60 s
    outcomes = [tracker.update(t, i, [face(p, rng)]) for i, t in enumerate(times)]
    assert len({o.track_ids[0] for o in outcomes}) == 1
    assert finished(outcomes) == []
    assert decisions(outcomes) == [(1, "OPEN", "p1", False)]
    assert tracker.clock == pytest.approx(100.5)  # moved by the forward steps only
    assert tracker.expire(39.0) == []  # expire on the same (device) clock: still backwards
    (done,) = tracker.expire(40.3 + 1.6)
    assert done.end_t == pytest.approx(100.5)


def test_huge_forward_clock_jump_ends_tracks() -> None:
    rng = np.random.default_rng(15)
    p = person(rng)
    tracker = GateTracker()
    before = [tracker.update(100.0 + i / 10, i, [face(p, rng)]) for i in range(3)]
    after = tracker.update(100.3 + 7200, 3, [face(p, rng)])
    (done,) = after.finished
    assert done.track_id == before[0].track_ids[0] and done.reason == "quiet"
    assert after.track_ids[0] != done.track_id
    nxt = tracker.update(100.4 + 7200, 4, [face(p, rng)])
    assert [d.identity for d in nxt.decisions] == ["p1"]  # the new track decides anew


def test_silent_gate_mid_track_is_ended_by_expire() -> None:
    rng = np.random.default_rng(16)
    p = person(rng)
    tracker = GateTracker()
    list(run(tracker, [[face(p, rng)] for _ in range(5)], t0=0.0))
    assert tracker.expire(0.4 + 1.0) == []
    (done,) = tracker.expire(0.4 + 2.0)
    assert (done.frames, done.action, done.reason) == (5, Action.OPEN, "quiet")


def test_old_tracks_end_at_max_age_and_restart() -> None:
    rng = np.random.default_rng(17)
    p = person(rng)
    tracker = GateTracker(TrackingConfig(max_track_age_s=3.0))
    outcomes = list(run(tracker, [[face(p, rng)] for _ in range(50)]))  # 5 s at 10 fps
    (done,) = finished(outcomes)
    assert done.reason == "max_age" and done.frames == 31
    assert decisions(outcomes) == [(1, "OPEN", "p1", False), (32, "OPEN", "p1", False)]


def test_too_many_tracks_evicts_the_longest_quiet() -> None:
    rng = np.random.default_rng(18)
    tracker = GateTracker(TrackingConfig(max_tracks=2))
    people = [person(rng, f"p{i}", box=(300.0 * i, 0, 300.0 * i + 100, 130)) for i in range(3)]
    first = tracker.update(1.0, 0, [face(people[0], rng)])
    tracker.update(1.1, 1, [face(people[1], rng)])
    third = tracker.update(1.2, 2, [face(people[2], rng)])
    (evicted,) = third.finished
    assert (evicted.track_id, evicted.reason) == (first.track_ids[0], "evicted")
    assert len(tracker.open_tracks) == 2
    # All open tracks seen in one frame: the extra face gets no track, nothing is evicted.
    crowded = tracker.update(1.3, 3, [face(people[i], rng) for i in (1, 2, 0)])
    assert crowded.track_ids[:2] == (tracker.open_tracks[0], tracker.open_tracks[1])
    assert crowded.track_ids[2] is None and crowded.finished == []


def test_track_ids_are_stable_on_replay_and_differ_by_start() -> None:
    rng = np.random.default_rng(19)
    p = person(rng)
    frames = [[face(p, rng)] for _ in range(5)]
    a = [o.track_ids for o in run(GateTracker(gate="d1"), frames)]
    b = [o.track_ids for o in run(GateTracker(gate="d1"), frames)]
    c = [o.track_ids for o in run(GateTracker(gate="d1"), frames, t0=2000.0)]
    assert a == b
    assert a[0][0] != c[0][0]  # same counter, other start time
    assert a[0][0].startswith("d1-000001-") and c[0][0].startswith("d1-000001-")  # type: ignore[union-attr]


def test_frame_without_observations() -> None:
    outcome = GateTracker().update(1.0, 0, [])
    assert (outcome.status, outcome.track_ids, outcome.emits, outcome.finished) == (
        "ok",
        (),
        (),
        [],
    )


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vote_window": 1}, "vote_window must be >= votes_needed"),
        ({"votes_needed": 0}, "votes_needed must be >= 1"),
        ({"iou_min": 1.5}, r"iou_min must be in \[0, 1\]"),
        ({"quiet_s": 0}, "quiet_s must be > 0"),
        ({"max_track_age_s": 1.0}, "max_track_age_s must be > quiet_s"),
        ({"max_tracks": 0}, "max_tracks must be >= 1"),
        ({"dedup_frames": 4}, "dedup_frames must be > reorder_window"),
    ],
)
def test_config_is_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrackingConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "car"}, "kind must be 'face' or 'plate'"),
        ({"box": [1, 2, 3]}, r"box: expected shape \(4,\), got \(3,\)"),
        ({"box": [0, 0, np.nan, 1]}, "box must be finite"),
        ({"action": "LET_IN"}, "action must be one of"),
        ({"embedding": np.zeros(DIM)}, "embedding must be a non-empty, finite, non-zero vector"),
    ],
)
def test_observation_is_validated(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "kind": "face",
        "box": BOX,
        "det_score": 0.9,
        "quality": 0.8,
        "size_px": 100,
    }
    with pytest.raises(ValueError, match=message):
        Observation(**(base | kwargs))  # type: ignore[arg-type]


def test_observation_normalises() -> None:
    ob = Observation("face", [0, 0, 10, 10], 0.9, 0.8, 10, embedding=[3.0, 4.0], action=Action.OPEN)
    np.testing.assert_allclose(ob.embedding, [0.6, 0.8])  # type: ignore[arg-type]
    assert ob.embedding.dtype == np.float32  # type: ignore[union-attr]
    assert Observation("plate", BOX, 1, 1, 1, plate_text=" ·- ").plate_text is None
    assert Observation("face", BOX, 1, 1, 1, action="ALERT").action is Action.ALERT


def test_embedding_width_must_not_change() -> None:
    tracker = GateTracker()
    tracker.update(1.0, 0, [Observation("face", BOX, 1, 1, 1, embedding=np.ones(4))])
    with pytest.raises(ValueError, match=r"embedding: expected shape \(4,\) as before, got \(8,\)"):
        tracker.update(1.1, 1, [Observation("face", BOX, 1, 1, 1, embedding=np.ones(8))])


@pytest.mark.parametrize("t", [float("nan"), float("inf")])
def test_non_finite_time_is_refused(t: float) -> None:
    with pytest.raises(ValueError, match="t must be finite"):
        GateTracker().update(t, 0, [])
    with pytest.raises(ValueError, match="t must be finite"):
        GateTracker().expire(t)


@pytest.mark.parametrize(
    ("a", "b", "cap", "distance"),
    [
        ("", "", None, 0),
        ("京A12345", "京A12345", None, 0),
        ("京A12345", "京A1234S", None, 1),
        ("京A12345", "京A1235", None, 1),
        ("ABC", "", None, 3),
        ("京A12345", "沪B67890", 1, 2),  # capped: anything above the cap reads cap + 1
        ("A", "ABCDE", 1, 2),
    ],
)
def test_edit_distance(a: str, b: str, cap: int | None, distance: int) -> None:
    assert edit_distance(a, b, cap) == distance
    assert edit_distance(b, a, cap) == distance
