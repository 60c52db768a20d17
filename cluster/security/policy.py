"""Who may call what: the one table of every RPC and the scope it needs, and the pure checks the
auth interceptor applies (scope, communities, a device's gates).

Scopes: ``gate`` (a capture device: Capture only, for its own community and gates),
``operator`` (a community's platform: Registry and Search within its communities),
``county`` (the county platform: reads and searches across communities, no Registry writes),
``admin`` (everything). A principal bound to no community (county or admin tokens without
``--community``) reaches every community; a principal bound to some must name them: a request
that names none (which would mean every community) is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from cluster.security.principal import Principal
from smartgate.errors import PermissionDeniedError
from smartgate.v1 import capture_pb2, registry_pb2, search_pb2

GATE, OPERATOR, COUNTY, ADMIN = "gate", "operator", "county", "admin"

CAPTURE = capture_pb2.DESCRIPTOR.services_by_name["Capture"].full_name
REGISTRY = registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name
SEARCH = search_pb2.DESCRIPTOR.services_by_name["Search"].full_name

# Open to every caller, even without a credential (load balancers, grpcurl).
PUBLIC_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


@dataclass(frozen=True)
class Rule:
    """``scopes``: any one of them grants the call (``admin`` grants every call);
    ``community``: the request field naming the community (a string) or communities (a
    repeated string) that must lie within the caller's; ``frames``: Capture frames, whose
    community, gate and device are checked against the caller's bindings one by one;
    ``response_communities``: a repeated field of the response cut down to the caller's
    communities; ``writes``: changes stored state (documentation, and the README table)."""

    scopes: frozenset[str]
    community: str | None = None
    frames: bool = False
    response_communities: str | None = None
    writes: bool = False


_CAPTURE_FRAMES = Rule(frozenset({GATE}), "community", frames=True)
_WRITE = Rule(frozenset({OPERATOR}), "community", writes=True)
_READ = Rule(frozenset({OPERATOR, COUNTY}), "community")
_SEARCH = Rule(frozenset({OPERATOR, COUNTY}), "communities")

POLICY: dict[str, Rule] = {
    f"/{CAPTURE}/Stream": _CAPTURE_FRAMES,
    f"/{CAPTURE}/Submit": _CAPTURE_FRAMES,
    f"/{REGISTRY}/CreateCommunity": _WRITE,
    f"/{REGISTRY}/ListCommunities": Rule(
        frozenset({OPERATOR, COUNTY}), response_communities="communities"
    ),
    f"/{REGISTRY}/EnrollPerson": _WRITE,
    f"/{REGISTRY}/RemovePerson": _WRITE,
    f"/{REGISTRY}/ListPersons": _READ,
    f"/{REGISTRY}/AddVehicle": _WRITE,
    f"/{REGISTRY}/RemoveVehicle": _WRITE,
    f"/{REGISTRY}/ListVehicles": _READ,
    f"/{SEARCH}/SearchFace": _SEARCH,
    f"/{SEARCH}/SearchPlate": _SEARCH,
    f"/{SEARCH}/QueryEvents": _READ,
    f"/{SEARCH}/Trajectory": _SEARCH,
    f"/{SEARCH}/GetEventImage": _READ,
    f"/{SEARCH}/WatchAlerts": _READ,
}


def is_public(method: str) -> bool:
    """``method`` is a full method name, ``/package.Service/Method``."""
    return method.lstrip("/").split("/", 1)[0] in PUBLIC_SERVICES


def rule_for(principal: Principal, method: str) -> Rule:
    """The rule of ``method`` if ``principal`` holds a scope it needs; PERMISSION_DENIED
    otherwise (and for a method the table does not know: closed by default)."""
    rule = POLICY.get(method)
    if rule is None:
        raise PermissionDeniedError(f"{method} has no access rule; only public methods are open")
    if ADMIN in principal.scopes or principal.scopes & rule.scopes:
        return rule
    need = " or ".join(sorted(rule.scopes | {ADMIN}))
    have = ", ".join(sorted(principal.scopes)) or "none"
    raise PermissionDeniedError(
        f"{principal.actor} may not call {method}: it needs scope {need} (has {have})"
    )


def check_communities(principal: Principal, named: Iterable[str], what: str) -> None:
    """Every community in ``named`` must be within the principal's (all when it has none)."""
    if not principal.communities:
        return
    named = [c for c in named if c]
    allowed = ", ".join(sorted(principal.communities))
    if not named:
        raise PermissionDeniedError(
            f"{principal.actor} may access communities {allowed} only; name them in {what} "
            "(an empty field means every community)"
        )
    foreign = sorted(set(named) - principal.communities)
    if foreign:
        raise PermissionDeniedError(
            f"{principal.actor} may not access community {', '.join(foreign)} "
            f"(it may access {allowed})"
        )


def check_request(principal: Principal, rule: Rule, request: Any) -> None:
    """The community check of a unary request (Capture frames: ``check_frame``). A request
    that did not parse (``cluster.wire``) names nothing: its handler refuses it."""
    if not isinstance(request, Message):
        return
    if rule.frames:
        check_frame(principal, request)
    elif rule.community is not None:
        value = getattr(request, rule.community)
        named = [value] if isinstance(value, str) else list(value)
        check_communities(principal, named, rule.community)


def check_frame(principal: Principal, frame: capture_pb2.Frame) -> None:
    """A frame's community and gate must be the caller's; a device may not speak for another
    device (``frame.device`` empty or its own id)."""
    if ADMIN in principal.scopes:
        return
    check_communities(principal, [frame.community], "frame.community")
    if not principal.gates:
        raise PermissionDeniedError(f"{principal.actor} is bound to no gate")
    if frame.gate not in principal.gates:
        raise PermissionDeniedError(
            f"{principal.actor} may not stream for gate {frame.gate!r} of {frame.community!r} "
            f"(its gates: {', '.join(sorted(principal.gates))})"
        )
    if principal.kind == "device" and frame.device and frame.device != principal.subject:
        raise PermissionDeniedError(
            f"{principal.actor} may not send frames as device {frame.device!r}"
        )


def visible_communities(principal: Principal, communities: Iterable[str]) -> list[str]:
    """``communities`` cut down to those the principal may see."""
    if not principal.communities:
        return list(communities)
    return [c for c in communities if c in principal.communities]
