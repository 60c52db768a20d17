"""gRPC servicers: unpack requests, call the engine, pack replies, map errors."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc

from cluster import convert
from cluster.engine import Engine, FrameResult, Lane
from cluster.node import Node
from cluster.status import abort, status_code, status_message
from indexer.types import Role
from smartgate.errors import AlreadyExistsError, InvalidInputError, NotFoundError, SmartgateError
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    events_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
MAX_TOP_K = 100


class CaptureServicer(capture_pb2_grpc.CaptureServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.engine = node.engine

    def _recognise(self, frame: capture_pb2.Frame, now: float) -> FrameResult:
        return self.engine.process_frame(
            frame.community,
            frame.image,
            now,
            lane=lane_of(frame.lane),
            plate_crop=frame.plate_crop,
        )

    @staticmethod
    def _decision(
        frame: capture_pb2.Frame, result: FrameResult, now: float, action: int, reason: str
    ) -> capture_pb2.Decision:
        decision = capture_pb2.Decision(
            seq=frame.seq,
            community=frame.community,
            gate=frame.gate,
            action=capture_pb2.Action.Name(action),
            frame_action=capture_pb2.Action.Name(int(result.action)),
            faces=convert.matched_faces_pb(result.faces),
            plates=[convert.plate_pb(p, now) for p in result.plates],
            reason=reason,
        )
        decision.timings_ms.update(result.timings_ms)
        return decision

    def Submit(  # noqa: N802 (gRPC method name)
        self, request: capture_pb2.Frame, context: grpc.ServicerContext
    ) -> capture_pb2.Decision:
        received = time.perf_counter()
        try:
            now = time.time()
            result = self._recognise(request, now)
            started = time.perf_counter()
            self.node.passages.snapshot(
                request.community, request.gate, request.device, now, result
            )
            result.timings_ms["track"] = (time.perf_counter() - started) * 1e3
            decision = self._decision(request, result, now, int(result.action), result.reason)
            decision.timings_ms["total"] = (time.perf_counter() - received) * 1e3
            return decision
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def Stream(  # noqa: N802
        self, request_iterator: Iterator[capture_pb2.Frame], context: grpc.ServicerContext
    ) -> Iterator[capture_pb2.Decision]:
        for frame in request_iterator:
            received = time.perf_counter()
            try:
                yield self._stream_decision(frame, received)
            except Exception as exc:  # one bad frame never ends the stream
                _log_unexpected(exc)
                yield capture_pb2.Decision(
                    seq=frame.seq,
                    community=frame.community,
                    gate=frame.gate,
                    action=capture_pb2.ACTION_NONE,
                    frame_action=capture_pb2.ACTION_NONE,
                    status=common_pb2.ItemStatus(
                        code=status_code(exc).value[0], message=status_message(exc)
                    ),
                    reason="frame rejected",
                )

    def _stream_decision(self, frame: capture_pb2.Frame, received: float) -> capture_pb2.Decision:
        now = time.time()
        result = self._recognise(frame, now)
        started = time.perf_counter()
        outcome = self.node.passages.observe(
            frame.community, frame.gate, frame.device, frame.seq, now, result
        )
        result.timings_ms["track"] = (time.perf_counter() - started) * 1e3
        decision = self._decision(frame, result, now, int(outcome.action), outcome.reason)
        decision.tracks.extend(convert.track_state_pb(t) for t in outcome.tracks)
        decision.timings_ms["total"] = (time.perf_counter() - received) * 1e3
        return decision


def lane_of(kind: int) -> Lane:
    """The engine's lane for a wire LaneKind (unspecified means a pedestrian lane)."""
    if kind == capture_pb2.LANE_KIND_UNSPECIFIED:
        return Lane.PEDESTRIAN
    try:
        return Lane(kind)
    except ValueError as exc:
        raise InvalidInputError(f"unknown lane kind {kind}") from exc


def _role(value: int, default: int = common_pb2.ROLE_RESIDENT) -> Role:
    role = convert.PB_TO_ROLE.get(value or default)
    if role is None:
        raise InvalidInputError(f"unknown role {value}")
    return role


