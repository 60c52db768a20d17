"""Value types of the event log: ``Event`` (one passage), ``Alert``, their deterministic ids and
the input checks every writer goes through.

An *event* is one track at one gate, written once when the track ends: who or what passed
(``person_id`` for an identified person, ``stranger_id`` for an unknown face's pseudo-identity,
``plate`` for a vehicle), the gate's decision (``action``) and the scores. Its ``id`` is derived
from ``(community, gate, track_id, start)`` by ``event_id``, so a passage re-emitted after a
restart gets the same id and is stored once.

Times are Unix seconds (float). Scores, quality and liveness are in ``[0, 1]``-ish units of the
recognizer; the store only checks that they are finite.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Final, Literal, get_args

from smartgate import checks
from smartgate.errors import InvalidInputError

Kind = Literal["face", "plate"]
Action = Literal["OPEN", "ALERT", "STRANGER", "NONE"]
AlertKind = Literal["watchlist", "stranger_repeat", "tailgating"]

KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
ALERT_KINDS: Final[tuple[AlertKind, ...]] = get_args(AlertKind)

MAX_ID_LENGTH: Final = 128
MAX_MESSAGE_LENGTH: Final = 1000
#: Event and alert ids name files (``thumbs/<community>/<id>.jpg``): a safe alphabet only.
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: Hex digits of sha256 kept in an id (96 bits: collisions are not a practical concern).
_ID_HEX: Final = 24


@dataclass(frozen=True, slots=True)
class Event:
    """One passage (one track) at one gate, as stored.

    Exactly one of ``person_id`` (identified), ``stranger_id`` (unknown face), ``plate``
    (vehicle) is normally set, but none is required (a NONE decision may identify nobody).
    ``start``/``end`` bound the track; queries order and filter by ``end``. ``has_thumbnail``
    is set by the store: whether a best-shot JPEG is stored beside the row.
    """

    id: str
    community: str
    gate: str
    device: str
    kind: Kind
    action: Action
    person_id: str | None
    stranger_id: str | None
    plate: str | None
    score: float
    quality: float
    liveness: float | None
    start: float
    end: float
    role: str | None
    track_id: str
    has_thumbnail: bool = False


@dataclass(frozen=True, slots=True)
class Alert:
    """Something a guard should see now. ``seq`` is the store's cursor (strictly increasing,
    never reused; 0 until the alert is stored); subscribers resume after a ``seq``."""

    id: str
    seq: int
    community: str
    gate: str
    kind: AlertKind
    event_id: str | None
    person_id: str | None
    stranger_id: str | None
    plate: str | None
    time: float
    message: str


def _digest(*parts: str) -> str:
    # Unit separator between parts: ("a", "bc") and ("ab", "c") hash differently.
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:_ID_HEX]


def event_id(community: str, gate: str, track_id: str, start: float) -> str:
    """The stable id of a passage: 24 hex digits of sha256 over its community, gate, track id
    and start time (to the millisecond, so float noise below that does not change it)."""
    return _digest("event", community, gate, track_id, f"{start:.3f}")


def alert_id(kind: AlertKind, community: str, key: str) -> str:
    """The stable id of an alert of ``kind`` about ``key`` (usually the triggering event's id),
    so a detector that sees the same event twice raises one alert."""
    return _digest("alert", kind, community, key)


def make_event(
    *,
    community: str,
    gate: str,
    device: str,
    kind: Kind,
    action: Action,
    track_id: str,
    start: float,
    end: float,
    score: float,
    quality: float,
    liveness: float | None = None,
    person_id: str | None = None,
    stranger_id: str | None = None,
    plate: str | None = None,
    role: str | None = None,
) -> Event:
    """An ``Event`` with its id computed by ``event_id`` (the capture path's constructor)."""
    return Event(
        id=event_id(community, gate, track_id, start),
        community=community,
        gate=gate,
        device=device,
        kind=kind,
        action=action,
        person_id=person_id,
        stranger_id=stranger_id,
        plate=plate,
        score=score,
        quality=quality,
        liveness=liveness,
        start=start,
        end=end,
        role=role,
        track_id=track_id,
    )


# -- checks ----------------------------------------------------------------------------------


def check_text(value: object, what: str) -> str:
    """A non-empty printable string of at most ``MAX_ID_LENGTH`` characters."""
    return checks.check_text(value, what, MAX_ID_LENGTH)


def check_optional_text(value: object, what: str) -> str | None:
    return None if value is None else check_text(value, what)


def check_safe_id(value: object, what: str) -> str:
    """An id that may name a file: 1–128 of ``A-Z a-z 0-9 _ -`` (``event_id`` makes these)."""
    if not isinstance(value, str) or _SAFE_ID.fullmatch(value) is None:
        raise InvalidInputError(
            f"{what} must be 1–{MAX_ID_LENGTH} characters of A-Z, a-z, 0-9, '_' or '-' "
            f"(use event_id()/alert_id()); got {value!r}"
        )
    return value


def check_time(value: object, what: str) -> float:
    """A finite number (Unix seconds or a score)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be finite, got {number}")
    return number


def check_event(event: Event) -> Event:
    """Raise ``InvalidInputError`` naming the first bad field of ``event``; return it."""
    if not isinstance(event, Event):
        raise InvalidInputError(f"expected an Event, got {type(event).__name__}")
    check_safe_id(event.id, "event id")
    check_text(event.community, "community")
    check_text(event.gate, "gate")
    check_text(event.device, "device")
    check_text(event.track_id, "track_id")
    if event.kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}; got {event.kind!r}")
    if event.action not in ACTIONS:
        raise InvalidInputError(f"action must be one of {', '.join(ACTIONS)}; got {event.action!r}")
    check_optional_text(event.person_id, "person_id")
    check_optional_text(event.stranger_id, "stranger_id")
    check_optional_text(event.plate, "plate")
    check_optional_text(event.role, "role")
    check_time(event.score, "score")
    check_time(event.quality, "quality")
    if event.liveness is not None:
        check_time(event.liveness, "liveness")
    start = check_time(event.start, "start")
    end = check_time(event.end, "end")
    if end < start:
        raise InvalidInputError(f"end ({end}) is before start ({start})")
    return event


def check_alert(alert: Alert) -> Alert:
    """Raise ``InvalidInputError`` naming the first bad field of ``alert``; return it."""
    if not isinstance(alert, Alert):
        raise InvalidInputError(f"expected an Alert, got {type(alert).__name__}")
    check_safe_id(alert.id, "alert id")
    check_text(alert.community, "community")
    check_text(alert.gate, "gate")
    if alert.kind not in ALERT_KINDS:
        raise InvalidInputError(
            f"alert kind must be one of {', '.join(ALERT_KINDS)}; got {alert.kind!r}"
        )
    if alert.event_id is not None:
        check_safe_id(alert.event_id, "event id")
    check_optional_text(alert.person_id, "person_id")
    check_optional_text(alert.stranger_id, "stranger_id")
    check_optional_text(alert.plate, "plate")
    check_time(alert.time, "time")
    if not isinstance(alert.message, str) or len(alert.message) > MAX_MESSAGE_LENGTH:
        raise InvalidInputError(f"message must be a string of at most {MAX_MESSAGE_LENGTH} chars")
    return alert


# -- stream form -----------------------------------------------------------------------------


def _put(fields: dict[str, str], name: str, value: str | float | None) -> None:
    if value is not None:
        fields[name] = value if isinstance(value, str) else repr(float(value))


def event_fields(event: Event, has_thumbnail: bool) -> dict[str, str]:
    """The fields of ``event``'s Redis stream entry: strings only, ``None`` fields left out,
    numbers as Python float reprs (exact), ``type`` ``event`` and the idempotent ``id``."""
    fields = {"type": "event", "v": "1"}
    for name in ("id", "community", "gate", "device", "kind", "action", "track_id"):
        fields[name] = getattr(event, name)
    for name in ("person_id", "stranger_id", "plate", "role"):
        _put(fields, name, getattr(event, name))
    for name in ("score", "quality", "liveness", "start", "end"):
        _put(fields, name, getattr(event, name))
    fields["has_thumbnail"] = "1" if has_thumbnail else "0"
    return fields


def alert_fields(alert: Alert) -> dict[str, str]:
    """The fields of ``alert``'s Redis stream entry (as ``event_fields``; ``seq`` included)."""
    fields = {"type": "alert", "v": "1", "id": alert.id, "seq": str(alert.seq)}
    for name in ("community", "gate", "kind", "message"):
        fields[name] = getattr(alert, name)
    for name in ("event_id", "person_id", "stranger_id", "plate"):
        _put(fields, name, getattr(alert, name))
    _put(fields, "time", alert.time)
    return fields
