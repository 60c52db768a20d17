"""The event store on real SQLite: schema, idempotent writes, thumbnails, every query filter,
keyset paging (ties included), query plans, alerts, retention, erasure, the outbox rows."""

from __future__ import annotations

import itertools
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cluster.events.model import Alert, Event, alert_id, make_event
from cluster.events.retention import RetentionPurger
from cluster.events.store import (
    DB_FILENAME,
    MAX_QUERY_LIMIT,
    SCHEMA_VERSION,
    EventStore,
    community_dirname,
)
from smartgate.config import DAY_S, RetentionPolicy
from smartgate.errors import InvalidInputError, NotFoundError

JPEG = b"\xff\xd8\xff\xe0" + b"thumbnail" * 10
_tracks = itertools.count()


def ev(
    end: float,
    *,
    community: str = "c1",
    gate: str = "g1",
    kind: str = "face",
    action: str = "OPEN",
    person: str | None = None,
    stranger: str | None = None,
    plate: str | None = None,
    track: str | None = None,
    duration: float = 2.0,
) -> Event:
    return make_event(
        community=community,
        gate=gate,
        device="cam-1",
        kind=kind,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
        track_id=track if track is not None else f"t{next(_tracks)}",
        start=end - duration,
        end=end,
        score=0.9,
        quality=0.7,
        liveness=0.95 if kind == "face" else None,
        person_id=person,
        stranger_id=stranger,
        plate=plate,
        role="resident" if person else None,
    )


def alert(
    kind: str = "tailgating",
    *,
    key: str = "k",
    community: str = "c1",
    time: float = 1000.0,
    person: str | None = None,
    stranger: str | None = None,
    plate: str | None = None,
) -> Alert:
    return Alert(
        id=alert_id(kind, community, key),  # type: ignore[arg-type]
        seq=0,
        community=community,
        gate="g1",
        kind=kind,  # type: ignore[arg-type]
        event_id=None,
        person_id=person,
        stranger_id=stranger,
        plate=plate,
        time=time,
        message=f"{kind} {key}",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path / "data")
    yield s
    s.close()


