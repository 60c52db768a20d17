"""gRPC servicers: unpack requests, call the engine, pack replies, map errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc

from cluster import convert
from cluster.engine import Engine
from cluster.status import abort, status_code, status_message
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
        result = self.engine.process_frame(frame.community, frame.image)
        decision = capture_pb2.Decision(
            seq=frame.seq,
            community=frame.community,
            gate=frame.gate,
            action=capture_pb2.Action.Name(int(result.action)),
            faces=convert.matched_faces_pb(result.faces),
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
            role = convert.PB_TO_ROLE.get(request.role or common_pb2.ROLE_RESIDENT)
            if role is None:
                raise InvalidInputError(f"unknown role {request.role}")
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
            size = request.page_size or 100
            if size > MAX_PAGE_SIZE:
                raise InvalidInputError(f"page_size is at most {MAX_PAGE_SIZE}, got {size}")
            role = convert.PB_TO_ROLE.get(request.role) if request.role else None
            if request.role and role is None:
                raise InvalidInputError(f"unknown role {request.role}")
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


def _log_unexpected(exc: Exception) -> None:
    if not isinstance(exc, SmartgateError):
        log.exception("unexpected error", exc_info=exc)
