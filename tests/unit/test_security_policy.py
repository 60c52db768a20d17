"""The access table: every RPC has a rule, and the scope / community / gate checks."""

from __future__ import annotations

import pytest

from cluster.security import policy
from cluster.security.principal import Principal
from smartgate.errors import PermissionDeniedError
from smartgate.v1 import (
    capture_pb2,
    events_pb2,
    registry_pb2,
    search_pb2,
)


def _methods() -> list[str]:
    out = []
    for module in (capture_pb2, registry_pb2, search_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            out += [f"/{service.full_name}/{m.name}" for m in service.methods]
    return out


def _token(scope: str, communities: tuple[str, ...] = (), gates: tuple[str, ...] = ()) -> Principal:
    return Principal(
        subject=f"{scope}-1",
        kind="token",
        scopes=frozenset({scope}),
        communities=frozenset(communities),
        gates=frozenset(gates),
    )


DEVICE = Principal("cam-1", "device", frozenset({"gate"}), frozenset({"c1"}), frozenset({"g1"}))
OPERATOR = _token("operator", ("c1",))
COUNTY = _token("county")
ADMIN = _token("admin")


def test_every_method_of_every_service_has_a_rule() -> None:
    methods = _methods()
    assert set(methods) == set(policy.POLICY), "a method without a rule is closed to all"
    for method in methods:
        rule = policy.POLICY[method]
        assert rule.scopes, method
        if rule.community is not None:  # the named field exists on the request type
            service, name = method.strip("/").split("/")
            module = {
                "smartgate.v1.Capture": capture_pb2,
                "smartgate.v1.Registry": registry_pb2,
                "smartgate.v1.Search": search_pb2,
            }[service]
            desc = module.DESCRIPTOR.services_by_name[service.split(".")[-1]]
            fields = desc.methods_by_name[name].input_type.fields_by_name
            assert rule.community in fields, (method, rule.community)


def test_health_and_reflection_are_public_and_nothing_else() -> None:
    assert policy.is_public("/grpc.health.v1.Health/Check")
    assert policy.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not any(policy.is_public(m) for m in _methods())


# (principal, method) → allowed?
MATRIX = [
    (DEVICE, "Capture/Stream", True),
    (DEVICE, "Capture/Submit", True),
    (DEVICE, "Registry/EnrollPerson", False),
    (DEVICE, "Search/SearchFace", False),
    (OPERATOR, "Capture/Stream", False),
    (OPERATOR, "Registry/EnrollPerson", True),
    (OPERATOR, "Registry/RemovePerson", True),
    (OPERATOR, "Search/QueryEvents", True),
    (OPERATOR, "Search/WatchAlerts", True),
    (COUNTY, "Registry/EnrollPerson", False),
    (COUNTY, "Registry/RemovePerson", False),
    (COUNTY, "Registry/AddVehicle", False),
    (COUNTY, "Registry/CreateCommunity", False),
    (COUNTY, "Registry/ListPersons", True),
    (COUNTY, "Search/SearchFace", True),
    (COUNTY, "Search/Trajectory", True),
    (COUNTY, "Capture/Submit", False),
    (ADMIN, "Registry/EnrollPerson", True),
    (ADMIN, "Capture/Stream", True),
]


@pytest.mark.parametrize(("who", "method", "allowed"), MATRIX)
def test_scopes(who: Principal, method: str, allowed: bool) -> None:
    full = f"/smartgate.v1.{method}"
    if allowed:
        assert policy.rule_for(who, full) is policy.POLICY[full]
    else:
        with pytest.raises(PermissionDeniedError, match="needs scope"):
            policy.rule_for(who, full)


def test_no_county_write_at_all() -> None:
    writes = [m for m, r in policy.POLICY.items() if r.writes]
    assert writes
    for method in writes:
        with pytest.raises(PermissionDeniedError):
            policy.rule_for(COUNTY, method)


def test_unknown_method_is_closed_even_to_admin() -> None:
    with pytest.raises(PermissionDeniedError, match="no access rule"):
        policy.rule_for(ADMIN, "/smartgate.v1.Registry/DropEverything")


def _check(who: Principal, method: str, request: object) -> None:
    full = f"/smartgate.v1.{method}"
    policy.check_request(who, policy.rule_for(who, full), request)


def test_operator_is_held_to_its_community() -> None:
    _check(OPERATOR, "Registry/EnrollPerson", registry_pb2.EnrollPersonRequest(community="c1"))
    with pytest.raises(PermissionDeniedError, match="may not access community c2"):
        _check(OPERATOR, "Registry/EnrollPerson", registry_pb2.EnrollPersonRequest(community="c2"))
    with pytest.raises(PermissionDeniedError, match="c2"):
        _check(
            OPERATOR, "Search/SearchFace", search_pb2.SearchFaceRequest(communities=["c1", "c2"])
        )


def test_a_bounded_caller_must_name_its_communities() -> None:
    # An empty field means every community: not for a caller bound to some.
    with pytest.raises(PermissionDeniedError, match="name them"):
        _check(OPERATOR, "Search/Trajectory", events_pb2.TrajectoryRequest(person_id="p"))
    with pytest.raises(PermissionDeniedError, match="name them"):
        _check(OPERATOR, "Search/WatchAlerts", events_pb2.WatchAlertsRequest())


def test_county_without_communities_reaches_every_community() -> None:
    _check(COUNTY, "Search/SearchFace", search_pb2.SearchFaceRequest(communities=["c1", "c2"]))
    _check(COUNTY, "Search/Trajectory", events_pb2.TrajectoryRequest(person_id="p"))
    bounded = _token("county", ("c1", "c2"))
    with pytest.raises(PermissionDeniedError, match="c3"):
        _check(bounded, "Search/SearchPlate", search_pb2.SearchPlateRequest(communities=["c3"]))


def _frame(community: str = "c1", gate: str = "g1", device: str = "") -> capture_pb2.Frame:
    return capture_pb2.Frame(community=community, gate=gate, device=device)


def test_device_streams_for_its_own_gates_only() -> None:
    policy.check_frame(DEVICE, _frame())
    policy.check_frame(DEVICE, _frame(device="cam-1"))
    with pytest.raises(PermissionDeniedError, match="gate 'g2'"):
        policy.check_frame(DEVICE, _frame(gate="g2"))
    with pytest.raises(PermissionDeniedError, match="community c2"):
        policy.check_frame(DEVICE, _frame(community="c2"))
    with pytest.raises(PermissionDeniedError, match="as device 'cam-2'"):
        policy.check_frame(DEVICE, _frame(device="cam-2"))
    policy.check_frame(ADMIN, _frame(community="any", gate="any"))


def test_a_capture_principal_bound_to_no_gate_streams_for_none() -> None:
    unbound = Principal("cam-x", "device", frozenset({"gate"}), frozenset({"c1"}))
    with pytest.raises(PermissionDeniedError, match="no gate"):
        policy.check_frame(unbound, _frame())


def test_visible_communities() -> None:
    assert policy.visible_communities(OPERATOR, ["c1", "c2"]) == ["c1"]
    assert policy.visible_communities(COUNTY, ["c1", "c2"]) == ["c1", "c2"]