def _all_pages(store: EventStore, community: str, limit: int, **filters: Any) -> list[Event]:
    out: list[Event] = []
    cursor = None
    for _ in range(10_000):
        page, cursor = store.query(community, limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        if cursor is not None:
            assert len(page) == limit  # never a short page before the last
        out.extend(page)
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


def _newest_first(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: (e.end, e.id), reverse=True)


# -- schema and writes ---------------------------------------------------------------------


def test_pragmas_schema_and_reopen(tmp_path: Path) -> None:
    s = EventStore(tmp_path)
    assert s.path.name == DB_FILENAME
    with s._reading() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    with s._lock:
        assert s._con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert {"events", "alerts", "outbox", "redis_deletes", "schema_version"} <= tables
    e = ev(1000.0, person="p1")
    assert s.put(e)
    s.close()
    again = EventStore(tmp_path)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert again.get(e.id) == e
    finally:
        again.close()


def test_put_is_idempotent_first_write_wins(store: EventStore) -> None:
    e = ev(1000.0, person="p1")
    assert store.put(e) is True
    assert store.put(e) is False
    assert store.put(replace(e, person_id="p2", action="NONE")) is False
    assert store.get(e.id) == e
    other = ev(1001.0)
    assert store.put_many([(other, None), (other, None), (e, None)]) == [True, False, False]
    assert store.count_events() == 2
    # Twice in one batch, the second with a thumbnail: the first wins, no stray file.
    third = ev(1002.0)
    assert store.put_many([(third, None), (third, JPEG)]) == [True, False]
    assert not store.thumbnail_path("c1", third.id).exists()


def test_get_unknown(store: EventStore) -> None:
    with pytest.raises(NotFoundError):
        store.get("nope")


def test_thumbnail_stored_beside_the_row(store: EventStore) -> None:
    e = ev(1000.0, person="p1")
    assert store.put(e, JPEG)
    assert store.get(e.id).has_thumbnail is True
    path = store.thumbnail_path("c1", e.id)
    assert path == store.thumbs_dir / "c1" / f"{e.id}.sealed"
    assert JPEG not in path.read_bytes()  # sealed at rest (tests/unit/test_crypto.py)
    assert store.thumbnail("c1", e.id) == JPEG
    # A duplicate put does not replace the stored file.
    assert store.put(e, JPEG + b"other") is False
    assert store.thumbnail("c1", e.id) == JPEG
    assert list((store.thumbs_dir / ".tmp").iterdir()) == []
    plain = ev(1001.0)
    store.put(plain)
    with pytest.raises(NotFoundError, match="no thumbnail"):
        store.thumbnail("c1", plain.id)
    with pytest.raises(NotFoundError, match="does not exist"):
        store.thumbnail("c2", e.id)
    with pytest.raises(InvalidInputError):
        store.thumbnail("c1", "../../etc/passwd")


def test_thumbnail_written_before_the_row_and_removed_when_the_row_fails(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    e = ev(1000.0)
    real = store._insert_event
    seen: list[bool] = []

    def spy(con: sqlite3.Connection, event: Event, has_thumbnail: bool) -> bool:
        path = store.thumbnail_path(event.community, event.id)
        seen.append(store.keys.open(path.read_bytes(), f"thumbnail|c1|{event.id}".encode()) == JPEG)
        return real(con, event, has_thumbnail)

    monkeypatch.setattr(store, "_insert_event", spy)
    store.put(e, JPEG)
    assert seen == [True]

    def boom(con: sqlite3.Connection, event: Event, has_thumbnail: bool) -> bool:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "_insert_event", boom)
    f = ev(1001.0)
    with pytest.raises(sqlite3.OperationalError):
        store.put(f, JPEG)
    assert not store.thumbnail_path("c1", f.id).exists()
    with pytest.raises(NotFoundError):
        store.get(f.id)


def test_half_written_thumbnails_are_cleared_on_open(tmp_path: Path) -> None:
    EventStore(tmp_path).close()
    junk = tmp_path / "thumbs" / ".tmp" / "abc123.tmp"
    junk.write_bytes(b"\xff\xd8")
    EventStore(tmp_path).close()
    assert not junk.exists()


@pytest.mark.parametrize(
    ("thumb", "message"),
    [(b"\x89PNG....", "not a JPEG"), (b"\xff\xd8\xff" + b"x" * (2 * 1024 * 1024), "more than")],
)
def test_bad_thumbnail_refused(store: EventStore, thumb: bytes, message: str) -> None:
    e = ev(1000.0)
    with pytest.raises(InvalidInputError, match=message):
        store.put(e, thumb)
    assert store.count_events() == 0


def test_community_dirname_is_a_safe_file_name() -> None:
    assert community_dirname("c1") == "c1"
    assert community_dirname("garden-3_A.b") == "garden-3_A.b"
    for unsafe in ("../x", "a/b", ".tmp", "..", "阳光小区", "x" * 200):
        name = community_dirname(unsafe)
        assert name.startswith("x-") and len(name) == 34
    assert community_dirname("阳光小区") != community_dirname("阳光二区")


def test_unsafe_community_thumbnail_stays_inside(store: EventStore) -> None:
    e = ev(1000.0, community="../../escape")
    store.put(e, JPEG)
    path = store.thumbnail_path(e.community, e.id)
    assert path.parent.parent == store.thumbs_dir and path.exists()
    assert store.thumbnail(e.community, e.id) == JPEG


# -- queries -------------------------------------------------------------------------------


def _dataset(store: EventStore) -> list[Event]:
    rng = random.Random(7)
    events = []
    for _ in range(600):
        kind = rng.choice(["face", "face", "plate"])
        who = rng.random()
        person = stranger = plate = None
        if kind == "plate":
            plate = rng.choice(["京A12345", "沪B67890", "粤C11111"])
            if who < 0.5:
                person = rng.choice(["p1", "p2"])
        elif who < 0.6:
            person = rng.choice(["p1", "p2", "p3"])
        else:
            stranger = rng.choice(["s1", "s2"])
        events.append(
            ev(
                10_000.0 + rng.randrange(0, 400) * 0.5,  # many ties on end
                community=rng.choice(["c1", "c1", "c2"]),
                gate=rng.choice(["g1", "g2", "g3"]),
                kind=kind,
                action=rng.choice(["OPEN", "OPEN", "NONE", "STRANGER", "ALERT"]),
                person=person,
                stranger=stranger,
                plate=plate,
            )
        )
    assert store.put_many([(e, None) for e in events]) == [True] * len(events)
    return events


FILTERS: list[dict[str, Any]] = [
    {},
    {"gate": "g2"},
    {"person_id": "p1"},
    {"stranger_id": "s2"},
    {"plate": "京A12345"},
    {"action": "ALERT"},
    {"kind": "plate"},
    {"since": 10_050.0},
    {"until": 10_100.0},
    {"since": 10_050.0, "until": 10_100.0},
    {"gate": "g1", "action": "OPEN", "kind": "face", "since": 10_020.0},
    {"person_id": "p2", "gate": "g3", "until": 10_150.0},
    {"person_id": "nobody"},
]


def _matches(e: Event, community: str, f: dict[str, Any]) -> bool:
    if e.community != community:
        return False
    if "since" in f and e.end < f["since"]:
        return False
    if "until" in f and e.end >= f["until"]:
        return False
    return all(getattr(e, k) == v for k, v in f.items() if k not in ("since", "until"))


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_every_filter_pages_through_exactly_the_matching_events(
    store: EventStore, filters: dict[str, Any]
) -> None:
    events = _dataset(store)
    for community in ("c1", "c2"):
        expected = _newest_first([e for e in events if _matches(e, community, filters)])
        for limit in (7, 50, MAX_QUERY_LIMIT):
            assert _all_pages(store, community, limit, **filters) == expected


def test_paging_with_ties_on_end_time(store: EventStore) -> None:
    # 45 events in 3 end times: pages cut through groups of equal end times.
    events = [ev(5000.0 + (i % 3), track=f"tie{i}") for i in range(45)]
    store.put_many([(e, None) for e in events])
    for limit in (1, 2, 4, 10, 15, 44, 45, 46):
        got = _all_pages(store, "c1", limit)
        assert got == _newest_first(events)
        assert len({e.id for e in got}) == 45


def test_exact_multiple_has_no_empty_last_page(store: EventStore) -> None:
    store.put_many([(ev(100.0 + i), None) for i in range(20)])
    page, cursor = store.query("c1", limit=10)
    page2, cursor2 = store.query("c1", limit=10, cursor=cursor)
    assert len(page) == len(page2) == 10 and cursor2 is None
    assert store.query("c9") == ([], None)


def test_cursor_survives_new_events_and_a_reopen(tmp_path: Path) -> None:
    s = EventStore(tmp_path)
    s.put_many([(ev(100.0 + i), None) for i in range(10)])
    page, cursor = s.query("c1", limit=4)
    s.put(ev(500.0))  # newer: not in the remaining pages
    s.close()
    s = EventStore(tmp_path)
    try:
        rest = _all_pages_from(s, cursor, 4)
        assert [e.end for e in page + rest] == [109.0 - i for i in range(10)]
    finally:
        s.close()


def _all_pages_from(store: EventStore, cursor: str | None, limit: int) -> list[Event]:
    out: list[Event] = []
    while cursor is not None:
        page, cursor = store.query("c1", limit=limit, cursor=cursor)
        out.extend(page)
    return out


def test_bad_query_arguments(store: EventStore) -> None:
    store.put_many([(ev(100.0 + i), None) for i in range(5)])
    _, cursor = store.query("c1", limit=2)
    assert cursor is not None
    bad: list[dict[str, Any]] = [
        {"limit": 0},
        {"limit": MAX_QUERY_LIMIT + 1},
        {"limit": True},
        {"limit": "5"},
        {"cursor": "garbage"},
        {"cursor": "c1.!!!!"},
        {"cursor": cursor[:-3]},
        {"cursor": cursor + "AAAA"},
        {"cursor": 7},
        {"cursor": cursor, "gate": "g1"},  # another query's cursor
        {"since": 10.0, "until": 5.0},
        {"since": float("nan")},
        {"action": "open"},
        {"kind": "bus"},
        {"gate": ""},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidInputError):
            store.query("c1", **kwargs)
    with pytest.raises(InvalidInputError):
        store.query("", limit=1)
    with pytest.raises(InvalidInputError):
        store.query("c2", cursor=cursor)  # another community's cursor


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "none")
def test_query_plans_use_an_index_in_order(store: EventStore, filters: dict[str, Any]) -> None:
    _dataset(store)
    _, cursor = store.query("c1", limit=3, **filters)
    for c in (None, cursor):
        plan = store.explain_query("c1", cursor=c, **filters)
        assert len(plan) == 1 and plan[0].startswith("SEARCH events USING INDEX"), plan
        assert not any("TEMP B-TREE" in p for p in plan), plan


