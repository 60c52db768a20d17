"""The servicers' one hook into the audit log: ``@audited("SearchFace")`` under ``@_rpc``.

``AUDITED`` says, per RPC, which communities and target a request names and whether it must
carry a reason. The decorator runs the handler, then appends one record with the caller
(``cluster.security.principal.current().actor``) and the outcome (``OK`` or the gRPC code the
error maps to, ``cluster.status``); a record that cannot be written fails the call (no
unaudited answer leaves the node). A request missing a required reason (a face search over
more than one community) is refused with ``InvalidInputError`` (INVALID_ARGUMENT) and recorded.
Only these platform RPCs are audited, never capture frames. With no audit log on the node
(``privacy.audit = false``) the handler runs unrecorded.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import grpc

from cluster.audit.log import AuditLog
from cluster.security.principal import current
from cluster.status import status_code
from smartgate.errors import InvalidInputError

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _none(_: Any) -> str:
    return ""


def _never(_: Any) -> bool:
    return False


def _one(request: Any) -> list[str]:
    return [request.community] if request.community else []


def _reason(request: Any) -> str:
    return str(getattr(request, "reason", ""))


@dataclass(frozen=True)
class AuditSpec:
    """How to read one RPC's request for its audit record."""

    communities: Callable[[Any], list[str]] = _one
    target: Callable[[Any], str] = _none
    detail: Callable[[Any], str] = _none
    reason_required: Callable[[Any], bool] = _never


def _person(request: Any) -> str:
    return f"person:{request.person_id}"


def _plate(request: Any) -> str:
    return f"plate:{request.plate}"


def _identity(request: Any) -> str:
    for field in ("person_id", "stranger_id", "plate"):
        value = getattr(request, field, "")
        if value:
            return f"{field.removesuffix('_id')}:{value}"
    return ""


def _enrol_detail(request: Any) -> str:
    flags = [f for f in ("replace", "allow_lookalike") if getattr(request, f, False)]
    return ",".join(flags)


AUDITED: Final[dict[str, AuditSpec]] = {
    "CreateCommunity": AuditSpec(),
    "EnrollPerson": AuditSpec(target=_person, detail=_enrol_detail),
    "RemovePerson": AuditSpec(target=_person),
    "AddVehicle": AuditSpec(target=_plate, detail=lambda r: "replace" if r.replace else ""),
    "RemoveVehicle": AuditSpec(target=_plate),
    "SearchFace": AuditSpec(
        communities=lambda r: list(r.communities),
        detail=lambda r: f"top_k={r.top_k}" if r.top_k else "",
        reason_required=lambda r: len(r.communities) > 1,
    ),
    "SearchPlate": AuditSpec(communities=lambda r: list(r.communities), target=_plate),
    "QueryEvents": AuditSpec(target=_identity),
    "Trajectory": AuditSpec(communities=lambda r: list(r.communities), target=_identity),
    "GetEventImage": AuditSpec(target=lambda r: f"event:{r.event_id}"),
}


def audited(method_name: str) -> Callable[[_Method], _Method]:
    """Record every call of the decorated handler (``servicer.node.audit``) as ``AUDITED``
    describes ``method_name``."""
    spec = AUDITED[method_name]

    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            log: AuditLog | None = getattr(self.node, "audit", None)
            if log is None:
                return method(self, request, context)
            reason = _reason(request).strip()

            def record(outcome: str) -> None:
                log.append(
                    actor=current().actor,
                    method=method_name,
                    communities=spec.communities(request),
                    target=spec.target(request),
                    reason=reason,
                    outcome=outcome,
                    detail=spec.detail(request),
                )

            try:
                if spec.reason_required(request) and not reason:
                    raise InvalidInputError(
                        f"{method_name} across several communities needs a reason (it is "
                        "recorded in the audit log)"
                    )
                reply = method(self, request, context)
            except Exception as exc:
                record(status_code(exc).name)
                raise
            record("OK")
            return reply

        return cast(_Method, handler)

    return wrap
