"""``cluster.distributed.strangers``: the save schedule, the id watermark, a community's
strangers inside its index actor (``CommunityStrangers``, run here in process on real files)
across crashes and retried assignments, and ``StrangerIndex.sighting_at`` / ``reserve_from``.
The cluster end to end (two frontends, a killed actor) is
``tests/integration/test_cluster_strangers.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cluster.audit.commands import rotate_keys
from cluster.distributed.index import CommunityIndex, community_dir
from cluster.distributed.strangers import (
    ID_BLOCK,
    IDS_FILE,
    STRANGERS_DIR,
    CommunityStrangers,
    SaveSchedule,
    StrangerSaving,
    needs_reservation,
    read_watermark,
    write_watermark,
)
from indexer.crypto import KeyRing, new_key
from indexer.strangers import MANIFEST, StrangerIndex
from smartgate.config import ClusterConfig, PrivacyConfig
from smartgate.errors import ConfigError

DIM = 32


def faces(n: int, seed: int = 0) -> np.ndarray:
    """``(n, DIM)`` unit float32 rows, nearly orthogonal to one another."""
    rows = np.random.default_rng(seed).standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def open_book(
    path: Path,
    keys: KeyRing,
    every: int = 1000,
    interval_s: float = 3600.0,
    clock: Clock | None = None,
) -> CommunityStrangers:
    return CommunityStrangers(
        path, "c1", DIM, keys, StrangerSaving(every, interval_s), clock=clock or Clock()
    )


# -- the pure parts --------------------------------------------------------------------------


def test_save_schedule_by_count_and_by_time() -> None:
    s = SaveSchedule(StrangerSaving(every=3, interval_s=10.0))
    assert not s.due(0.0)
    assert not s.changed(0.0) and not s.changed(1.0)
    assert s.changed(2.0)  # the third change
    s.saved(3)
    assert s.pending == 0 and s.first_unsaved is None and not s.due(100.0)
    assert not s.changed(50.0)
    assert not s.due(59.9) and s.due(60.0)  # 10 s after the first unsaved change


def test_a_change_made_during_a_save_stays_pending() -> None:
    s = SaveSchedule(StrangerSaving(every=100, interval_s=5.0))
    s.changed(0.0)
    s.changed(1.0)
    started_with = s.pending
    s.changed(2.0)  # while the save of the first two runs
    s.saved(started_with)
    assert s.pending == 1 and s.first_unsaved == 0.0 and s.due(5.0)


@pytest.mark.parametrize(
    ("next_number", "reserved", "expected"),
    [(1, 1, 1 + ID_BLOCK), (5, 10, None), (9, 10, None), (10, 10, 10 + ID_BLOCK)],
)
def test_needs_reservation(next_number: int, reserved: int, expected: int | None) -> None:
    assert needs_reservation(next_number, reserved) == expected


def test_watermark_round_trip_and_bad_files(tmp_path: Path) -> None:
    assert read_watermark(tmp_path) == 1
    write_watermark(tmp_path, 129)
    assert read_watermark(tmp_path) == 129
    assert [p.name for p in tmp_path.iterdir()] == [IDS_FILE]  # no temporary file left
    for bad in ('{"reserved": 0}', '{"reserved": true}', "{}", "not json"):
        (tmp_path / IDS_FILE).write_text(bad)
        with pytest.raises(ConfigError, match="watermark"):
            read_watermark(tmp_path)


def test_config_bounds() -> None:
    saving = StrangerSaving.from_config(ClusterConfig(strangers_save_every=7, strangers_save_s=2))
    assert saving == StrangerSaving(7, 2.0)
    with pytest.raises(ConfigError, match="strangers_save_every"):
        ClusterConfig(strangers_save_every=0)
    with pytest.raises(ConfigError, match="strangers_save_s"):
        ClusterConfig(strangers_save_s=0)


# -- StrangerIndex additions -----------------------------------------------------------------


def test_sighting_at_finds_only_a_counted_face_at_that_time() -> None:
    index = StrangerIndex(DIM, threshold=0.5)
    a, b = faces(2)
    assert index.sighting_at("c1", a, 10.0) is None  # no strangers yet
    assert index.assign("c1", a, 10.0) == ("s-1", True, -1.0)
    assert index.sighting_at("c1", a, 10.0) == ("s-1", True, pytest.approx(1.0))
    assert index.sighting_at("c1", a, 10.5) is None  # another time: not this assignment
    assert index.sighting_at("c1", b, 10.0) is None  # another face
    index.assign("c1", a, 20.0)
    assert index.sighting_at("c1", a, 20.0) == ("s-1", False, pytest.approx(1.0))


def test_reserve_from_skips_numbers_and_survives_a_save(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    index = StrangerIndex(DIM, keys=keys)
    assert index.next_number("c1") == 1
    index.reserve_from("c1", 40)
    index.reserve_from("c1", 3)  # never backwards
    assert index.next_number("c1") == 40
    assert index.assign("c1", faces(1)[0], 1.0)[0] == "s-40"
    index.save(tmp_path)
    assert StrangerIndex.load(tmp_path, DIM, keys=keys).next_number("c1") == 41


# -- CommunityStrangers: the actor's book ----------------------------------------------------


def test_a_crash_loses_unsaved_sightings_but_never_reissues_an_id(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    a, b, c = faces(3)
    book = open_book(tmp_path, keys, every=2)
    assert book.assign(a, 1.0)[0] == "s-1"
    assert not (tmp_path / STRANGERS_DIR / MANIFEST).exists()  # batched: 1 of 2
    assert book.assign(b, 2.0)[0] == "s-2"  # the second change: saved
    assert (tmp_path / STRANGERS_DIR / MANIFEST).exists()
    assert book.assign(c, 3.0)[0] == "s-3"  # unsaved when the actor dies
    book._stop.set()  # a SIGKILL: no close, no save

    again = open_book(tmp_path, keys)
    assert [s.stranger_id for s in again.index.strangers("c1")] == ["s-1", "s-2"]
    sid, is_new, _ = again.assign(c, 4.0)
    assert is_new and sid == f"s-{1 + ID_BLOCK}"  # s-3 is in an event already: not reused
    assert again.assign(a, 5.0)[:2] == ("s-1", False)
    again.close()


def test_a_clean_close_leaves_no_gap_in_the_numbers(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    a, b = faces(2)
    book = open_book(tmp_path, keys)
    book.assign(a, 1.0)
    book.close()
    assert read_watermark(tmp_path / STRANGERS_DIR) == 2
    again = open_book(tmp_path, keys)
    assert again.assign(b, 2.0)[:2] == ("s-2", True)
    assert again.index.get("c1", "s-1").sightings == 1
    again.close()


def test_the_timer_saves_interval_after_the_first_unsaved_assignment(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    clock = Clock()
    book = open_book(tmp_path, keys, interval_s=2.0, clock=clock)
    book.assign(faces(1)[0], 1.0)
    manifest = tmp_path / STRANGERS_DIR / MANIFEST
    assert not manifest.exists()
    clock.t += 2.0  # the timer thread checks every interval / 4 (0.5 s)
    for _ in range(40):
        if manifest.exists() and book.schedule.pending == 0:
            break
        book._stop.wait(0.05)
    assert manifest.exists() and book.schedule.pending == 0
    book._stop.set()
    assert [s.stranger_id for s in open_book(tmp_path, keys).index.strangers("c1")] == ["s-1"]


def test_a_retried_assignment_is_counted_once(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    a, b = faces(2)
    book = open_book(tmp_path, keys, every=1)  # every assignment saved: the lost one too
    first = book.assign(a, 7.0)
    book._stop.set()  # lost before its answer reached the frontend
    again = open_book(tmp_path, keys)
    assert again.assign(a, 7.0, retry=True)[:2] == first[:2]  # answered from the state
    assert again.index.get("c1", "s-1").sightings == 1
    # A retry the lost attempt never saved is assigned as usual.
    assert again.assign(b, 8.0, retry=True)[:2] == (f"s-{1 + ID_BLOCK}", True)
    assert again.assign(a, 9.0, retry=True)[:2] == ("s-1", False)  # a later sighting: counted
    assert again.index.get("c1", "s-1").sightings == 2
    again.close()


def test_a_removal_is_saved_at_once(tmp_path: Path) -> None:
    keys = KeyRing([new_key()])
    a, b = faces(2)
    book = open_book(tmp_path, keys)
    book.assign(a, 1.0)
    book.assign(b, 2.0)
    assert book.remove(["s-1", "s-9"]) == 1
    book._stop.set()  # crash straight after: the erasure holds
    again = open_book(tmp_path, keys)
    assert [s.stranger_id for s in again.index.strangers("c1")] == ["s-2"]
    assert again.remove(["s-1"]) == 0  # idempotent
    again.close()


def test_the_index_actor_keeps_its_strangers_next_to_its_store_and_rotation_reseals_them(
    tmp_path: Path,
) -> None:
    data, key_file = tmp_path / "data", tmp_path / "keys" / "data.key"
    privacy = PrivacyConfig(key_file=key_file)
    actor = CommunityIndex(data, "north", DIM, privacy, create=True)
    sid, is_new, _ = actor.assign_stranger(faces(1)[0], 1.0)
    assert (sid, is_new) == ("s-1", True)
    assert actor.matching_strangers(faces(1), 0.9) == ["s-1"]
    assert actor.stranger_sightings_since("s-1", 0.0) == 1
    actor.close()
    saved = community_dir(data, "north") / STRANGERS_DIR
    assert (saved / MANIFEST).exists()
    assert not (data / STRANGERS_DIR).exists()  # nothing in the embedded node's place

    old = KeyRing.from_file(key_file)
    report = rotate_keys(data, privacy)
    assert report.strangers == 1 and report.retired == (old.current_id.hex(),)
    new = KeyRing.from_file(key_file)
    assert new.current_id != old.current_id and len(new.keys) == 1
    loaded = StrangerIndex.load(saved, DIM, keys=new)  # opens with the new key alone
    assert [s.stranger_id for s in loaded.strangers("north")] == ["s-1"]