def test_trajectory_across_gates_and_communities(store: EventStore) -> None:
    events = [
        ev(300.0, person="p1", gate="g2", community="c2"),
        ev(100.0, person="p1", gate="g1"),
        ev(200.0, person="p1", gate="g3"),
        ev(150.0, person="p2"),
        ev(250.0, stranger="s1", gate="g2"),
        ev(260.0, stranger="s1", gate="g1", community="c2"),
        ev(270.0, plate="京A12345", kind="plate"),
    ]
    store.put_many([(e, None) for e in events])
    assert [e.end for e in store.trajectory(person_id="p1")] == [100.0, 200.0, 300.0]
    assert [e.end for e in store.trajectory(person_id="p1", communities=["c1"])] == [100, 200]
    assert [e.end for e in store.trajectory(person_id="p1", since=150.0, until=300.0)] == [200]
    assert [e.end for e in store.trajectory(person_id="p1", limit=2)] == [100.0, 200.0]
    assert [e.gate for e in store.trajectory(stranger_id="s1")] == ["g2", "g1"]
    assert [e.end for e in store.trajectory(plate="京A12345")] == [270.0]
    assert store.trajectory(person_id="nobody") == []
    for kwargs in (
        {},
        {"person_id": "p1", "plate": "x"},
        {"person_id": "p1", "communities": []},
        {"person_id": "p1", "limit": 0},
    ):
        with pytest.raises(InvalidInputError):
            store.trajectory(**kwargs)


