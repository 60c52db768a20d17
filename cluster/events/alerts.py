"""Alerts: the detectors that raise them and the hub that hands them to watchers.

* ``watchlist_alert``, ``TailgatingDetector``, ``StrangerRepeatRule``: pure rules over stored
  passages (no I/O); every alert they make has a deterministic id (``alert_id`` of its kind and
  the triggering event), so seeing an event twice raises one alert.
* ``AlertDetectors``: runs the rules on newly stored events (``EventWriter``'s ``on_written``),
  looks up what the stranger rule needs in the store, publishes what they raise.
* ``AlertHub``: ``publish`` appends to the store (which assigns ``seq``) and wakes subscribers;
  a ``Subscription`` reads the store after its cursor, so a watcher that reconnects with the
  last ``seq`` it saw gets exactly what it missed, and one that is slow loses nothing.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cluster.events.model import Alert, Event, alert_id, check_text
from cluster.events.store import EventStore
from smartgate.errors import InvalidInputError

# -- the hub ---------------------------------------------------------------------------------


class AlertHub:
    """In-process fan-out of alerts, backed by the store's ``seq`` order. Thread-safe.

    ``poll_s``: how often an idle subscriber looks at the store even without a wake-up (alerts
    appended by another process or straight through ``EventStore.append_alert``).
    """

    def __init__(self, store: EventStore, *, poll_s: float = 1.0) -> None:
        self.store = store
        self.poll_s = poll_s
        self._cond = threading.Condition()
        self._version = 0
        self._closed = False
        self._subscriptions: set[Subscription] = set()

    def publish(self, alert: Alert) -> Alert:
        """Store ``alert`` (idempotent on its id) and wake every subscriber; returns it with
        its ``seq``."""
        stored = self.store.append_alert(alert)
        self.wake()
        return stored

    def wake(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def subscribe(
        self, community: str | None = None, after_seq: int = 0, *, batch: int = 100
    ) -> Subscription:
        """Alerts of ``community`` (or all) with ``seq > after_seq``, in ``seq`` order, first
        those stored already, then each as it is published. Close the subscription (or the
        hub) to end it."""
        if community is not None:
            check_text(community, "community")
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise InvalidInputError(f"after_seq must be an integer >= 0, got {after_seq!r}")
        if after_seq >= 2**63:  # SQLite integers are signed 64-bit
            raise InvalidInputError(f"after_seq must be below 2**63, got {after_seq}")
        sub = Subscription(self, community, after_seq, batch)
        with self._cond:
            if self._closed:
                sub._closed = True
            else:
                self._subscriptions.add(sub)
        return sub

    def close(self) -> None:
        """End every subscription (their iterators stop) and refuse new ones."""
        with self._cond:
            self._closed = True
            for sub in self._subscriptions:
                sub._closed = True
            self._subscriptions.clear()
            self._cond.notify_all()

    def _forget(self, sub: Subscription) -> None:
        with self._cond:
            self._subscriptions.discard(sub)
            self._cond.notify_all()


class Subscription:
    """One watcher's cursor over the alerts. ``seq`` is the ``seq`` of the last alert it
    returned: subscribe again with ``after_seq=seq`` to resume after a reconnect."""

    def __init__(self, hub: AlertHub, community: str | None, after_seq: int, batch: int) -> None:
        self._hub = hub
        self.community = community
        self.seq = after_seq
        self._batch = batch
        self._buffer: deque[Alert] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the subscription; a thread blocked in ``get`` or the iterator returns."""
        self._closed = True
        self._hub._forget(self)

    def get(self, timeout: float | None = None) -> Alert | None:
        """The next alert, waiting up to ``timeout`` seconds (``None``: until one comes or the
        subscription closes); ``None`` on timeout or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        hub = self._hub
        while True:
            if self._closed:
                return None
            if self._buffer:
                alert = self._buffer.popleft()
                self.seq = alert.seq
                return alert
            with hub._cond:
                version = hub._version
            # Read after noting the version: a publish after this read changes the version,
            # so the wait below cannot miss it.
            self._buffer.extend(hub.store.alerts_after(self.community, self.seq, self._batch))
            if self._buffer:
                continue
            wait = hub.poll_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                wait = min(wait, left)
            with hub._cond:
                if hub._version == version and not self._closed:
                    hub._cond.wait(wait)

    def __iter__(self) -> Iterator[Alert]:
        return self

    def __next__(self) -> Alert:
        alert = self.get()
        if alert is None:
            raise StopIteration
        return alert

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the rules -------------------------------------------------------------------------------


def _who(event: Event) -> str:
    if event.person_id is not None:
        return f"person {event.person_id}"
    if event.stranger_id is not None:
        return f"stranger {event.stranger_id}"
    if event.plate is not None:
        return f"plate {event.plate}"
    return f"an unidentified {'vehicle' if event.kind == 'plate' else 'person'}"


def watchlist_alert(event: Event) -> Alert | None:
    """An ALERT decision (a watch-listed person or plate) → a ``watchlist`` alert."""
    if event.action != "ALERT":
        return None
    return Alert(
        id=alert_id("watchlist", event.community, event.id),
        seq=0,
        community=event.community,
        gate=event.gate,
        kind="watchlist",
        event_id=event.id,
        person_id=event.person_id,
        stranger_id=event.stranger_id,
        plate=event.plate,
        time=event.end,
        message=f"watchlist: {_who(event)} at gate {event.gate}",
    )


@dataclass
class _Seen:
    event: Event
    alerted: bool = False


class TailgatingDetector:
    """Per gate and kind: after an OPEN passage ``O``, another track ``x`` at the same gate
    that started while the gate was open (``O.start <= x.start <= O.end + window_s``) without
    an OPEN of its own, and not the same person or plate as ``O`` → one ``tailgating`` alert
    about ``x``. Faces are compared with faces, vehicles with vehicles.

    Passages arrive when their tracks end, so either may be seen first; the detector keeps
    each gate's passages for ``window_s + max_delay_s`` (of event time) to pair them. State is
    in memory: after a restart, pairs that straddle it are not seen.
    """

    def __init__(self, window_s: float, *, max_delay_s: float = 60.0, max_per_gate: int = 512):
        if not window_s > 0:
            raise InvalidInputError(f"tailgating window must be > 0 s, got {window_s}")
        self.window_s = float(window_s)
        self.max_delay_s = float(max_delay_s)
        self._max_per_gate = max_per_gate
        self._gates: dict[tuple[str, str, str], deque[_Seen]] = {}

    def observe(self, event: Event) -> list[Alert]:
        key = (event.community, event.gate, event.kind)
        seen = self._gates.setdefault(key, deque(maxlen=self._max_per_gate))
        horizon = event.end - self.window_s - self.max_delay_s
        while seen and seen[0].event.end < horizon:
            seen.popleft()
        if any(s.event.id == event.id for s in seen):
            return []
        mine = _Seen(event)
        alerts: list[Alert] = []
        if event.action == "OPEN":
            for other in seen:
                if not other.alerted and self._tailgates(other.event, event):
                    other.alerted = True
                    alerts.append(self._alert(other.event, event))
        else:
            opener = next((s.event for s in seen if self._tailgates(event, s.event)), None)
            if opener is not None:
                mine.alerted = True
                alerts.append(self._alert(event, opener))
        seen.append(mine)
        return alerts

    def _tailgates(self, x: Event, opened: Event) -> bool:
        if opened.action != "OPEN" or x.action == "OPEN" or x.track_id == opened.track_id:
            return False
        if x.person_id is not None and x.person_id == opened.person_id:
            return False
        if x.plate is not None and x.plate == opened.plate:
            return False
        return opened.start <= x.start <= opened.end + self.window_s

    def _alert(self, x: Event, opened: Event) -> Alert:
        # The message names the tailgater only: erasing the person who opened the gate must
        # not leave their id behind in someone else's alert.
        return Alert(
            id=alert_id("tailgating", x.community, x.id),
            seq=0,
            community=x.community,
            gate=x.gate,
            kind="tailgating",
            event_id=x.id,
            person_id=x.person_id,
            stranger_id=x.stranger_id,
            plate=x.plate,
            time=x.end,
            message=(
                f"tailgating at gate {x.gate}: {_who(x)} passed "
                f"{max(0.0, x.start - opened.start):.1f} s after the gate opened for another "
                f"{'vehicle' if x.kind == 'plate' else 'person'}, without an OPEN of its own"
            ),
        )


class StrangerRepeatRule:
    """A stranger seen more than ``n`` times within ``window_s`` seconds → a
    ``stranger_repeat`` alert, at most one per stranger per window."""

    def __init__(self, n: int, window_s: float) -> None:
        if n < 1 or not window_s > 0:
            raise InvalidInputError(
                f"stranger repeat needs n >= 1 and window > 0; got {n}, {window_s}"
            )
        self.n = n
        self.window_s = float(window_s)

    def since(self, event: Event) -> float:
        """Where the visit count for ``event`` starts."""
        return event.end - self.window_s

    def check(self, event: Event, visits: int, last_alert_time: float | None) -> Alert | None:
        """``visits``: the stranger's passages ending at or after ``since(event)``, this one
        included; ``last_alert_time``: the time of the previous such alert about them."""
        sid = event.stranger_id
        if sid is None or visits <= self.n:
            return None
        if last_alert_time is not None and event.end - last_alert_time < self.window_s:
            return None
        return Alert(
            id=alert_id("stranger_repeat", event.community, event.id),
            seq=0,
            community=event.community,
            gate=event.gate,
            kind="stranger_repeat",
            event_id=event.id,
            person_id=None,
            stranger_id=sid,
            plate=event.plate,
            time=event.end,
            message=(
                f"stranger {sid} seen {visits} times within {self.window_s / 60:.0f} min "
                f"(more than {self.n}), last at gate {event.gate}"
            ),
        )


class AlertDetectors:
    """Every rule over newly stored passages; what they raise is published on ``hub``.
    ``observe`` fits ``EventWriter(on_written=...)``; it runs on the writer's thread."""

    def __init__(
        self,
        hub: AlertHub,
        *,
        tailgating_window_s: float,
        stranger_repeat_n: int,
        stranger_repeat_window_s: float,
    ) -> None:
        self.hub = hub
        self.tailgating = TailgatingDetector(tailgating_window_s)
        self.stranger_repeat = StrangerRepeatRule(stranger_repeat_n, stranger_repeat_window_s)

    def observe(self, events: Sequence[Event]) -> list[Alert]:
        """Run the rules on stored ``events``; returns the alerts published (with ``seq``)."""
        published: list[Alert] = []
        store = self.hub.store
        for event in events:
            raised = self.tailgating.observe(event)
            watch = watchlist_alert(event)
            if watch is not None:
                raised.insert(0, watch)
            if event.stranger_id is not None:
                rule = self.stranger_repeat
                visits = store.count_stranger_visits(
                    event.community, event.stranger_id, rule.since(event)
                )
                last = store.last_alert_time(event.community, "stranger_repeat", event.stranger_id)
                repeat = rule.check(event, visits, last)
                if repeat is not None:
                    raised.append(repeat)
            published.extend(self.hub.publish(a) for a in raised)
        return published
