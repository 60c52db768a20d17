"""Hostile requests for every smartgate RPC, sent as raw bytes over a real channel.

The methods come from the service descriptors, so a new RPC is fuzzed without a change here.
A request is either a message of the method's type whose fields hold hostile values (unicode,
NULs, right-to-left marks, emoji, 100k-character ids, SQL and shell injection, negative and
huge numbers, broken images), that message's bytes mutated, or random bytes. An input is
``b"<method path>\\n" + payload`` so that a kept failure is one replayable file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from fuzz_images import image_payloads, seeds
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import strategies as st

from smartgate.v1 import capture_pb2, registry_pb2, search_pb2

# Outcomes a hostile request may get. INTERNAL, UNKNOWN, UNAVAILABLE (server gone) and
# DEADLINE_EXCEEDED (a hang) are bugs; WatchAlerts alone may run into its deadline, since a
# valid subscription never ends by itself.
ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
ALLOWED_ITEM_CODES = frozenset(code.value[0] for code in ALLOWED)
CALL_TIMEOUT_S = 60.0
WATCH_TIMEOUT_S = 0.3
# The community the fuzzer must never touch: its person is checked after every run.
SENTINEL_COMMUNITY = "sentinel-community"
SENTINEL_PERSON = "keeper"

NASTY_TEXT = (
    "",
    " ",
    "c1",
    "fz",
    "g1",
    "obama",
    "\x00",
    "a\x00b",
    "\t\n\r",
    "\u202eevil\u202c",
    "\u200f\u200e",
    "\ufeffbom",
    "👨‍👩‍👧‍👦🚪",
    "小区一号门",
    "e\u0301",
    "'; DROP TABLE persons; --",
    "' OR '1'='1",
    '" OR ""="',
    "$(reboot)",
    "`id`",
    "; rm -rf / #",
    "../../etc/passwd",
    "%s%s%n%x",
    "{0}{1}{__class__}",
    "\\x00",
    "null",
    "NaN",
    "A" * 128,
    "A" * 129,
    "é" * 100_000,
    "x" * 100_000,
)
INT32 = (0, 1, -1, 2, 5, 100, 1000, 1001, 2**31 - 1, -(2**31))
SIGNED64 = (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64)
INT64 = (*INT32, 2**53, 2**63 - 1, -(2**63), 253402300800, -62135596801)


@dataclass(frozen=True)
class Method:
    path: str
    request: type[Any]
    client_streaming: bool
    server_streaming: bool


def methods() -> list[Method]:
    """Every RPC of the Capture, Registry and Search services."""
    out = []
    for module in (capture_pb2, registry_pb2, search_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                out.append(_method(service.full_name, m))
    return out


def _method(service: str, m: MethodDescriptor) -> Method:
    return Method(
        f"/{service}/{m.name}",
        message_factory.GetMessageClass(m.input_type),
        m.client_streaming,
        m.server_streaming,
    )


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=24))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return hostile_text()
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.sampled_from(seeds()[:1]), image_payloads())
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32 if t == FieldDescriptor.TYPE_FLOAT else 64)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        edges = [0, 1, 5, 100, 1000, 1001, 2**32 - 1]
        return st.one_of(st.sampled_from(edges), st.integers(0, 2**32 - 1))
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 2**64 - 1))
    if t in SIGNED64:
        return st.one_of(st.sampled_from(INT64), st.integers(-(2**63), 2**63 - 1))
    # int32 kinds and (open) enums
    values = list(INT32)
    if t == FieldDescriptor.TYPE_ENUM:
        values += [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(values), st.integers(-(2**31), 2**31 - 1))


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def fields_of(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Random values for any subset of the fields of ``descriptor`` (nested up to 2 deep)."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if _is_map(field) or (field.message_type is not None and depth >= 2):
            continue
        one = (
            fields_of(field.message_type, depth + 1)
            if field.message_type is not None
            else _scalar(field)
        )
        repeated = field.is_repeated
        optional[field.name] = st.lists(one, max_size=3) if repeated else one
    return st.fixed_dictionaries({}, optional=optional)


def build(cls: type[Any], values: dict[str, Any]) -> Any:
    """A message of ``cls`` from ``values`` (as drawn by ``fields_of``)."""
    message = cls()
    _fill(message, values)
    return message


def _fill(message: Any, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        if field.message_type is None:
            if isinstance(value, list):
                getattr(message, name).extend(value)
            else:
                setattr(message, name, value)
        elif isinstance(value, list):
            for item in value:
                _fill(getattr(message, name).add(), item)
        else:
            _fill(getattr(message, name), value)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """``b"<path>\\n" + payload`` for a random method."""
    method = draw(st.sampled_from(methods()))
    values = draw(fields_of(method.request.DESCRIPTOR))
    payload = build(method.request, values).SerializeToString()
    how = draw(st.sampled_from(["message", "message", "message", "mutated", "random"]))
    if how == "mutated" and payload:
        at = draw(st.integers(0, len(payload) - 1))
        size = draw(st.integers(0, 8))
        payload = payload[:at] + draw(st.binary(max_size=8)) + payload[at + size :]
    elif how == "random":
        payload = draw(st.binary(max_size=256))
    return method.path.encode() + b"\n" + payload


def split(data: bytes) -> tuple[Method | None, bytes]:
    """The method and payload of a fuzz input; None for an unknown method path."""
    path, _, payload = data.partition(b"\n")
    by_path = {m.path: m for m in methods()}
    return by_path.get(path.decode(errors="replace")), payload


def _identity(data: bytes) -> bytes:
    return data


def call_raw(channel: grpc.Channel, method: Method, payload: bytes) -> list[str]:
    """Send ``payload`` as the request of ``method``; what went wrong (empty: nothing)."""
    problems: list[str] = []
    kw = {"request_serializer": _identity, "response_deserializer": _identity}
    try:
        if method.client_streaming:
            # The hostile message between two plain frames: the stream must answer the first.
            plain = capture_pb2.Frame(community="fz", gate="g1", seq=1).SerializeToString()
            stream = channel.stream_stream(method.path, **kw)
            for raw in stream(iter([plain, payload, plain]), timeout=CALL_TIMEOUT_S):
                code = capture_pb2.Decision.FromString(raw).status.code
                if code not in ALLOWED_ITEM_CODES:
                    problems.append(f"a Decision carries status {code}")
        elif method.server_streaming:
            call = channel.unary_stream(method.path, **kw)
            for _ in call(payload, timeout=WATCH_TIMEOUT_S):
                pass
        else:
            channel.unary_unary(method.path, **kw)(payload, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        code = exc.code()
        watch_ended = method.server_streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED
        if code not in ALLOWED and not watch_ended:
            problems.append(f"{method.path} ended {code.name}: {exc.details()}")
    return problems
