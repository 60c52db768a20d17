"""Alert rules (tailgating, stranger repeats, watchlist), the detectors over a real store, and
the hub: wake-ups, cancellation, and resume from a cursor after a reconnect."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.events.alerts import (
    AlertDetectors,
    AlertHub,
    StrangerRepeatRule,
    TailgatingDetector,
    watchlist_alert,
)
from cluster.events.model import Alert, Event, alert_id, make_event
from cluster.events.store import EventStore
from cluster.events.writer import EventWriter
from smartgate.errors import InvalidInputError

_tracks = itertools.count()


def ev(
    start: float,
    end: float | None = None,
    *,
    action: str = "NONE",
    gate: str = "g1",
    kind: str = "face",
    person: str | None = None,
    stranger: str | None = None,
    plate: str | None = None,
    community: str = "c1",
) -> Event:
    return make_event(
        community=community,
        gate=gate,
        device="cam",
        kind=kind,  # type: ignore[arg-type]
        action=action,  # type: ignore[arg-type]
        track_id=f"t{next(_tracks)}",
        start=start,
        end=start + 1.0 if end is None else end,
        score=0.9,
        quality=0.8,
        person_id=person,
        stranger_id=stranger,
        plate=plate,
    )


def alert(i: int, community: str = "c1") -> Alert:
    return Alert(alert_id("watchlist", community, f"k{i}"), 0, community, "g1", "watchlist",
                 None, f"p{i}", None, None, float(i), f"alert {i}")  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EventStore]:
    s = EventStore(tmp_path)
    yield s
    s.close()


# -- tailgating ----------------------------------------------------------------------------


def test_tailgating_after_an_open() -> None:
    d = TailgatingDetector(window_s=5.0)
    opened = ev(100.0, 103.0, action="OPEN", person="p1")
    assert d.observe(opened) == []
    follower = ev(104.0, 106.0, stranger="s1")  # within 103 + 5
    (a,) = d.observe(follower)
    assert a.kind == "tailgating" and a.event_id == follower.id and a.stranger_id == "s1"
    assert a.id == alert_id("tailgating", "c1", follower.id)
    assert "s1" in a.message and "p1" not in a.message  # the opener is not named
    assert d.observe(follower) == []  # seen again: no second alert


def test_tailgating_when_the_follower_is_seen_first() -> None:
    d = TailgatingDetector(window_s=5.0)
    follower = ev(101.0, 102.0)  # its track ended before the opener's did
    assert d.observe(follower) == []
    (a,) = d.observe(ev(100.0, 104.0, action="OPEN", person="p1"))
    assert a.event_id == follower.id


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (ev(104.0, action="OPEN", person="p2"), "has its own OPEN"),
        (ev(108.5), "outside the window"),
        (ev(99.0), "started before the gate opened"),
        (ev(104.0, gate="g2"), "another gate"),
        (ev(104.0, kind="plate"), "a vehicle after a person"),
        (ev(104.0, person="p1"), "the same person on a second track"),
        (ev(104.0, community="c2"), "another community"),
    ],
)
def test_no_tailgating(second: Event, why: str) -> None:
    d = TailgatingDetector(window_s=5.0)
    d.observe(ev(100.0, 103.0, action="OPEN", person="p1"))
    assert d.observe(second) == [], why


def test_tailgating_vehicles() -> None:
    d = TailgatingDetector(window_s=3.0)
    d.observe(ev(10.0, 12.0, action="OPEN", kind="plate", plate="京A1"))
    assert d.observe(ev(11.0, 13.0, kind="plate", plate="京A1")) == []  # same car re-tracked
    (a,) = d.observe(ev(13.0, 15.0, kind="plate", plate="沪B2"))
    assert a.plate == "沪B2" and "another vehicle" in a.message


def test_tailgating_forgets_old_passages() -> None:
    d = TailgatingDetector(window_s=5.0, max_delay_s=10.0)
    d.observe(ev(100.0, 101.0, action="OPEN", person="p1"))
    d.observe(ev(1000.0))
    assert sum(len(q) for q in d._gates.values()) == 1
    with pytest.raises(InvalidInputError):
        TailgatingDetector(window_s=0)


# -- strangers and watchlist ---------------------------------------------------------------


def test_stranger_repeat_rule() -> None:
    rule = StrangerRepeatRule(n=3, window_s=600.0)
    e = ev(1000.0, stranger="s1")
    assert rule.since(e) == e.end - 600.0
    assert rule.check(e, visits=3, last_alert_time=None) is None  # not more than n
    a = rule.check(e, visits=4, last_alert_time=None)
    assert a is not None and a.kind == "stranger_repeat" and a.stranger_id == "s1"
    assert "4 times" in a.message
    assert rule.check(e, visits=9, last_alert_time=e.end - 100.0) is None  # once per window
    assert rule.check(e, visits=9, last_alert_time=e.end - 700.0) is not None
    assert rule.check(ev(1000.0, person="p1"), visits=9, last_alert_time=None) is None
    with pytest.raises(InvalidInputError):
        StrangerRepeatRule(0, 10.0)


def test_watchlist_alert() -> None:
    assert watchlist_alert(ev(1.0, action="OPEN", person="p1")) is None
    a = watchlist_alert(ev(1.0, action="ALERT", person="bad"))
    assert a is not None and a.kind == "watchlist" and a.person_id == "bad"


def test_detectors_over_the_store_through_the_writer(store: EventStore) -> None:
    hub = AlertHub(store)
    detectors = AlertDetectors(
        hub, tailgating_window_s=5.0, stranger_repeat_n=2, stranger_repeat_window_s=3600.0
    )
    writer = EventWriter(store, 100, on_written=detectors.observe)
    try:
        for t in (0.0, 100.0, 200.0, 300.0):  # the 3rd visit crosses n=2; the 4th is suppressed
            writer.submit(ev(t, stranger="s9", gate="g5"))
        writer.submit(ev(1000.0, 1002.0, action="OPEN", person="p1"))
        tailgater = ev(1003.0, stranger="s7")
        writer.submit(tailgater)
        writer.submit(tailgater)  # a duplicate passage raises nothing new
        writer.submit(ev(2000.0, action="ALERT", person="wanted"))
        assert writer.flush(5.0)
        got = [(a.kind, a.stranger_id or a.person_id) for a in store.alerts_after(None, 0)]
        assert got == [
            ("stranger_repeat", "s9"),
            ("tailgating", "s7"),
            ("watchlist", "wanted"),
        ]
    finally:
        writer.close()
        hub.close()


# -- the hub -------------------------------------------------------------------------------


def test_resume_after_a_reconnect_gets_exactly_the_missed_alerts(store: EventStore) -> None:
    hub = AlertHub(store)
    for i in range(5):
        hub.publish(alert(i))
    sub = hub.subscribe("c1", after_seq=0)
    first = [sub.get(timeout=1.0) for _ in range(3)]
    assert [a.person_id for a in first if a] == ["p0", "p1", "p2"]
    cursor = sub.seq
    sub.close()  # the watcher disconnects
    assert sub.get(timeout=0.1) is None
    for i in range(5, 9):
        hub.publish(alert(i))
    hub.publish(alert(50, community="c2"))  # another community: not for this watcher
    again = hub.subscribe("c1", after_seq=cursor)
    missed = [again.get(timeout=1.0) for _ in range(6)]
    assert [a.person_id for a in missed if a] == ["p3", "p4", "p5", "p6", "p7", "p8"]
    assert again.get(timeout=0.05) is None
    assert [a.seq for a in missed if a] == sorted(a.seq for a in missed if a)
    hub.close()


def test_subscribers_wake_on_publish_and_stop_on_close(store: EventStore) -> None:
    hub = AlertHub(store, poll_s=30.0)  # wake-ups, not polling, must deliver
    everyone = hub.subscribe(None)
    only_c2 = hub.subscribe("c2")
    got: dict[str, list[str]] = {"all": [], "c2": []}

    def watch(name: str, sub: object) -> None:
        for a in sub:  # type: ignore[attr-defined]
            got[name].append(a.id)

    threads = [
        threading.Thread(target=watch, args=("all", everyone)),
        threading.Thread(target=watch, args=("c2", only_c2)),
    ]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    a = hub.publish(alert(1))
    b = hub.publish(alert(2, community="c2"))
    deadline = time.monotonic() + 5.0
    while (len(got["all"]) < 2 or len(got["c2"]) < 1) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert time.monotonic() - t0 < 2.0
    assert got == {"all": [a.id, b.id], "c2": [b.id]}
    only_c2.close()  # one watcher leaves; the other keeps going
    threads[1].join(2.0)
    assert not threads[1].is_alive()
    c = hub.publish(alert(3))
    deadline = time.monotonic() + 5.0
    while len(got["all"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    hub.close()
    threads[0].join(2.0)
    assert not threads[0].is_alive() and got["all"][-1] == c.id
    assert hub.subscribe("c1").get(timeout=0.01) is None  # closed hub: nothing more
    with pytest.raises(InvalidInputError):
        hub.subscribe("c1", after_seq=-1)


def test_subscriber_sees_alerts_appended_elsewhere(store: EventStore) -> None:
    hub = AlertHub(store, poll_s=0.02)
    sub = hub.subscribe(None)
    appended = store.append_alert(alert(1))  # not through the hub: found by polling
    assert sub.get(timeout=2.0) == appended
    hub.close()
