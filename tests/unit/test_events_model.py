"""Event and alert ids, input checks, stream fields."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from cluster.events.model import (
    Alert,
    Event,
    alert_fields,
    alert_id,
    check_alert,
    check_event,
    event_fields,
    event_id,
    make_event,
)
from smartgate.config import EventsConfig, RetentionPolicy
from smartgate.errors import ConfigError, InvalidInputError


def _event() -> Event:
    return make_event(
        community="c1",
        gate="g1",
        device="cam-1",
        kind="face",
        action="OPEN",
        track_id="t-7",
        start=1_700_000_000.25,
        end=1_700_000_002.5,
        score=0.91,
        quality=0.8,
        liveness=0.99,
        person_id="p1",
        role="resident",
    )


def test_event_id_is_deterministic_short_and_safe() -> None:
    a = event_id("c1", "g1", "t-7", 1_700_000_000.25)
    assert a == event_id("c1", "g1", "t-7", 1_700_000_000.25)
    assert len(a) == 24 and all(c in "0123456789abcdef" for c in a)
    # Float noise below a millisecond does not change the id; anything else does.
    assert a == event_id("c1", "g1", "t-7", 1_700_000_000.25 + 1e-7)
    others = {
        event_id("c2", "g1", "t-7", 1_700_000_000.25),
        event_id("c1", "g2", "t-7", 1_700_000_000.25),
        event_id("c1", "g1", "t-8", 1_700_000_000.25),
        event_id("c1", "g1", "t-7", 1_700_000_000.26),
        # Parts are separated: moving a character between them changes the id.
        event_id("c1g", "1", "t-7", 1_700_000_000.25),
    }
    assert a not in others and len(others) == 5


def test_make_event_uses_event_id() -> None:
    e = _event()
    assert e.id == event_id("c1", "g1", "t-7", 1_700_000_000.25)
    assert check_event(e) is e


def test_alert_id_differs_by_kind_and_key() -> None:
    a = alert_id("tailgating", "c1", "e1")
    assert a == alert_id("tailgating", "c1", "e1")
    assert a != alert_id("watchlist", "c1", "e1") != alert_id("tailgating", "c1", "e2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "../etc"}, "event id"),
        ({"id": ""}, "event id"),
        ({"community": ""}, "community"),
        ({"community": "x" * 129}, "community"),
        ({"gate": "a\nb"}, "gate"),
        ({"kind": "bike"}, "kind"),
        ({"action": "open"}, "action"),
        ({"score": math.nan}, "score"),
        ({"quality": "0.5"}, "quality"),
        ({"liveness": math.inf}, "liveness"),
        ({"end": 1_700_000_000.0}, "before start"),
        ({"person_id": ""}, "person_id"),
        ({"track_id": " "}, "track_id"),
    ],
)
def test_check_event_names_the_bad_field(change: dict[str, Any], message: str) -> None:
    bad = replace(_event(), **change)
    with pytest.raises(InvalidInputError, match=message):
        check_event(bad)


def test_check_alert() -> None:
    good = Alert("a1", 0, "c1", "g1", "tailgating", "e1", None, "s1", None, 5.0, "m")
    assert check_alert(good) is good
    with pytest.raises(InvalidInputError, match="alert kind"):
        check_alert(replace(good, kind="fire"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="message"):
        check_alert(replace(good, message="x" * 1001))
    with pytest.raises(InvalidInputError, match="event id"):
        check_alert(replace(good, event_id="a/b"))


def test_stream_fields_are_strings_without_nones() -> None:
    e = _event()
    fields = event_fields(e, has_thumbnail=True)
    assert fields["type"] == "event" and fields["id"] == e.id
    assert fields["has_thumbnail"] == "1" and float(fields["start"]) == 1_700_000_000.25
    assert "stranger_id" not in fields and "plate" not in fields
    assert all(isinstance(v, str) for v in fields.values())
    a = Alert("a1", 7, "c1", "g1", "watchlist", None, "p9", None, None, 5.5, "m")
    af = alert_fields(a)
    assert af["seq"] == "7" and af["person_id"] == "p9" and "event_id" not in af


def test_config_checks() -> None:
    assert EventsConfig().retention == RetentionPolicy()
    assert RetentionPolicy.cutoff(100 * 86_400.0, 30) == 70 * 86_400.0
    assert RetentionPolicy.cutoff(5.0, None) is None
    with pytest.raises(ConfigError, match="stranger_days"):
        RetentionPolicy(stranger_days=0)
    with pytest.raises(ConfigError, match="queue_size"):
        EventsConfig(queue_size=0)
    with pytest.raises(ConfigError, match="tailgating_window_s"):
        EventsConfig(tailgating_window_s=0)
