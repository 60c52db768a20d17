"""Domain values ↔ protobuf messages (the only module that knows both)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from cluster.engine import Lane, MatchedFace, MatchedPlate
from cluster.events.model import Alert, Event, Kind
from cluster.passages import TrackState
from indexer.types import Identification, Person, Role, Vehicle, VehicleMatch
from recognizer.faces.analyzer import FaceObservation
from smartgate.errors import InvalidInputError
from smartgate.v1 import capture_pb2, common_pb2, events_pb2

ROLE_TO_PB: dict[Role, common_pb2.Role] = {
    "resident": common_pb2.ROLE_RESIDENT,
    "visitor": common_pb2.ROLE_VISITOR,
    "watchlist": common_pb2.ROLE_WATCHLIST,
}
PB_TO_ROLE: dict[int, Role] = {v: k for k, v in ROLE_TO_PB.items()}


def timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def seconds(ts: Timestamp, present: bool) -> float | None:
    """``ts`` in seconds (None when absent); a timestamp out of protobuf's valid range (years
    1-9999, nanos below 1e9) is the caller's error."""
    if not present:
        return None
    try:
        return ts.ToNanoseconds() / 1e9
    except ValueError as exc:
        raise InvalidInputError(f"invalid timestamp: {exc}") from exc


def person_pb(p: Person) -> common_pb2.Person:
    return common_pb2.Person(
        community=p.community,
        person_id=p.person_id,
        name=p.name,
        role=ROLE_TO_PB[p.role],
        expires_at=timestamp(p.expires_at),
        created_at=timestamp(p.created_at),
        template_count=p.template_count,
    )


def match_pb(ident: Identification) -> common_pb2.Match | None:
    person = ident.candidate
    if person is None:
        return None
    return common_pb2.Match(
        community=person.community,
        person_id=person.person_id,
        name=person.name,
        role=ROLE_TO_PB[person.role],
        score=ident.score,
        runner_up=ident.runner_up,
        accepted=ident.accepted,
    )


def face_pb(face: FaceObservation, ident: Identification | None = None) -> common_pb2.Face:
    q = face.quality
    msg = common_pb2.Face(
        box=common_pb2.Box(
            x1=float(face.box[0]),
            y1=float(face.box[1]),
            x2=float(face.box[2]),
            y2=float(face.box[3]),
        ),
        score=face.score,
        landmarks=[common_pb2.Point(x=float(x), y=float(y)) for x, y in face.landmarks.tolist()],
        quality=common_pb2.Quality(
            score=q.score,
            size_px=q.size_px,
            sharpness=q.sharpness,
            usable=q.usable,
            reasons=list(q.reasons),
        ),
        liveness=face.liveness if face.liveness is not None else -1.0,
    )
    if ident is not None:
        m = match_pb(ident)
        if m is not None:
            msg.match.CopyFrom(m)
    return msg


def matched_faces_pb(faces: list[MatchedFace]) -> list[common_pb2.Face]:
    return [face_pb(m.face, m.identification) for m in faces]


def vehicle_pb(v: Vehicle) -> common_pb2.Vehicle:
    return common_pb2.Vehicle(
        community=v.community,
        plate=v.plate,
        role=ROLE_TO_PB[v.role],
        owner=v.owner,
        expires_at=timestamp(v.expires_at),
        created_at=timestamp(v.created_at),
    )


def plate_match_pb(m: VehicleMatch, now: float) -> common_pb2.PlateMatch:
    return common_pb2.PlateMatch(
        vehicle=vehicle_pb(m.vehicle),
        distance=m.distance,
        fuzzy=m.fuzzy,
        valid=m.vehicle.is_valid_at(now),
    )


def plate_pb(p: MatchedPlate, now: float) -> common_pb2.Plate:
    r = p.reading
    msg = common_pb2.Plate(
        text=r.text,
        raw_text=r.raw_text,
        score=r.score,
        color=str(r.color),
        format=str(r.format) if r.format is not None else "",
        valid=r.valid,
        reason=r.reason or "",
        corners=[common_pb2.Point(x=float(x), y=float(y)) for x, y in r.corners.tolist()],
        box=common_pb2.Box(
            x1=float(r.box[0]), y1=float(r.box[1]), x2=float(r.box[2]), y2=float(r.box[3])
        ),
        from_camera_crop=p.from_camera_crop,
    )
    if p.match is not None:
        msg.match.CopyFrom(plate_match_pb(p.match, now))
    return msg


KIND_TO_PB: dict[Kind, events_pb2.EventKind] = {
    "face": events_pb2.EVENT_KIND_FACE,
    "plate": events_pb2.EVENT_KIND_PLATE,
}
PB_TO_KIND: dict[int, Kind] = {v: k for k, v in KIND_TO_PB.items()}
ALERT_KIND_TO_PB = {
    "watchlist": events_pb2.ALERT_KIND_WATCHLIST,
    "stranger_repeat": events_pb2.ALERT_KIND_STRANGER_REPEAT,
    "tailgating": events_pb2.ALERT_KIND_TAILGATING,
}


def event_pb(e: Event) -> events_pb2.Event:
    return events_pb2.Event(
        id=e.id,
        community=e.community,
        gate=e.gate,
        device=e.device,
        kind=KIND_TO_PB[e.kind],
        action=e.action,
        person_id=e.person_id or "",
        stranger_id=e.stranger_id or "",
        plate=e.plate or "",
        score=e.score,
        quality=e.quality,
        liveness=e.liveness if e.liveness is not None else -1.0,
        start=timestamp(e.start),
        end=timestamp(e.end),
        role=e.role or "",
        track_id=e.track_id,
        has_thumbnail=e.has_thumbnail,
    )


def alert_pb(a: Alert) -> events_pb2.Alert:
    return events_pb2.Alert(
        id=a.id,
        seq=a.seq,
        community=a.community,
        gate=a.gate,
        kind=ALERT_KIND_TO_PB[a.kind],
        event_id=a.event_id or "",
        person_id=a.person_id or "",
        stranger_id=a.stranger_id or "",
        plate=a.plate or "",
        time=timestamp(a.time),
        message=a.message,
    )


def track_state_pb(t: TrackState) -> capture_pb2.TrackState:
    return capture_pb2.TrackState(
        track_id=t.track_id,
        kind=t.kind,
        action=capture_pb2.Action.Name(int(t.action))
        if t.action is not None
        else "ACTION_UNSPECIFIED",
        decided_now=t.decided_now,
        is_update=t.is_update,
        identity=t.identity or "",
        event_id=t.event_id,
    )


def lane_of(kind: int) -> Lane:
    """The engine's lane for a wire LaneKind (unspecified means a pedestrian lane)."""
    if kind == capture_pb2.LANE_KIND_UNSPECIFIED:
        return Lane.PEDESTRIAN
    try:
        return Lane(kind)
    except ValueError as exc:
        raise InvalidInputError(f"unknown lane kind {kind}") from exc