def test_count_stranger_visits(store: EventStore) -> None:
    store.put_many(
        [(ev(100.0 * i, stranger="s1"), None) for i in range(1, 6)]
        + [(ev(300.0, stranger="s2"), None), (ev(300.0, stranger="s1", community="c2"), None)]
    )
    assert store.count_stranger_visits("c1", "s1", 0.0) == 5
    assert store.count_stranger_visits("c1", "s1", 300.0) == 3
    assert store.count_stranger_visits("c1", "s9", 0.0) == 0


# -- alerts --------------------------------------------------------------------------------


def test_alerts_get_increasing_seq_and_are_idempotent(store: EventStore) -> None:
    a = store.append_alert(alert(key="a"))
    b = store.append_alert(alert(key="b", community="c2"))
    c = store.append_alert(alert(key="c"))
    assert 0 < a.seq < b.seq < c.seq
    assert store.append_alert(alert(key="a")) == a  # same id: the stored one, same seq
    assert store.alerts_after(None, 0) == [a, b, c]
    assert store.alerts_after("c1", 0) == [a, c]
    assert store.alerts_after("c1", a.seq) == [c]
    assert store.alerts_after(None, c.seq) == []
    assert store.alerts_after(None, 0, limit=2) == [a, b]
    for bad in ({"after_seq": -1}, {"after_seq": True}, {"after_seq": 0, "limit": 0}):
        with pytest.raises(InvalidInputError):
            store.alerts_after("c1", **bad)


