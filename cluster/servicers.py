"""gRPC servicers: unpack requests, call the engine, pack replies, map errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc

from cluster import convert
from cluster.engine import Engine, Lane
from cluster.status import abort, status_code, status_message
from indexer.types import Role
from smartgate.errors import AlreadyExistsError, InvalidInputError, SmartgateError
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
MAX_TOP_K = 100


class CaptureServicer(capture_pb2_grpc.CaptureServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _decide(self, frame: capture_pb2.Frame, received: float) -> capture_pb2.Decision:
        now = time.time()
        result = self.engine.process_frame(
            frame.community,
            frame.image,
            now,
            lane=lane_of(frame.lane),
            plate_crop=frame.plate_crop,
        )
        action = capture_pb2.Action.Name(int(result.action))
        decision = capture_pb2.Decision(
            seq=frame.seq,
            community=frame.community,
            gate=frame.gate,
            action=action,
            frame_action=action,
            faces=convert.matched_faces_pb(result.faces),
            plates=[convert.plate_pb(p, now) for p in result.plates],
            reason=result.reason,
        )
        decision.timings_ms.update(result.timings_ms)
        decision.timings_ms["total"] = (time.perf_counter() - received) * 1e3
        return decision

    def Submit(  # noqa: N802 (gRPC method name)
        self, request: capture_pb2.Frame, context: grpc.ServicerContext
    ) -> capture_pb2.Decision:
        received = time.perf_counter()
        try:
            return self._decide(request, received)
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    def Stream(  # noqa: N802
        self, request_iterator: Iterator[capture_pb2.Frame], context: grpc.ServicerContext
    ) -> Iterator[capture_pb2.Decision]:
        for frame in request_iterator:
            received = time.perf_counter()
            try:
                yield self._decide(frame, received)
            except Exception as exc:  # one bad frame never ends the stream
                _log_unexpected(exc)
                yield capture_pb2.Decision(
                    seq=frame.seq,
                    community=frame.community,
                    gate=frame.gate,
                    action=capture_pb2.ACTION_NONE,
                    status=common_pb2.ItemStatus(
                        code=status_code(exc).value[0], message=status_message(exc)
                    ),
                    reason="frame rejected",
                )


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
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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


def _log_unexpected(exc: Exception) -> None:
    if not isinstance(exc, SmartgateError):
        log.exception("unexpected error", exc_info=exc)