class RegistryServicer(registry_pb2_grpc.RegistryServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.engine = node.engine

    def CreateCommunity(  # noqa: N802
        self, request: registry_pb2.CreateCommunityRequest, context: grpc.ServicerContext
    ) -> registry_pb2.CreateCommunityResponse:
        try:
            try:
                self.engine.registry.create_community(request.community)
                created = True
            except AlreadyExistsError:
                created = False
            return registry_pb2.CreateCommunityResponse(
                community=request.community, created=created
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def ListCommunities(  # noqa: N802
        self, request: registry_pb2.ListCommunitiesRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListCommunitiesResponse:
        return registry_pb2.ListCommunitiesResponse(
            communities=list(self.engine.registry.communities())
        )

    def EnrollPerson(  # noqa: N802
        self, request: registry_pb2.EnrollPersonRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollPersonResponse:
        try:
            role = _role(request.role)
            person, faces = self.engine.enroll(
                request.community,
                request.person_id,
                list(request.images),
                name=request.name,
                role=role,
                expires_at=convert.seconds(request.expires_at, request.HasField("expires_at")),
                replace=request.replace,
            )
            return registry_pb2.EnrollPersonResponse(
                person=convert.person_pb(person), faces=[convert.face_pb(f) for f in faces]
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def RemovePerson(  # noqa: N802
        self, request: registry_pb2.RemovePersonRequest, context: grpc.ServicerContext
    ) -> registry_pb2.RemovePersonResponse:
        try:
            removed = self.engine.registry.remove(request.community, request.person_id)
            return registry_pb2.RemovePersonResponse(templates_removed=removed)
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def ListPersons(  # noqa: N802
        self, request: registry_pb2.ListPersonsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListPersonsResponse:
        try:
            size = _page_size(request.page_size)
            role = _role(request.role) if request.role else None
            persons = self.engine.registry.list_persons(
                request.community, role=role, limit=size + 1, after=request.page_token or None
            )
            page = persons[:size]
            token = page[-1].person_id if len(persons) > size else ""
            return registry_pb2.ListPersonsResponse(
                persons=[convert.person_pb(p) for p in page], next_page_token=token
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def AddVehicle(  # noqa: N802
        self, request: registry_pb2.AddVehicleRequest, context: grpc.ServicerContext
    ) -> common_pb2.Vehicle:
        try:
            vehicle = self.engine.vehicles.add(
                request.community,
                request.plate,
                role=_role(request.role),
                owner=request.owner,
                expires_at=convert.seconds(request.expires_at, request.HasField("expires_at")),
                replace=request.replace,
            )
            return convert.vehicle_pb(vehicle)
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def RemoveVehicle(  # noqa: N802
        self, request: registry_pb2.RemoveVehicleRequest, context: grpc.ServicerContext
    ) -> common_pb2.Vehicle:
        try:
            return convert.vehicle_pb(self.engine.vehicles.remove(request.community, request.plate))
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def ListVehicles(  # noqa: N802
        self, request: registry_pb2.ListVehiclesRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListVehiclesResponse:
        try:
            size = _page_size(request.page_size)
            role = _role(request.role) if request.role else None
            vehicles = self.engine.vehicles.list(
                request.community, role=role, limit=size + 1, after=request.page_token or None
            )
            page = vehicles[:size]
            token = page[-1].plate if len(vehicles) > size else ""
            return registry_pb2.ListVehiclesResponse(
                vehicles=[convert.vehicle_pb(v) for v in page], next_page_token=token
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)


def _page_size(requested: int) -> int:
    size = requested or 100
    if size > MAX_PAGE_SIZE:
        raise InvalidInputError(f"page_size is at most {MAX_PAGE_SIZE}, got {size}")
    return size


class SearchServicer(search_pb2_grpc.SearchServicer):
    def __init__(self, node: Node) -> None:
        self.node = node
        self.engine = node.engine

    def SearchFace(  # noqa: N802
        self, request: search_pb2.SearchFaceRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchFaceResponse:
        try:
            top_k = request.top_k or 5
            if top_k > MAX_TOP_K:
                raise InvalidInputError(f"top_k is at most {MAX_TOP_K}, got {top_k}")
            face, hits = self.engine.search_face(list(request.communities), request.image, top_k)
            return search_pb2.SearchFaceResponse(
                face=convert.face_pb(face),
                hits=[
                    search_pb2.SearchHit(person=convert.person_pb(h.person), score=h.score)
                    for h in hits
                ],
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def SearchPlate(  # noqa: N802
        self, request: search_pb2.SearchPlateRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchPlateResponse:
        try:
            limit = request.limit or 10
            if limit > MAX_TOP_K:
                raise InvalidInputError(f"limit is at most {MAX_TOP_K}, got {limit}")
            if not request.communities:
                raise InvalidInputError("name at least one community to search")
            hits = self.engine.vehicles.search(
                list(request.communities),
                request.plate,
                fuzzy=request.fuzzy,
                max_distance=request.max_distance or self.engine.config.plates.max_distance,
                limit=limit,
            )
            now = time.time()
            return search_pb2.SearchPlateResponse(
                hits=[convert.plate_match_pb(h, now) for h in hits]
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def QueryEvents(  # noqa: N802
        self, request: events_pb2.QueryEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.QueryEventsResponse:
        try:
            _known_community(self.engine, request.community)
            events, cursor = self.node.events.store.query(
                request.community,
                gate=request.gate or None,
                since=convert.seconds(request.since, request.HasField("since")),
                until=convert.seconds(request.until, request.HasField("until")),
                person_id=request.person_id or None,
                stranger_id=request.stranger_id or None,
                plate=request.plate or None,
                action=_event_action(request.action),
                kind=convert.PB_TO_KIND.get(request.kind) if request.kind else None,
                limit=_page_size(request.page_size),
                cursor=request.page_token or None,
            )
            return events_pb2.QueryEventsResponse(
                events=[convert.event_pb(e) for e in events], next_page_token=cursor or ""
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def Trajectory(  # noqa: N802
        self, request: events_pb2.TrajectoryRequest, context: grpc.ServicerContext
    ) -> events_pb2.TrajectoryResponse:
        try:
            for community in request.communities:
                _known_community(self.engine, community)
            events = self.node.events.store.trajectory(
                person_id=request.person_id or None,
                stranger_id=request.stranger_id or None,
                plate=request.plate or None,
                communities=list(request.communities) or None,
                since=convert.seconds(request.since, request.HasField("since")),
                until=convert.seconds(request.until, request.HasField("until")),
                limit=request.limit or 1000,
            )
            return events_pb2.TrajectoryResponse(events=[convert.event_pb(e) for e in events])
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def GetEventImage(  # noqa: N802
        self, request: events_pb2.GetEventImageRequest, context: grpc.ServicerContext
    ) -> events_pb2.GetEventImageResponse:
        try:
            jpeg = self.node.events.store.thumbnail(request.community, request.event_id)
            return events_pb2.GetEventImageResponse(jpeg=jpeg)
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def WatchAlerts(  # noqa: N802
        self, request: events_pb2.WatchAlertsRequest, context: grpc.ServicerContext
    ) -> Iterator[events_pb2.Alert]:
        try:
            if request.community:
                _known_community(self.engine, request.community)
            subscription = self.node.events.hub.subscribe(
                request.community or None, after_seq=request.after_seq
            )
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)
        context.add_callback(subscription.close)
        with contextlib.closing(subscription):
            for alert in subscription:
                yield convert.alert_pb(alert)


def _known_community(engine: Engine, community: str) -> None:
    if not community:
        raise InvalidInputError("name the community")
    if not engine.registry.has_community(community):
        raise NotFoundError(f"community '{community}' does not exist")


EVENT_ACTIONS = ("OPEN", "ALERT", "STRANGER", "NONE")


def _event_action(text: str) -> Any:
    if not text:
        return None
    name = text.upper().removeprefix("ACTION_")
    if name not in EVENT_ACTIONS:
        raise InvalidInputError(f"action must be one of {', '.join(EVENT_ACTIONS)}, got {text!r}")
    return name


def _log_unexpected(exc: Exception) -> None:
    if not isinstance(exc, SmartgateError):
        log.exception("unexpected error", exc_info=exc)