def test_alert_seq_is_never_reused_after_a_purge(store: EventStore) -> None:
    last = store.append_alert(alert(key="old", time=10.0))
    report = store.purge(400 * DAY_S, RetentionPolicy(alert_days=1))
    assert report.alerts == 1 and store.alerts_after(None, 0) == []
    assert store.append_alert(alert(key="new", time=400 * DAY_S)).seq > last.seq


# -- retention -----------------------------------------------------------------------------


def test_purge_each_class_by_its_own_period(store: EventStore) -> None:
    now = 100 * DAY_S
    old_resident = ev(now - 50 * DAY_S, person="p1")
    new_resident = ev(now - 5 * DAY_S, person="p1")
    old_stranger = ev(now - 20 * DAY_S, stranger="s1")  # s1 also has a recent passage
    new_stranger = ev(now - 1 * DAY_S, stranger="s1")
    gone_stranger = ev(now - 20 * DAY_S, stranger="s2")  # s2's only passage
    old_plate = ev(now - 20 * DAY_S, plate="京A12345", kind="plate")
    thumb_old = ev(now - 8 * DAY_S, person="p2")
    for e in (old_resident, new_resident, old_stranger, gone_stranger, old_plate, thumb_old):
        store.put(e, JPEG)
    store.put(new_stranger, JPEG)
    store.append_alert(alert(key="old", time=now - 200 * DAY_S))
    keep = store.append_alert(alert(key="new", time=now - 2 * DAY_S))
    policy = RetentionPolicy(resident_days=30, stranger_days=10, thumbnail_days=7, alert_days=90)

    report = store.purge(now, policy)

    assert report.resident_events == 1
    assert report.stranger_events == 3  # old_stranger, gone_stranger, old_plate
    assert report.thumbnails == 1  # thumb_old; the purged rows took their files with them
    assert report.alerts == 1
    assert report.purged_strangers == (("c1", "s2"),)
    remaining = {e.id for e in store.trajectory(person_id="p1")} | {
        e.id for e in store.trajectory(person_id="p2")
    }
    assert remaining == {new_resident.id, thumb_old.id}
    assert [e.id for e in store.trajectory(stranger_id="s1")] == [new_stranger.id]
    for gone in (old_resident, old_stranger, gone_stranger, old_plate):
        assert not store.thumbnail_path("c1", gone.id).exists()
    assert store.get(thumb_old.id).has_thumbnail is False
    assert not store.thumbnail_path("c1", thumb_old.id).exists()
    with pytest.raises(NotFoundError):
        store.thumbnail("c1", thumb_old.id)
    assert store.thumbnail("c1", new_resident.id) == JPEG
    assert store.alerts_after(None, 0) == [keep]
    # Nothing left to do: a second purge is empty.
    assert store.purge(now, policy) == type(report)(0, 0, 0, 0, ())


def test_purge_in_small_batches_and_keep_forever(store: EventStore) -> None:
    store.put_many([(ev(float(i), stranger=f"s{i % 3}"), JPEG) for i in range(1, 26)])
    keep = RetentionPolicy(None, None, None, None)
    assert store.purge(1000 * DAY_S, keep).stranger_events == 0
    report = store.purge(1000 * DAY_S, RetentionPolicy(stranger_days=1), batch=4)
    assert report.stranger_events == 25
    assert sorted(report.purged_strangers) == [("c1", "s0"), ("c1", "s1"), ("c1", "s2")]
    assert list((store.thumbs_dir / "c1").iterdir()) == []


