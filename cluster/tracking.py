"""Tracking per gate: the frames of one gate become tracks, and each track one decision.

A person standing at a door camera for three seconds produces dozens of frames, a car at a
barrier the same. ``GateTracker`` (one per gate, pure logic, no I/O, not thread-safe: one
caller per gate) associates each frame's detections with the gate's open tracks and decides
once per track instead of once per frame:

* **Association** (per kind: faces with face tracks, plates with plate tracks), one-to-one,
  greedy on the lowest cost. Faces: when both sides have an embedding, the pair is admissible
  iff the cosine (best of the track's mean embedding and its last one) is ``>= embed_min``,
  whatever the boxes do (a person who steps out of view and back stays one track), at cost
  ``1 - (IoU + cosine) / 2``; otherwise iff ``IoU >= iou_min``, at cost ``1 - IoU``. Plates
  likewise with the edit distance of the normalised plate text to the track's recent texts
  (admissible iff ``<= plate_max_distance``, similarity ``1 - d / (plate_max_distance + 1)``).
  So two faces (or plates) that disagree never join, however much their boxes overlap: pass
  ``embedding=None`` / ``plate_text=None`` for readings too poor to trust.
* **Votes**: each observation votes for its identity (``action`` OPEN/ALERT/STRANGER with
  ``identity`` set), for "usable but matched nobody" (``identity`` None, action not NONE), or
  not at all (action NONE: unusable). A track decides the first frame the same vote has
  ``votes_needed`` of its last ``vote_window`` observations (``native.vote_and_best``, which
  also picks the best shot: the first argmax of ``quality * size_px * det_score``).
* **Emission**: the decision is emitted once. Afterwards only an escalation is emitted, as an
  update (``is_update``): STRANGER → OPEN (a stranger turned out to be a resident) and
  anything → ALERT. ALERT (a watchlist hit) is emitted on the first frame that has it, without
  waiting for a second vote. A later vote for another resident, or a downgrade, is not sent;
  it shows in the finished track's vote summary. Each action is sent at most once per track.
* **End**: a track ends when it has been quiet for more than ``quiet_s``, when it is older than
  ``max_track_age_s`` (a new track then starts, and decides anew, if the object is still
  there), when the gate has ``max_tracks`` open tracks and a new one is needed (the longest
  quiet one not seen in this frame is evicted; when every open track is in this frame, the
  extra detection gets no track), or on ``close()``. ``update`` reports what ended before
  the frame was applied; ``expire(t)``, which the caller runs periodically, ends tracks of a
  silent gate.

Faults:

* **Duplicated seq** (one of the last ``dedup_frames`` seqs seen): ignored; the outcome repeats
  the earlier track ids, with no decisions and nothing finished (status ``"duplicate"``).
* **Out of order**: a frame at most ``reorder_window`` seqs behind the newest seen is applied
  to the open tracks (votes, best shot) but starts no track and does not move the clock
  (status ``"late"``; its unmatched observations get track id None). A frame further behind is
  ignored (``"stale"``), unless ``restart_after`` such frames arrive in a row with rising seqs:
  then the device restarted its counter; the tracker accepts the new numbering and carries on
  (``"restart"``), the open tracks untouched.
* **Clocks**: ``t`` may be any clock in seconds, but one clock for both ``update`` and
  ``expire`` (the server's clock when the frame arrived, which the capture servicer uses,
  however long the frame then queues; a device's ``captured_at`` works too). The tracker
  runs its own clock that only moves forward: each call advances it by
  ``max(0, t - previous t)``. A backwards jump therefore ends nothing (the clock stands still
  until ``t`` moves forward again from its new base); a forward jump of hours ends every open
  track, as a long silence would. The times in decisions and finished
  tracks are on this clock, which equals ``t`` until the first backwards jump.
* **Silent gate**: nothing ends until the next ``update`` or ``expire``.

Track ids are ``"<gate>-<counter>-<hash>"``: the gate-local counter plus a hash of the gate,
kind, start time and first seq, so replaying the same frames gives the same ids (idempotent
event ids) and ids from before a restart do not collide with new ones.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np

import native
from cluster.decide import Action
from smartgate.config import TrackingConfig

Kind = Literal["face", "plate"]
FrameStatus = Literal["ok", "late", "duplicate", "stale", "restart"]
EndReason = Literal["quiet", "max_age", "evicted", "closed"]

#: Vote keys below 0 (identities get 0, 1, ... per track).
UNMATCHED: Final = -1  # usable, matched nobody: votes for STRANGER
UNUSABLE: Final = -2  # no vote
#: Escalation order of emitted actions: only a higher rank is sent as an update.
_RANK: Final = {Action.STRANGER: 1, Action.OPEN: 2, Action.ALERT: 3}
_RECENT_TEXTS: Final = 4


@dataclass(frozen=True, eq=False)
class Observation:
    """One detection in one frame, with what the per-frame policy made of it.

    ``box`` ``(4,)`` ``[x1, y1, x2, y2]`` in pixels; ``embedding`` ``(d,)`` (faces; stored
    L2-normalised as float32) or None when the face is unusable; ``plate_text`` (plates;
    normalised: upper case, no spaces, ``·`` or ``-``) or None; ``det_score``, ``quality``
    (0..1) and ``size_px`` rank the best shot; ``identity`` is the matched person id or plate
    owner, None when nobody matched; ``action`` the per-frame policy's candidate (an
    ``Action`` or its name); ``score`` the match score. Bad values raise ``ValueError``.
    """

    kind: Kind
    box: np.ndarray
    det_score: float
    quality: float
    size_px: float
    embedding: np.ndarray | None = field(default=None, repr=False)
    plate_text: str | None = None
    identity: str | None = None
    action: Action = Action.NONE
    score: float = 0.0
    box_tuple: tuple[float, float, float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("face", "plate"):
            raise ValueError(f"kind must be 'face' or 'plate', got {self.kind!r}")
        box = np.array(self.box, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"box: expected shape (4,), got {box.shape}")
        if not np.isfinite(box).all():
            raise ValueError(f"box must be finite, got {box.tolist()}")
        box.flags.writeable = False
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "box_tuple", tuple(box.tolist()))
        action = self.action
        if isinstance(action, str):
            if action not in Action.__members__:
                raise ValueError(
                    f"action must be one of {list(Action.__members__)}, got {action!r}"
                )
            action = Action[action]
        object.__setattr__(self, "action", Action(action))
        for name in ("det_score", "quality", "size_px", "score"):
            object.__setattr__(self, name, float(getattr(self, name)))
        if self.embedding is not None:
            emb = np.array(self.embedding, dtype=np.float32).ravel()
            norm = float(np.linalg.norm(emb))
            if emb.size == 0 or not math.isfinite(norm) or norm == 0.0:
                raise ValueError("embedding must be a non-empty, finite, non-zero vector")
            emb /= norm
            emb.flags.writeable = False
            object.__setattr__(self, "embedding", emb)
        if self.plate_text is not None:
            text = "".join(ch for ch in self.plate_text.upper() if ch not in " ·-\t")
            object.__setattr__(self, "plate_text", text or None)


@dataclass(frozen=True)
class TrackDecision:
    """A decision to send for a track: the first one, or an escalation (``is_update``)."""

    track_id: str
    action: Action
    identity: str | None  # person id / plate owner; None for a stranger
    is_update: bool
    kind: Kind
    seq: int  # the frame that decided
    t: float  # the tracker's clock at that frame
    votes: int  # agreeing votes in the window (1 for an immediate ALERT)
    score: float  # the deciding observation's match score


@dataclass(frozen=True)
class FinishedTrack:
    """A track that ended: the event to record, with its best shot."""

    track_id: str
    kind: Kind
    start_t: float
    end_t: float  # time of the last observation (the tracker's clock)
    first_seq: int
    last_seq: int
    frames: int
    action: Action  # the last (highest) decision sent, NONE when none was
    identity: str | None
    score: float  # best match score among the observations that voted for the decision
    best_index: int  # index of the best shot among the track's observations (arrival order)
    best_seq: int
    best_observation: Observation
    votes: dict[str | None, int]  # identity (None: matched nobody) → votes over the whole track
    unusable: int  # observations that cast no vote
    decisions: int  # how many TrackDecisions were sent
    reason: EndReason


@dataclass(frozen=True)
class FrameOutcome:
    """What ``GateTracker.update`` made of one frame; per-observation tuples in input order."""

    seq: int
    status: FrameStatus
    track_ids: tuple[str | None, ...]
    emits: tuple[TrackDecision | None, ...]
    finished: list[FinishedTrack] = field(default_factory=list)

    @property
    def decisions(self) -> list[TrackDecision]:
        """The decisions to send for this frame."""
        return [e for e in self.emits if e is not None]


def edit_distance(a: str, b: str, cap: int | None = None) -> int:
    """Levenshtein distance of ``a`` and ``b``; with ``cap``, any value above it is ``cap + 1``."""
    if cap is not None and abs(len(a) - len(b)) > cap:
        return cap + 1
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if cap is not None and min(current) > cap:
            return cap + 1
        previous = current
    distance = previous[-1]
    return distance if cap is None else min(distance, cap + 1)


class _Track:
    """One open track: per-observation columns for the kernel, and association state."""

    def __init__(
        self, track_id: str, first: Observation, t: float, seq: int, capacity: int = 32
    ) -> None:
        self.track_id = track_id
        self.kind: Kind = first.kind
        self.start_t = self.last_t = t
        self.first_seq = self.last_seq = seq
        self.n = 0
        self.keys = np.empty(capacity, np.int64)
        self.actions = np.empty(capacity, np.int8)
        self.quality = np.empty(capacity, np.float32)
        self.size = np.empty(capacity, np.float32)
        self.det = np.empty(capacity, np.float32)
        self.scores = np.empty(capacity, np.float64)
        self.seqs = np.empty(capacity, np.int64)
        self.names: list[str] = []
        self.codes: dict[str, int] = {}
        self.box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
        self.embedding_sum: np.ndarray | None = None
        self.refs: np.ndarray | None = None  # (2, d) float32: mean embedding (unit), last one
        self.texts: deque[str] = deque(maxlen=_RECENT_TEXTS)
        self.best_index = -1
        self.best_observation = first  # replaced by the kernel's pick once it has voted
        self.emitted: Action | None = None
        self.emitted_identity: str | None = None
        self.emitted_key = UNUSABLE
        self.decisions = 0

    def key_of(self, obs: Observation) -> int:
        if obs.action is Action.NONE:
            return UNUSABLE
        if obs.identity is None:
            return UNMATCHED
        code = self.codes.get(obs.identity)
        if code is None:
            code = self.codes[obs.identity] = len(self.names)
            self.names.append(obs.identity)
        return code

    def append(self, obs: Observation, seq: int, t: float, late: bool) -> None:
        if self.n == len(self.keys):
            for name in ("keys", "actions", "quality", "size", "det", "scores", "seqs"):
                old = getattr(self, name)
                grown = np.empty(2 * len(old), old.dtype)
                grown[: self.n] = old
                setattr(self, name, grown)
        i = self.n
        self.keys[i] = self.key_of(obs)
        self.actions[i] = int(obs.action)
        self.quality[i] = obs.quality
        self.size[i] = obs.size_px
        self.det[i] = obs.det_score
        self.scores[i] = obs.score
        self.seqs[i] = seq
        self.n += 1
        self.first_seq = min(self.first_seq, seq)
        self.last_seq = max(self.last_seq, seq)
        if late:
            return  # a late frame votes but does not move the track's position or clock
        self.last_t = t
        self.box = obs.box_tuple
        if obs.embedding is not None:
            if self.embedding_sum is None:
                self.embedding_sum = obs.embedding.astype(np.float64)
            else:
                self.embedding_sum += obs.embedding
            mean = self.embedding_sum / np.linalg.norm(self.embedding_sum)
            self.refs = np.stack([mean.astype(np.float32), obs.embedding])
        if obs.plate_text is not None and (not self.texts or self.texts[-1] != obs.plate_text):
            self.texts.append(obs.plate_text)

    def vote(self, votes_needed: int, window: int) -> native.VoteResult:
        n = self.n
        return native.vote_and_best(
            self.keys[:n],
            self.actions[:n],
            self.quality[:n],
            self.size[:n],
            self.det[:n],
            votes_needed,
            window,
        )

    def finish(self, reason: EndReason) -> FinishedTrack:
        n = self.n
        keys = self.keys[:n]
        votes: dict[str | None, int] = {}
        for key, count in zip(*np.unique(keys[keys >= UNMATCHED], return_counts=True), strict=True):
            votes[self.names[key] if key >= 0 else None] = int(count)
        voted = self.scores[:n][keys == self.emitted_key]
        return FinishedTrack(
            track_id=self.track_id,
            kind=self.kind,
            start_t=self.start_t,
            end_t=self.last_t,
            first_seq=self.first_seq,
            last_seq=self.last_seq,
            frames=n,
            action=self.emitted or Action.NONE,
            identity=self.emitted_identity,
            score=float(voted.max()) if voted.size else 0.0,
            best_index=self.best_index,
            best_seq=int(self.seqs[self.best_index]),
            best_observation=self.best_observation,
            votes=votes,
            unusable=int((keys < UNMATCHED).sum()),
            decisions=self.decisions,
            reason=reason,
        )


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two ``[x1, y1, x2, y2]`` boxes (0 when the union is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = max(a[2] - a[0], 0) * max(a[3] - a[1], 0) + max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
    union -= inter
    return inter / union if union > 0 else 0.0


class GateTracker:
    """Tracks of one gate; see the module docstring for the rules and the fault handling."""

    def __init__(self, config: TrackingConfig | None = None, *, gate: str = "gate") -> None:
        self.config = config if config is not None else TrackingConfig()
        self.gate = gate
        self._tracks: dict[str, _Track] = {}  # in creation order
        self._counter = 0
        self._clock: float | None = None  # the forward-only clock
        self._raw_t: float | None = None  # the last t given
        self._last_seq: int | None = None
        self._recent: OrderedDict[int, FrameOutcome] = OrderedDict()
        self._stale_run = 0
        self._stale_seq = 0
        self._dim: int | None = None

    @property
    def open_tracks(self) -> list[str]:
        """Ids of the open tracks, oldest first."""
        return list(self._tracks)

    @property
    def clock(self) -> float | None:
        """The tracker's forward-only clock (None before the first call)."""
        return self._clock

    def update(self, t: float, seq: int, observations: Iterable[Observation]) -> FrameOutcome:
        """Apply one frame of the gate: ``t`` seconds, ``seq`` the device's frame number."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        seq = operator.index(seq)
        obs = list(observations)
        self._check(obs)
        status = self._classify(seq)
        none: tuple[None, ...] = (None,) * len(obs)
        if status == "duplicate":
            return FrameOutcome(seq, status, self._recent[seq].track_ids, none)
        if status == "stale":
            return FrameOutcome(seq, status, none, none)
        late = status == "late"
        finished: list[FinishedTrack] = []
        if late:  # an earlier frame has set the clock; a late one does not move it
            clock = t if self._clock is None else self._clock
        else:
            clock = self._advance(t)
            finished = self._end_tracks()
        assigned = self._associate(obs)
        track_ids: list[str | None] = [None] * len(obs)
        emits: list[TrackDecision | None] = [None] * len(obs)
        touched = {track.track_id for track in assigned.values()}
        for i, ob in enumerate(obs):
            track = assigned.get(i)
            if track is None:
                if late:
                    continue
                if len(self._tracks) >= self.config.max_tracks:
                    evicted = self._evict(touched)
                    if evicted is None:
                        continue  # every open track is in this frame: no room for another
                    finished.append(evicted)
                track = self._open(ob, clock, seq)
                touched.add(track.track_id)
            track_ids[i] = track.track_id
            emits[i] = self._observe(track, ob, seq, clock, late)
        outcome = FrameOutcome(seq, status, tuple(track_ids), tuple(emits), finished)
        self._recent[seq] = outcome
        while len(self._recent) > self.config.dedup_frames:
            self._recent.popitem(last=False)
        return outcome

    def expire(self, t: float) -> list[FinishedTrack]:
        """Advance the clock to ``t`` (same clock as ``update``) and end what is over."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"t must be finite, got {t}")
        self._advance(t)
        return self._end_tracks()

    def close(self) -> list[FinishedTrack]:
        """End every open track (the gate's stream closed)."""
        finished = [track.finish("closed") for track in self._tracks.values()]
        self._tracks.clear()
        return finished

    def forget(self, kind: Kind, is_identity: Callable[[str], bool]) -> list[str]:
        """Drop the open ``kind`` tracks with a vote for an identity ``is_identity`` picks (a
        person or vehicle removed meanwhile); they end unrecorded. Returns their ids."""
        gone = [
            tr.track_id
            for tr in self._tracks.values()
            if tr.kind == kind and any(is_identity(name) for name in tr.names)
        ]
        for track_id in gone:
            del self._tracks[track_id]
        return gone

    # -- internals --------------------------------------------------------------------------

    def _check(self, obs: list[Observation]) -> None:
        for ob in obs:
            if not isinstance(ob, Observation):
                raise TypeError(f"observations must be Observation, got {type(ob).__name__}")
            if ob.kind == "face" and ob.embedding is not None:
                if self._dim is None:
                    self._dim = ob.embedding.size
                elif ob.embedding.size != self._dim:
                    raise ValueError(
                        f"embedding: expected shape ({self._dim},) as before, "
                        f"got ({ob.embedding.size},)"
                    )

    def _classify(self, seq: int) -> FrameStatus:
        if self._last_seq is None or seq > self._last_seq:
            self._last_seq = seq
            self._stale_run = 0
            return "ok"
        if seq in self._recent:
            return "duplicate"
        if self._last_seq - seq <= self.config.reorder_window:
            self._stale_run = 0
            return "late"
        rising = self._stale_run > 0 and seq > self._stale_seq
        self._stale_run = self._stale_run + 1 if rising else 1
        self._stale_seq = seq
        if self._stale_run < self.config.restart_after:
            return "stale"
        self._recent.clear()
        self._last_seq = seq
        self._stale_run = 0
        return "restart"

    def _advance(self, t: float) -> float:
        if self._clock is None or self._raw_t is None:
            self._clock = t
        elif t > self._raw_t:
            self._clock += t - self._raw_t
        self._raw_t = t
        return self._clock

    def _end_tracks(self) -> list[FinishedTrack]:
        clock = self._clock
        if clock is None:
            return []
        ended: list[FinishedTrack] = []
        for track_id, track in list(self._tracks.items()):
            reason: EndReason | None = None
            if clock - track.last_t > self.config.quiet_s:
                reason = "quiet"
            elif clock - track.start_t > self.config.max_track_age_s:
                reason = "max_age"
            if reason is not None:
                ended.append(track.finish(reason))
                del self._tracks[track_id]
        return ended

    def _evict(self, keep: set[str]) -> FinishedTrack | None:
        """End the longest-quiet open track not in ``keep`` (on ties the oldest), if any."""
        candidates = [tr for tr in self._tracks.values() if tr.track_id not in keep]
        if not candidates:
            return None
        track = min(candidates, key=lambda tr: tr.last_t)
        del self._tracks[track.track_id]
        return track.finish("evicted")

    def _open(self, first: Observation, clock: float, seq: int) -> _Track:
        self._counter += 1
        digest = hashlib.blake2b(
            f"{self.gate}|{first.kind}|{clock:.6f}|{seq}".encode(), digest_size=4
        ).hexdigest()
        track = _Track(f"{self.gate}-{self._counter:06d}-{digest}", first, clock, seq)
        self._tracks[track.track_id] = track
        return track

    def _associate(self, obs: list[Observation]) -> dict[int, _Track]:
        """Observation index → open track, one-to-one, greedy on the lowest cost.

        Pairs are scored one by one (a gate has a handful of tracks and detections; numpy
        matrices cost more in overhead than they save here); ties go to the older track,
        then the earlier observation.
        """
        cfg = self.config
        cap = cfg.plate_max_distance
        embedded = [i for i, ob in enumerate(obs) if ob.kind == "face" and ob.embedding is not None]
        queries = np.stack([obs[i].embedding for i in embedded]) if embedded else None  # type: ignore[misc]
        column = {i: c for c, i in enumerate(embedded)}
        pairs: list[tuple[float, int, int]] = []
        for r, track in enumerate(self._tracks.values()):
            sims = None
            if track.refs is not None and queries is not None:
                sims = (track.refs @ queries.T).max(axis=0).tolist()
            for c, ob in enumerate(obs):
                if ob.kind != track.kind:
                    continue
                iou = box_iou(track.box, ob.box_tuple)
                similarity: float | None = None
                if sims is not None and c in column:
                    similarity = sims[column[c]]
                    admissible = similarity >= cfg.embed_min
                elif track.texts and ob.plate_text is not None:
                    distance = min(edit_distance(x, ob.plate_text, cap) for x in track.texts)
                    similarity = 1.0 - distance / (cap + 1)
                    admissible = distance <= cap
                else:
                    admissible = iou >= cfg.iou_min
                if admissible:
                    cost = 1.0 - iou if similarity is None else 1.0 - (iou + similarity) / 2
                    pairs.append((cost, r, c))
        pairs.sort()
        tracks = list(self._tracks.values())
        assigned: dict[int, _Track] = {}
        taken: set[int] = set()
        for _, r, c in pairs:
            if c not in assigned and r not in taken:
                assigned[c] = tracks[r]
                taken.add(r)
        return assigned

    def _observe(
        self, track: _Track, ob: Observation, seq: int, clock: float, late: bool
    ) -> TrackDecision | None:
        track.append(ob, seq, clock, late)
        result = track.vote(self.config.votes_needed, self.config.vote_window)
        if result.best_index == track.n - 1:
            # Only a new entry can beat the old best (ties keep the earliest), so the best shot
            # is either unchanged or ``ob``: no need to keep every observation alive.
            track.best_observation = ob
        track.best_index = result.best_index
        if ob.action is Action.ALERT and track.emitted is not Action.ALERT:
            return self._emit(track, Action.ALERT, track.keys[track.n - 1], ob, seq, clock, 1)
        if result.decided_action == 0:
            return None
        action = Action(result.decided_action)
        rank = _RANK.get(action, 0)
        if rank == 0 or (track.emitted is not None and rank <= _RANK[track.emitted]):
            return None
        return self._emit(track, action, result.decided_key, ob, seq, clock, result.agree_count)

    @staticmethod
    def _emit(
        track: _Track,
        action: Action,
        key: int,
        ob: Observation,
        seq: int,
        clock: float,
        votes: int,
    ) -> TrackDecision:
        identity = track.names[key] if key >= 0 else None
        decision = TrackDecision(
            track_id=track.track_id,
            action=action,
            identity=identity,
            is_update=track.emitted is not None,
            kind=track.kind,
            seq=seq,
            t=clock,
            votes=votes,
            score=ob.score,
        )
        track.emitted, track.emitted_identity, track.emitted_key = action, identity, int(key)
        track.decisions += 1
        return decision
