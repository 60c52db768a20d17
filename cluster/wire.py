"""Malformed request messages end with INVALID_ARGUMENT, not INTERNAL.

gRPC Python answers a request whose bytes do not parse as the method's message type with
INTERNAL ("Exception deserializing request!") and logs a stack trace: a malformed protobuf (a
string field that is not UTF-8, a truncated varint, a wrong wire type) would look like a server
bug. ``MalformedRequests`` is a server interceptor that wraps every method's deserializer: a
message that does not parse becomes a ``Malformed`` marker, and the method ends with the status
``cluster.status`` gives an ``InvalidInputError`` naming the message type. A unary call is
refused before the servicer runs; on a request stream the messages before the bad one are
served (their replies are sent) and the stream then ends with that status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from cluster.status import abort, status_code, status_message
from smartgate.errors import InvalidInputError

Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True)
class Malformed:
    """Stands for a request message that did not parse."""

    error: InvalidInputError


def lenient(deserializer: Deserializer | None, what: str) -> Deserializer | None:
    """``deserializer`` that returns ``Malformed`` instead of raising on bad bytes."""
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:  # protobuf raises DecodeError, upb also RuntimeError
            return Malformed(
                InvalidInputError(f"the request is not a valid {what} message ({exc})")
            )

    return deserialize


def _message_name(deserializer: Deserializer | None, method: str) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return str(name) if name else f"request of {method}"


def _unary_request(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            abort(context, request.error)
        return behaviour(request, context)

    return handle


def _until_malformed(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    """The parsed requests; at a malformed one, set the call's status and stop."""
    for request in requests:
        if isinstance(request, Malformed):
            context.set_code(status_code(request.error))
            context.set_details(status_message(request.error))
            return
        yield request


def _stream_request(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behaviour)
    def handle(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        return behaviour(_until_malformed(requests, context), context)

    return handle


class MalformedRequests(grpc.ServerInterceptor):
    """Wrap each method handler so that unparseable request bytes are INVALID_ARGUMENT."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        what = _message_name(handler.request_deserializer, handler_call_details.method)
        changes: dict[str, Any] = {
            "request_deserializer": lenient(handler.request_deserializer, what)
        }
        for kind, wrap in (
            ("unary_unary", _unary_request),
            ("unary_stream", _unary_request),
            ("stream_unary", _stream_request),
            ("stream_stream", _stream_request),
        ):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                changes[kind] = wrap(behaviour)
        return handler._replace(**changes)