def test_purger_calls_the_stranger_hook(store: EventStore) -> None:
    store.put(ev(10.0, stranger="s1"))
    seen: list[tuple[tuple[str, str], ...]] = []
    purger = RetentionPurger(
        store,
        RetentionPolicy(stranger_days=1),
        on_strangers_purged=lambda ids: seen.append(tuple(ids)),
        clock=lambda: 10 * DAY_S,
        start=False,
    )
    report = purger.run_once()
    assert report.stranger_events == 1 and seen == [(("c1", "s1"),)]
    purger.close()
    # The thread purges once at start.
    store.put(ev(20.0, stranger="s2"))
    background = RetentionPurger(
        store,
        RetentionPolicy(stranger_days=1),
        interval_s=60,
        on_strangers_purged=lambda ids: seen.append(tuple(ids)),
        clock=lambda: 10 * DAY_S,
    )
    background.close()
    assert seen[-1] == (("c1", "s2"),) and background.last_error is None


# -- erasure and the outbox rows ---------------------------------------------------------------


def test_erase_person_and_plate(tmp_path: Path) -> None:
    store = EventStore(tmp_path, outbox=True)
    try:
        p1 = [ev(100.0 + i, person="p1", gate=f"g{i}") for i in range(3)]
        p1_other_community = ev(100.0, person="p1", community="c2")
        car = ev(200.0, plate="京A12345", kind="plate")
        rest = ev(300.0, person="p2")
        for e in [*p1, p1_other_community, car, rest]:
            store.put(e, JPEG)
        store.append_alert(alert("watchlist", key="w1", person="p1"))
        store.append_alert(alert("watchlist", key="w2", plate="京A12345"))
        # The first two p1 events were sent already; the third is still pending.
        pending = store.outbox_pending(100)
        store.outbox_mark_sent([(pending[0], "1-0"), (pending[1], "1-1"), (pending[6], "2-0")])

        report = store.erase_person("c1", "p1")

        assert (report.events, report.alerts, report.thumbnails) == (3, 1, 3)
        assert report.stream_entries == 3  # two event entries and the watchlist alert's
        assert [e.id for e in store.trajectory(person_id="p1")] == [p1_other_community.id]
        for e in p1:
            assert not store.thumbnail_path("c1", e.id).exists()
        deletes = store.stream_deletes(100)
        assert [(d.topic, d.community, d.entry_id) for d in deletes] == [
            ("events", "c1", "1-0"),
            ("events", "c1", "1-1"),
            ("alerts", "c1", "2-0"),
        ]
        assert {r.ref_id for r in store.outbox_pending(100)}.isdisjoint(e.id for e in p1)
        store.stream_deletes_done([d.seq for d in deletes])
        report = store.erase_plate("c1", "京A12345")
        assert (report.events, report.alerts, report.thumbnails) == (1, 1, 1)
        assert store.trajectory(plate="京A12345") == []
        assert store.get(rest.id) == replace(rest, has_thumbnail=True)
        assert store.erase_person("c1", "p1") == type(report)(0, 0, 0, 0)
    finally:
        store.close()


def test_outbox_rows_only_for_new_rows_and_only_when_enabled(tmp_path: Path) -> None:
    plain = EventStore(tmp_path / "a")
    plain.put(ev(1.0))
    plain.append_alert(alert())
    assert plain.outbox_backlog() == (0, 0)
    plain.close()
    store = EventStore(tmp_path / "b", outbox=True)
    woken: list[int] = []
    store.add_listener(lambda: woken.append(1))
    try:
        e = ev(1.0, person="p1")
        store.put(e, JPEG)
        store.put(e, JPEG)
        a = store.append_alert(alert())
        store.append_alert(alert())
        rows = store.outbox_pending(10)
        assert [(r.topic, r.ref_id) for r in rows] == [("events", e.id), ("alerts", a.id)]
        assert rows[0].fields["person_id"] == "p1" and rows[0].fields["has_thumbnail"] == "1"
        assert rows[1].fields["seq"] == str(a.seq)
        assert len(woken) == 2
        # A row erased while its XADD was in flight: the entry is queued for XDEL.
        store.erase_person("c1", "p1")
        assert store.outbox_mark_sent([(rows[0], "5-0"), (rows[1], "5-1")]) == 1
        assert [d.entry_id for d in store.stream_deletes(10)] == ["5-0"]
        assert store.outbox_backlog() == (0, 1)
    finally:
        store.close()
