"""gRPC servicers: unpack requests, call the engine, pack replies, map errors."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar, cast

import grpc

from cluster import convert, erasure
from cluster.audit.rpc import audited
from cluster.engine import Engine, FrameResult
from cluster.events.model import MAX_ID_LENGTH as MAX_EVENT_ID_LENGTH
from cluster.node import FrameJob, Node
from cluster.status import abort, status_code, status_message
from indexer.types import Role
from smartgate.checks import check_text
from smartgate.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    SmartgateError,
    UnavailableError,
)
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


_Method = TypeVar("_Method", bound=Callable[..., Any])
_Item = TypeVar("_Item")


def _rpc(method: _Method) -> _Method:
    """Run a unary RPC handler; any error ends the call with the status it maps to."""

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as exc:
            _log_unexpected(exc)
            abort(context, exc)

    return cast(_Method, handler)


class _OnNode:
    """Servicers reach the node through its slot (UNAVAILABLE until the node is ready)."""

    def __init__(self, slot: NodeSlot) -> None:
        self.slot = slot

    @property
    def node(self) -> Node:
        return self.slot.node

    @property
    def engine(self) -> Engine:
        return self.slot.node.engine


class CaptureServicer(_OnNode, capture_pb2_grpc.CaptureServicer):
    """Frames go through the node's scheduler (bounded, shedding, a fixed pool of compute
    workers); decisions go back in frame order. A stream's frames are read by their own thread,
    so a camera is never blocked by a slow node: its oldest waiting frames are shed instead.
    ``admit`` (``cluster.security``'s per-device rate limit) may refuse a frame before it is
    queued: Submit returns that error, Stream answers the frame with it and goes on."""

    def __init__(
        self,
        slot: NodeSlot,
        result_timeout_s: float = 60.0,
        admit: Callable[[capture_pb2.Frame], None] | None = None,
    ) -> None:
        super().__init__(slot)
        self.result_timeout_s = result_timeout_s
        self.admit = admit

    def _submit(
        self, frame: capture_pb2.Frame, streamed: bool = False
    ) -> tuple[float, Future[FrameResult]]:
        """Queue ``frame``; returns its receive time and its result to come. A ``streamed``
        frame is in flight for its gate's passages until the caller observes or abandons it."""
        _check_frame_ids(frame)
        if self.admit is not None:
            self.admit(frame)
        now = time.time()
        if streamed:
            self.node.passages.received(frame.community, frame.gate, now)
        job = FrameJob(
            frame.community,
            frame.image,
            now,
            convert.lane_of(frame.lane),
            frame.plate_crop,
            frame.gate,
        )
        try:
            return now, self.node.scheduler.submit(f"{frame.community}/{frame.gate}", job)
        except BaseException:
            if streamed:
                self.node.passages.abandoned(frame.community, frame.gate, now)
            raise

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
            now, future = self._submit(request)
            result = future.result(timeout=self.result_timeout_s)
            started = time.perf_counter()
            self.node.passages.snapshot(
                request.community, request.gate, request.device, now, result
            )
            result.timings_ms["track"] = (time.perf_counter() - started) * 1e3
            decision = self._decision(request, result, now, int(result.action), result.reason)
            self._finish(decision, request, received)
            return decision
        except Exception as exc:
            self._count_failure(request.gate, exc)
            _log_unexpected(exc)
            abort(context, exc)

    def Stream(  # noqa: N802
        self, request_iterator: Iterator[capture_pb2.Frame], context: grpc.ServicerContext
    ) -> Iterator[capture_pb2.Decision]:
        pending: queue.Queue[tuple[capture_pb2.Frame, float, float, Future[FrameResult]] | None]
        pending = queue.Queue()

        def read() -> None:
            try:
                for frame in request_iterator:
                    received = time.perf_counter()
                    try:
                        now, future = self._submit(frame, streamed=True)
                    except SmartgateError as exc:  # refused before queueing: answered in-stream
                        now, future = time.time(), Future()
                        future.set_exception(exc)
                    pending.put((frame, received, now, future))
            except Exception as exc:  # the client went away or cancelled
                log.debug("capture stream ended: %s", exc)
            finally:
                pending.put(None)

        # The reader sees the caller's context (``cluster.security.principal.current()``).
        reader = contextvars.copy_context().run
        threading.Thread(target=reader, args=(read,), name="capture-reader", daemon=True).start()
        try:
            while (entry := pending.get()) is not None:
                yield self._answer(*entry)
        finally:  # the caller went away: the frames still queued will not be observed
            while True:
                try:
                    entry = pending.get_nowait()
                except queue.Empty:
                    break
                if entry is not None:
                    self.node.passages.abandoned(entry[0].community, entry[0].gate, entry[2])

    def _answer(
        self, frame: capture_pb2.Frame, received: float, now: float, future: Future[FrameResult]
    ) -> capture_pb2.Decision:
        """A streamed frame's decision, once its result is in (a failed frame: its status)."""
        try:
            result = future.result(timeout=self.result_timeout_s)
            decision = self._stream_decision(frame, result, now)
        except Exception as exc:  # one bad or shed frame never ends the stream
            self.node.passages.abandoned(frame.community, frame.gate, now)
            self._count_failure(frame.gate, exc)
            _log_unexpected(exc)
            decision = capture_pb2.Decision(
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
        self._finish(decision, frame, received)
        return decision

    def _stream_decision(
        self, frame: capture_pb2.Frame, result: FrameResult, now: float
    ) -> capture_pb2.Decision:
        started = time.perf_counter()
        # The tracker's clock is the receive time: a passage's frames are as far apart as the
        # camera sent them, however long each queued. While a frame is in flight the expiry
        # thread ends none of its gate's tracks on the silence it may break
        # (``Passages.received``).
        outcome = self.node.passages.observe(
            frame.community, frame.gate, frame.device, frame.seq, now, result
        )
        result.timings_ms["track"] = (time.perf_counter() - started) * 1e3
        decision = self._decision(frame, result, now, int(outcome.action), outcome.reason)
        decision.tracks.extend(convert.track_state_pb(t) for t in outcome.tracks)
        return decision

    def _count_failure(self, gate: str, exc: BaseException) -> None:
        if self.slot.ready:
            self.node.metrics.frame_failed(gate, status_code(exc).name)

    def _finish(
        self, decision: capture_pb2.Decision, frame: capture_pb2.Frame, received: float
    ) -> None:
        total = (time.perf_counter() - received) * 1e3
        decision.timings_ms["total"] = total
        if not decision.status.code:
            self.node.metrics.frame_done(frame.gate, total, decision.timings_ms)


class NodeSlot:
    """Where the servicers find the node: empty while the models load and warm (calls get
    UNAVAILABLE and the health service says NOT_SERVING), filled once it is ready."""

    def __init__(self, node: Node | None = None) -> None:
        self._node = node

    def fill(self, node: Node) -> None:
        self._node = node

    @property
    def ready(self) -> bool:
        return self._node is not None

    @property
    def node(self) -> Node:
        if self._node is None:
            raise UnavailableError("the node is loading and warming its models; retry shortly")
        return self._node


def _role(value: int, default: int = common_pb2.ROLE_RESIDENT) -> Role:
    role = convert.PB_TO_ROLE.get(value or default)
    if role is None:
        raise InvalidInputError(f"unknown role {value}")
    return role


class RegistryServicer(_OnNode, registry_pb2_grpc.RegistryServicer):
    @_rpc
    @audited("CreateCommunity")
    def CreateCommunity(  # noqa: N802
        self, request: registry_pb2.CreateCommunityRequest, context: grpc.ServicerContext
    ) -> registry_pb2.CreateCommunityResponse:
        try:
            self.engine.registry.create_community(request.community)
            created = True
        except AlreadyExistsError:
            created = False
        return registry_pb2.CreateCommunityResponse(community=request.community, created=created)

    def ListCommunities(  # noqa: N802
        self, request: registry_pb2.ListCommunitiesRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListCommunitiesResponse:
        return registry_pb2.ListCommunitiesResponse(
            communities=list(self.engine.registry.communities())
        )

    @_rpc
    @audited("EnrollPerson")
    def EnrollPerson(  # noqa: N802
        self, request: registry_pb2.EnrollPersonRequest, context: grpc.ServicerContext
    ) -> registry_pb2.EnrollPersonResponse:
        role = _role(request.role)
        person, faces = self.engine.enroll(
            request.community,
            request.person_id,
            list(request.images),
            name=request.name,
            role=role,
            expires_at=convert.seconds(request.expires_at, request.HasField("expires_at")),
            replace=request.replace,
            allow_lookalike=request.allow_lookalike,
        )
        return registry_pb2.EnrollPersonResponse(
            person=convert.person_pb(person), faces=[convert.face_pb(f) for f in faces]
        )

    @_rpc
    @audited("RemovePerson")
    def RemovePerson(  # noqa: N802
        self, request: registry_pb2.RemovePersonRequest, context: grpc.ServicerContext
    ) -> registry_pb2.RemovePersonResponse:
        removed = erasure.erase_person(self.node, request.community, request.person_id).templates
        return registry_pb2.RemovePersonResponse(templates_removed=removed)

    @_rpc
    def ListPersons(  # noqa: N802
        self, request: registry_pb2.ListPersonsRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListPersonsResponse:
        role = _role(request.role) if request.role else None
        page, token = _page(
            lambda limit, after: self.engine.registry.list_persons(
                request.community, role=role, limit=limit, after=after
            ),
            request.page_size,
            request.page_token,
            lambda person: person.person_id,
        )
        return registry_pb2.ListPersonsResponse(
            persons=[convert.person_pb(p) for p in page], next_page_token=token
        )

    @_rpc
    @audited("AddVehicle")
    def AddVehicle(  # noqa: N802
        self, request: registry_pb2.AddVehicleRequest, context: grpc.ServicerContext
    ) -> common_pb2.Vehicle:
        vehicle = self.engine.vehicles.add(
            request.community,
            request.plate,
            role=_role(request.role),
            owner=request.owner,
            expires_at=convert.seconds(request.expires_at, request.HasField("expires_at")),
            replace=request.replace,
        )
        return convert.vehicle_pb(vehicle)

    @_rpc
    @audited("RemoveVehicle")
    def RemoveVehicle(  # noqa: N802
        self, request: registry_pb2.RemoveVehicleRequest, context: grpc.ServicerContext
    ) -> common_pb2.Vehicle:
        vehicle, _ = erasure.erase_vehicle(self.node, request.community, request.plate)
        return convert.vehicle_pb(vehicle)

    @_rpc
    def ListVehicles(  # noqa: N802
        self, request: registry_pb2.ListVehiclesRequest, context: grpc.ServicerContext
    ) -> registry_pb2.ListVehiclesResponse:
        role = _role(request.role) if request.role else None
        page, token = _page(
            lambda limit, after: self.engine.vehicles.list(
                request.community, role=role, limit=limit, after=after
            ),
            request.page_size,
            request.page_token,
            lambda vehicle: vehicle.plate,
        )
        return registry_pb2.ListVehiclesResponse(
            vehicles=[convert.vehicle_pb(v) for v in page], next_page_token=token
        )


def _page(
    fetch: Callable[[int, str | None], list[_Item]],
    page_size: int,
    page_token: str,
    key: Callable[[_Item], str],
) -> tuple[list[_Item], str]:
    """One page of a listing by key (``fetch(limit, after)``) and the next page's token ("" on
    the last page). A full page asks for one more item after it, so ``page_size`` may be the
    largest limit the registry takes (asking for ``size + 1`` at once could not)."""
    size = _page_size(page_size)
    page = fetch(size, page_token or None)
    more = len(page) == size and bool(fetch(1, key(page[-1])))
    return page, key(page[-1]) if more else ""


def _page_size(requested: int) -> int:
    size = requested or 100
    if size > MAX_PAGE_SIZE:
        raise InvalidInputError(f"page_size is at most {MAX_PAGE_SIZE}, got {size}")
    return size


class SearchServicer(_OnNode, search_pb2_grpc.SearchServicer):
    @_rpc
    @audited("SearchFace")
    def SearchFace(  # noqa: N802
        self, request: search_pb2.SearchFaceRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchFaceResponse:
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

    @_rpc
    @audited("SearchPlate")
    def SearchPlate(  # noqa: N802
        self, request: search_pb2.SearchPlateRequest, context: grpc.ServicerContext
    ) -> search_pb2.SearchPlateResponse:
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
        return search_pb2.SearchPlateResponse(hits=[convert.plate_match_pb(h, now) for h in hits])

    @_rpc
    @audited("QueryEvents")
    def QueryEvents(  # noqa: N802
        self, request: events_pb2.QueryEventsRequest, context: grpc.ServicerContext
    ) -> events_pb2.QueryEventsResponse:
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

    @_rpc
    @audited("Trajectory")
    def Trajectory(  # noqa: N802
        self, request: events_pb2.TrajectoryRequest, context: grpc.ServicerContext
    ) -> events_pb2.TrajectoryResponse:
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

    @_rpc
    @audited("GetEventImage")
    def GetEventImage(  # noqa: N802
        self, request: events_pb2.GetEventImageRequest, context: grpc.ServicerContext
    ) -> events_pb2.GetEventImageResponse:
        jpeg = self.node.events.store.thumbnail(request.community, request.event_id)
        return events_pb2.GetEventImageResponse(jpeg=jpeg)

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


def _check_frame_ids(frame: capture_pb2.Frame) -> None:
    """The gate and device ids are stored with each passage: refuse a frame whose ids the
    event log would refuse, before it is recognised (its passage would be lost)."""
    check_text(frame.gate, "gate", MAX_EVENT_ID_LENGTH)
    check_text(frame.device, "device", MAX_EVENT_ID_LENGTH, required=False)


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
