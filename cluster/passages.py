"""Passages: the frames of each gate become tracks, each track one decision and one event.

``Passages`` sits between the engine (one frame → faces and plates with their matches) and the
event log. For a camera stream it feeds every frame's faces and plates to the gate's
``GateTracker``; the tracker says which track each belongs to and when a track's decision is
certain (sent once, escalations as updates); when a track ends, one ``Event`` is written with
its best-shot thumbnail and, for an unmatched face, a stranger pseudo-identity. A watchlist hit
raises its alert the moment the track decides ALERT, not when the passage ends.

Snapshot cameras (``Capture.Submit``) send one frame per passage: each such frame is a passage
of its own.

Threading: one lock per gate (trackers are not thread-safe); the expiry thread ends the tracks
of silent gates. Event writes go through the bounded, non-blocking ``EventWriter``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cluster.decide import Action
from cluster.engine import FrameResult, MatchedFace, MatchedPlate
from cluster.events.alerts import watchlist_alert
from cluster.events.model import Event, event_id, make_event
from cluster.events.service import EventLog
from cluster.gatestate import RedisGateState, dumps
from cluster.thumbnails import FACE_MARGIN, crop_box, encode_thumbnail, plate_thumbnail
from cluster.tracking import FinishedTrack, GateTracker, Observation, TrackDecision
from indexer.strangers import StrangerBook, StrangerIndex
from recognizer.faces.analyzer import searched_whole_frame
from recognizer.faces.carry import (
    Carried,
    CarryLedger,
    CarryOffer,
    CarryPolicy,
    View,
    merge_view,
)
from smartgate.config import TrackingConfig
from smartgate.errors import UnavailableError

log = logging.getLogger(__name__)

STRANGERS_DIR = "strangers"
UNKNOWN_DEVICE = "unknown"  # events name a device; frames without a device id get this


@dataclass(frozen=True)
class TrackState:
    """One face or plate of a frame in terms of its passage."""

    track_id: str
    kind: str
    event_id: str
    action: Action | None  # the track's decision so far (None: undecided)
    decided_now: bool = False
    is_update: bool = False
    identity: str | None = None


@dataclass(frozen=True)
class PassageOutcome:
    """What a frame means for the gate: the action to take now and the tracks it touched."""

    action: Action
    reason: str
    tracks: list[TrackState]


@dataclass
class _Best:
    """The best shot of an open track so far, with what the event needs from it.

    A face's shot is kept as its cut ``crop`` ``(h, w, 3)`` uint8 BGR and shrunk and encoded
    only when the passage needs the JPEG (``jpeg``: its event, or the gate's shared state).
    While a person walks towards the camera most frames improve on the best shot, and each
    encode costs ~0.4 ms of the capture path."""

    rank: float
    thumbnail: bytes
    liveness: float | None
    plate: str | None
    role: str | None
    crop: np.ndarray | None = None

    def jpeg(self) -> bytes:
        """The best-shot JPEG (encoded once; empty bytes when there is no shot)."""
        if not self.thumbnail and self.crop is not None:
            self.thumbnail = encode_thumbnail(self.crop)
        self.crop = None
        return self.thumbnail

    def __getstate__(self) -> dict[str, object]:
        self.jpeg()  # shared as its JPEG, not as pixels
        return dict(self.__dict__)


@dataclass
class _Gate:
    tracker: GateTracker
    device: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    starts: dict[str, float] = field(default_factory=dict)  # track id → start (wall clock)
    decided: dict[str, Action] = field(default_factory=dict)  # track id → last decision
    best: dict[str, _Best] = field(default_factory=dict)
    # Decided faces of the latest frame, for the next frames to reuse (replaced whole, read
    # without the lock).
    carried: tuple[Carried, ...] = ()
    # Where the gate's faces were last seen, and how many frames were offered a search around
    # them since its last whole-frame search (carry_offer).
    view: View | None = None
    region_streak: int = 0


@dataclass
class GateSnapshot:
    """What a gate's open passages need to continue on another node (``cluster.gatestate``)."""

    tracker: GateTracker
    device: str
    starts: dict[str, float]
    decided: dict[str, Action]
    best: dict[str, _Best]


class Passages:
    def __init__(
        self,
        events: EventLog,
        strangers: StrangerBook,
        config: TrackingConfig,
        strangers_dir: Path,
        *,
        expire_interval_s: float = 0.25,
        shared: RedisGateState | None = None,
    ) -> None:
        self.events = events
        self.shared = shared
        self.strangers = strangers
        self.config = config
        self.strangers_dir = strangers_dir
        self._gates: dict[tuple[str, str], _Gate] = {}
        self.carry_policy = CarryPolicy(
            config.carry_frames,
            config.carry_iou,
            config.carry_max_age_s,
            region_margin=config.carry_region_margin,
            lend_liveness=config.carry_liveness,
            still_diff=config.still_scene_diff,
            still_max_age_s=config.still_scene_max_age_s,
            region_frames=config.region_frames,
        )
        self.carry_ledger = CarryLedger(config.carry_frames)
        self._gates_lock = threading.Lock()
        # Receive times of each gate's frames still being recognised (``received``).
        self._in_flight: dict[tuple[str, str], list[float]] = {}
        self._flight_lock = threading.Lock()
        self._strangers_dirty = False
        self._stop = threading.Event()
        self._expiry = threading.Thread(
            target=self._expire_loop, args=(expire_interval_s,), name="passages", daemon=True
        )
        self._expiry.start()

    @classmethod
    def open(cls, data_dir: Path, events: EventLog, config: TrackingConfig, dim: int) -> Passages:
        strangers_dir = data_dir / STRANGERS_DIR
        strangers = StrangerIndex.load(strangers_dir, dim)
        return cls(events, strangers, config, strangers_dir)

    # -- capture ---------------------------------------------------------------------------

    def received(self, community: str, gate: str, t: float) -> None:
        """A frame of ``gate`` received at ``t`` (the ``t`` it will be observed with) is being
        recognised. Until it is observed or ``abandoned``, ``expire`` ends none of the gate's
        tracks on a silence after ``t``: on a node past saturation frames queue for seconds,
        and their passages must not end (and be decided anew) while the frames that continue
        them wait."""
        with self._flight_lock:
            self._in_flight.setdefault((community, gate), []).append(t)

    def abandoned(self, community: str, gate: str, t: float) -> None:
        """The frame ``received`` at ``t`` will not be observed (shed, refused or failed)."""
        with self._flight_lock:
            self._land((community, gate), t)

    def frames_in_flight(self) -> int:
        """How many ``received`` frames are neither observed nor abandoned yet."""
        with self._flight_lock:
            return sum(len(times) for times in self._in_flight.values())

    def observe(
        self,
        community: str,
        gate: str,
        device: str,
        seq: int,
        t: float,
        result: FrameResult,
    ) -> PassageOutcome:
        """Feed one camera frame (already recognised) to its gate's tracker. ``t``: when the
        frame was received (one clock for every frame of the gate and for ``expire``)."""
        observations, sources = _observations(result)
        g = self._gate(community, gate)
        with g.lock:
            g.device = device or g.device or UNKNOWN_DEVICE
            outcome = g.tracker.update(t, seq, observations)
            with self._flight_lock:  # under the gate's lock: no expiry between update and this
                self._land((community, gate), t)
            self._finish(community, gate, g, outcome.finished)
            states: list[TrackState] = []
            emitted: list[TrackDecision] = []
            for obs, source, track_id, emit in zip(
                observations, sources, outcome.track_ids, outcome.emits, strict=True
            ):
                if track_id is None:
                    continue
                start = g.starts.setdefault(track_id, t)
                self._keep_best(g, track_id, obs, source, result)
                if emit is not None:
                    g.decided[track_id] = emit.action
                    emitted.append(emit)
                states.append(
                    TrackState(
                        track_id=track_id,
                        kind=obs.kind,
                        event_id=event_id(community, gate, track_id, start),
                        action=g.decided.get(track_id),
                        decided_now=emit is not None,
                        is_update=bool(emit and emit.is_update),
                        identity=emit.identity if emit is not None else None,
                    )
                )
            for emit in emitted:
                if emit.action == Action.ALERT:
                    self._alert_now(community, gate, g, emit, t)
            if self.carry_policy.max_carry > 0:
                g.carried = _carried(sources, outcome.track_ids, g.decided, t, self.carry_ledger)
                boxes = np.array([m.face.box for m in result.faces], dtype=np.float64)
                sizes = np.array([m.face.quality.size_px for m in result.faces])
                whole = searched_whole_frame(result.timings_ms)
                g.view = merge_view(g.view, boxes, t, whole, sizes, result.sketch)
            self._share(community, gate, g)
        action, reason = _frame_action(emitted, result, outcome.status)
        return PassageOutcome(action, reason, states)

    def carry_offer(self, community: str, gate: str, t: float) -> CarryOffer | None:
        """What a new frame of ``gate`` received at ``t`` may reuse (None: nothing): the
        gate's decided faces and its view, and whether the frame may be searched only around
        that."""
        policy = self.carry_policy
        if policy.max_carry <= 0:
            return None
        with self._gates_lock:
            g = self._gates.get((community, gate))
        if g is None:  # the gate's first frame: searched whole, and sketched when that is used
            return CarryOffer((), t, policy, self.carry_ledger) if policy.still_diff > 0 else None
        # Counted as frames are offered, not as they are tracked: frames of a gate are
        # recognised in parallel, and a region search cannot see what came into view outside.
        # A view with no faces is kept only for its sketch (an empty scene that stays still
        # is not searched: recognizer.faces.scene).
        with g.lock:
            view = g.view
            if view is not None and (
                abs(t - view.t) > policy.max_age_s
                or (len(view.boxes) == 0 and (view.sketch is None or policy.still_diff <= 0))
            ):
                view = None
            region = view is not None and g.region_streak < policy.region_frames
            g.region_streak = g.region_streak + 1 if region else 0
            faces = g.carried
        if not faces and view is None and policy.still_diff <= 0:
            return None
        return CarryOffer(faces, t, policy, self.carry_ledger, view, region)

    def snapshot(
        self, community: str, gate: str, device: str, t: float, result: FrameResult
    ) -> None:
        """A snapshot camera's frame: each face and plate in it is a passage of one frame."""
        observations, sources = _observations(result)
        for i, (obs, source) in enumerate(zip(observations, sources, strict=True)):
            if obs.action == Action.NONE:
                continue
            track_id = f"{gate}-snap-{int(t * 1000)}-{i}"
            best = _best_of(obs, source, result)
            self._record(
                community,
                gate,
                device,
                track_id,
                t,
                t,
                obs.kind,
                obs.action,
                obs.identity,
                obs.score,
                obs.quality,
                best,
                obs.embedding,
            )

    def forget(self, community: str, kind: str, is_identity: Callable[[str], bool]) -> int:
        """Drop what the gates of ``community`` hold of a person (``kind`` ``"face"``) or vehicle
        (``"plate"``) removed elsewhere, ``is_identity`` picking its identity: the open tracks
        that voted for it (they end unrecorded) and, for faces, every face lent to the next
        frames (those are embedded afresh). Returns how many tracks went
        (``cluster.events.index_changes``)."""
        with self._gates_lock:
            gates = [(gate, g) for (c, gate), g in self._gates.items() if c == community]
        dropped = 0
        for gate, g in gates:
            with g.lock:
                gone = g.tracker.forget("face" if kind == "face" else "plate", is_identity)
                for track_id in gone:
                    g.starts.pop(track_id, None)
                    g.decided.pop(track_id, None)
                    g.best.pop(track_id, None)
                if kind == "face":
                    g.carried = ()
                if gone:
                    self._share(community, gate, g)
                dropped += len(gone)
        return dropped

    # -- ending tracks -----------------------------------------------------------------------

    def expire(self, t: float | None = None) -> int:
        """End the tracks of gates that went quiet; returns how many passages were recorded."""
        t = time.time() if t is None else t
        with self._gates_lock:
            gates = list(self._gates.items())
        ended = 0
        for (community, gate), g in gates:
            with g.lock:
                finished = g.tracker.expire(self._quiet_until(community, gate, t))
                self._finish(community, gate, g, finished)
                ended += len(finished)
                if finished:
                    self._share(community, gate, g)
        return ended

    def close(self) -> None:
        """End every open track (their events are written), save the strangers index."""
        self._stop.set()
        self._expiry.join(timeout=5)
        with self._gates_lock:
            gates = list(self._gates.items())
        for (community, gate), g in gates:
            with g.lock:
                self._finish(community, gate, g, g.tracker.close())
                self._share(community, gate, g)
        self.save_strangers()
        if self.shared is not None:
            self.shared.close()

    def save_strangers(self) -> None:
        if self._strangers_dirty:
            self._strangers_dirty = False
            self.strangers.save(self.strangers_dir)

    # -- internals -------------------------------------------------------------------------

    def _land(self, key: tuple[str, str], t: float) -> None:
        """Forget one in-flight frame received at ``t`` (none: nothing); under ``_flight_lock``."""
        times = self._in_flight.get(key)
        if times is not None and t in times:
            times.remove(t)
            if not times:
                del self._in_flight[key]

    def _quiet_until(self, community: str, gate: str, now: float) -> float:
        """The time up to which ``gate`` is known to be silent: ``now``, or the receive time of
        its oldest frame still being recognised. A frame in flight for longer than a track may
        live (``max_track_age_s``) is taken for lost (a stream cut mid-way) and forgotten."""
        key = (community, gate)
        with self._flight_lock:
            times = self._in_flight.get(key)
            if not times:
                return now
            alive = [x for x in times if now - x <= self.config.max_track_age_s]
            if len(alive) < len(times):
                if alive:
                    self._in_flight[key] = alive
                else:
                    del self._in_flight[key]
            return min([now, *alive])

    def _gate(self, community: str, gate: str) -> _Gate:
        key = (community, gate)
        with self._gates_lock:
            g = self._gates.get(key)
            if g is None:
                g = self._restore(community, gate) or _Gate(GateTracker(self.config, gate=gate))
                self._gates[key] = g
            return g

    def _restore(self, community: str, gate: str) -> _Gate | None:
        """The gate as another node (or this one, before a crash) left it in Redis."""
        if self.shared is None:
            return None
        state = self.shared.load(community, gate)
        if not isinstance(state, GateSnapshot):
            return None
        state.tracker.config = self.config
        log.info("gate %s/%s resumed with %d open passages", community, gate, len(state.starts))
        return _Gate(
            state.tracker, state.device, starts=state.starts, decided=state.decided, best=state.best
        )

    def _share(self, community: str, gate: str, g: _Gate) -> None:
        """Queue the gate's state for Redis (pickled later, on the writer thread)."""
        if self.shared is None:
            return

        def state() -> bytes:
            with g.lock:
                return dumps(GateSnapshot(g.tracker, g.device, g.starts, g.decided, g.best))

        self.shared.save(community, gate, state)

    def _keep_best(
        self, g: _Gate, track_id: str, obs: Observation, source: object, result: FrameResult
    ) -> None:
        # Same ranking as the tracker's best-shot kernel (quality × size × detection score,
        # first maximum wins), so the thumbnail is the frame the event's figures come from.
        rank = obs.quality * obs.size_px * obs.det_score
        current = g.best.get(track_id)
        if current is None or rank > current.rank:
            g.best[track_id] = _best_of(obs, source, result)

    def _finish(self, community: str, gate: str, g: _Gate, finished: list[FinishedTrack]) -> None:
        for track in finished:
            start = g.starts.pop(track.track_id, track.start_t)
            g.decided.pop(track.track_id, None)
            best = g.best.pop(track.track_id, None)
            obs = track.best_observation
            self._record(
                community,
                gate,
                g.device,
                track.track_id,
                start,
                max(start, track.end_t),
                track.kind,
                track.action,
                track.identity,
                track.score,
                obs.quality,
                best,
                obs.embedding,
            )

    def _record(
        self,
        community: str,
        gate: str,
        device: str,
        track_id: str,
        start: float,
        end: float,
        kind: str,
        action: Action,
        identity: str | None,
        score: float,
        quality: float,
        best: _Best | None,
        embedding: np.ndarray | None,
    ) -> None:
        stranger_id = None
        if kind == "face" and action == Action.STRANGER and embedding is not None:
            try:
                stranger_id, _, _ = self.strangers.assign(community, embedding, end)
                self._strangers_dirty = True
            except UnavailableError as exc:  # cluster mode: the index actor did not come back
                log.warning(
                    "passage %s of %s/%s kept without a stranger id: %s",
                    track_id,
                    community,
                    gate,
                    exc,
                )
        event = make_event(
            community=community,
            gate=gate,
            device=device or UNKNOWN_DEVICE,
            kind=kind,  # type: ignore[arg-type]
            action=action.name,  # type: ignore[arg-type]
            track_id=track_id,
            start=start,
            end=end,
            score=score,
            quality=quality,
            liveness=best.liveness if best else None,
            person_id=identity if kind == "face" and action != Action.STRANGER else None,
            stranger_id=stranger_id,
            plate=(best.plate if best else None) if kind == "plate" else None,
            role=best.role if best else None,
        )
        if not self.events.writer.submit(event, (best.jpeg() or None) if best else None):
            log.warning("event %s dropped: the event queue is full", event.id)

    def _alert_now(
        self, community: str, gate: str, g: _Gate, emit: TrackDecision, t: float
    ) -> None:
        start = g.starts.get(emit.track_id, t)
        best = g.best.get(emit.track_id)
        provisional = Event(
            id=event_id(community, gate, emit.track_id, start),
            community=community,
            gate=gate,
            device=g.device,
            kind=emit.kind,
            action="ALERT",
            person_id=emit.identity if emit.kind == "face" else None,
            stranger_id=None,
            plate=(best.plate if best else emit.identity) if emit.kind == "plate" else None,
            score=emit.score,
            quality=0.0,
            liveness=None,
            start=start,
            end=t,
            role="watchlist",
            track_id=emit.track_id,
        )
        alert = watchlist_alert(provisional)
        if alert is not None:
            self.events.hub.publish(alert)

    def _expire_loop(self, interval_s: float) -> None:
        last_save = time.monotonic()
        while not self._stop.wait(interval_s):
            try:
                self.expire()
                if time.monotonic() - last_save > 30.0:
                    self.save_strangers()
                    last_save = time.monotonic()
            except Exception:
                log.exception("expiring passages failed")


# -- frame → observations ------------------------------------------------------------------

#: Decisions after which a face's embedding may be carried: the only escalation left from them
#: (to ALERT) is sent on the first fresh frame that has it. A STRANGER track keeps embedding
#: every frame, so it can still turn out to be a resident; it lends only its liveness (which
#: is reported, never decides), as an undecided track does (its frames still vote afresh).
_CARRY_AFTER = (Action.OPEN, Action.ALERT)


def _carried(
    sources: Sequence[MatchedFace | MatchedPlate],
    track_ids: Sequence[str | None],
    decided: dict[str, Action],
    t: float,
    ledger: CarryLedger,
) -> tuple[Carried, ...]:
    out = []
    for source, track_id in zip(sources, track_ids, strict=True):
        if not isinstance(source, MatchedFace) or track_id is None:
            continue
        face = source.face
        action = decided.get(track_id)
        if action in _CARRY_AFTER and face.embedding is not None:
            origin = face.carry_origin if face.carried else ledger.new_origin()
            out.append(Carried(face.box, face.embedding, face.liveness, origin, t))
        elif face.liveness is not None:
            # carry_origin is set on a fresh embedding only when its liveness was lent.
            origin = face.carry_origin or ledger.new_origin()
            out.append(Carried(face.box, None, face.liveness, origin, t))
    return tuple(out)


def _observations(
    result: FrameResult,
) -> tuple[list[Observation], list[MatchedFace | MatchedPlate]]:
    observations: list[Observation] = []
    sources: list[MatchedFace | MatchedPlate] = []
    for verdict, m in zip(result.face_verdicts, result.faces, strict=True):
        face = m.face
        observations.append(
            Observation(
                kind="face",
                box=face.box,
                det_score=face.score,
                quality=face.quality.score,
                size_px=face.quality.size_px,
                embedding=face.embedding if face.quality.usable else None,
                identity=verdict.identity if verdict.accepted else None,
                # A carried embedding repeats an earlier frame's: it associates, never votes.
                action=Action.NONE if face.carried else verdict.action,
                score=m.identification.score if m.identification else 0.0,
            )
        )
        sources.append(m)
    for verdict, p in zip(result.plate_verdicts, result.plates, strict=True):
        r = p.reading
        observations.append(
            Observation(
                kind="plate",
                box=r.box,
                det_score=r.detection_score if r.detection_score is not None else r.score,
                quality=r.score,
                size_px=float(r.box[2] - r.box[0]),
                plate_text=r.text if p.usable else None,
                identity=verdict.identity if verdict.accepted else None,
                action=verdict.action,
                score=1.0 - (p.match.distance if p.match else 0.0),
            )
        )
        sources.append(p)
    return observations, sources


def _best_of(obs: Observation, source: object, result: FrameResult) -> _Best:
    """The best shot of a track from this frame: the thumbnail a cluster worker cut already,
    else cut here from the frame's pixels."""
    rank = obs.quality * obs.size_px * obs.det_score
    image = result.image
    if isinstance(source, MatchedFace):
        crop = None  # cut now (the frame goes), encoded when needed
        if not source.thumbnail and image is not None:
            crop = crop_box(image.scaled, source.face.box, image.scale, FACE_MARGIN).copy()
        role = None
        if source.identification and source.identification.person:
            role = source.identification.person.role
        return _Best(rank, source.thumbnail, source.face.liveness, None, role, crop)
    assert isinstance(source, MatchedPlate)
    thumbnail = source.thumbnail
    if not thumbnail and image is not None:
        thumbnail = plate_thumbnail(image.full(), source.reading.box)
    role = source.match.vehicle.role if source.match else None
    return _Best(rank, thumbnail, None, source.reading.text, role)


_PRIORITY = {Action.ALERT: 3, Action.OPEN: 2, Action.STRANGER: 1}


def _frame_action(
    emitted: list[TrackDecision], result: FrameResult, status: str
) -> tuple[Action, str]:
    """The action to take on this frame: the most urgent decision a track reached now."""
    if not emitted:
        if status in ("duplicate", "stale"):
            return Action.NONE, f"{status} frame ignored"
        if result.faces or result.plates:
            return Action.NONE, f"{result.reason} (passage decided earlier or not yet certain)"
        return Action.NONE, result.reason
    top = max(emitted, key=lambda e: _PRIORITY.get(e.action, 0))
    what = top.identity or "unknown"
    update = " (update)" if top.is_update else ""
    return top.action, f"{top.action.name} for {top.kind} {what}{update}: {result.reason}"
