"""The one auth interceptor: who is calling (client certificate or bearer token), may they call
this method for these communities and gates (``cluster.security.policy``), and the caller
bound as ``principal.current()`` while the handler runs.

Missing, invalid or expired credentials end the call with UNAUTHENTICATED; a known caller
without the scope, community or gate gets PERMISSION_DENIED; the handler never runs. On
``Capture/Stream`` each frame is checked as it is read: the first frame for a gate or
community not the device's ends the stream with PERMISSION_DENIED (frames before it are
answered first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc

from cluster.security import policy
from cluster.security.certs import DEVICE_URI_PREFIX, PLATFORM_URI_PREFIX
from cluster.security.devices import DeviceBook
from cluster.security.principal import Principal, bound
from cluster.security.tokens import TokenVerifier
from cluster.status import abort
from smartgate.errors import SmartgateError, UnauthenticatedError

BEARER = "bearer "


class Authenticator:
    """Turns a call's credentials into a ``Principal`` (raises ``UnauthenticatedError`` or,
    for a valid certificate of an unbound device, ``PermissionDeniedError``)."""

    def __init__(self, verifier: TokenVerifier | None, devices: DeviceBook | None) -> None:
        self.verifier = verifier
        self.devices = devices

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]], auth: dict[str, list[bytes]]
    ) -> Principal:
        """``metadata``: the call's invocation metadata; ``auth``: ``context.auth_context()``.
        A bearer token, when sent, is the credential; otherwise the client certificate."""
        token = bearer_token(metadata)
        if token is not None:
            if self.verifier is None:
                raise UnauthenticatedError("this node accepts no tokens (security.token_keys)")
            return self.verifier.verify(token).principal()
        kind, name = certificate_identity(auth)
        if kind == "device":
            if self.devices is None:
                raise UnauthenticatedError(
                    f"device certificate {name!r}: this node binds no devices (security.devices)"
                )
            return self.devices.principal(name)
        if kind == "platform":
            raise UnauthenticatedError(
                f"platform certificate {name!r} secures the connection only; send a token "
                "(metadata 'authorization: Bearer <token>')"
            )
        raise UnauthenticatedError(
            "no credential: capture devices present their client certificate, platforms send "
            "'authorization: Bearer <token>'"
        )


def bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` header; UNAUTHENTICATED if the header
    is there but is not a bearer token."""
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        if not text.lower().startswith(BEARER) or not text[len(BEARER) :].strip():
            raise UnauthenticatedError("the authorization header must be 'Bearer <token>'")
        return text[len(BEARER) :].strip()
    return None


def certificate_identity(auth: dict[str, list[bytes]]) -> tuple[str, str]:
    """("device" | "platform", name) from a verified client certificate: its SAN URI
    ``smartgate://device/<id>`` or ``smartgate://platform/<name>``, else its CN as a device
    id; ("", "") without a certificate."""
    for uri in auth.get("peer_uri", []):
        text = uri.decode("utf-8", "replace")
        if text.startswith(DEVICE_URI_PREFIX):
            return "device", text[len(DEVICE_URI_PREFIX) :]
        if text.startswith(PLATFORM_URI_PREFIX):
            return "platform", text[len(PLATFORM_URI_PREFIX) :]
    names = auth.get("x509_common_name", [])
    if names:
        return "device", names[0].decode("utf-8", "replace")
    return "", ""


Behaviour = Callable[..., Any]


class AuthInterceptor(grpc.ServerInterceptor):
    """Wraps every non-public method's handler: authenticate, authorise, bind, call."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or policy.is_public(method):
            return handler
        codec = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary_unary(method, handler.unary_unary), **codec
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_stream(method, handler.unary_stream), **codec
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream_stream(method, handler.stream_stream), **codec
            )
        return grpc.stream_unary_rpc_method_handler(
            self._stream_unary(method, handler.stream_unary), **codec
        )

    # -- the checks ---------------------------------------------------------------------

    def _admit(
        self, method: str, context: grpc.ServicerContext, request: Any = None
    ) -> tuple[Principal, policy.Rule]:
        """Authenticate and authorise the call (and its unary request); abort on failure."""
        try:
            principal = self.authenticator.authenticate(
                context.invocation_metadata(), context.auth_context()
            )
            rule = policy.rule_for(principal, method)
            if request is not None:
                policy.check_request(principal, rule, request)
        except SmartgateError as exc:
            abort(context, exc)
        return principal, rule

    # -- one wrapper per call shape -------------------------------------------------------

    def _unary_unary(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Any:
            principal, rule = self._admit(method, context, request)
            with bound(principal):
                response = inner(request, context)
            if rule.response_communities and response is not None:
                field = getattr(response, rule.response_communities)
                kept = policy.visible_communities(principal, field)
                del field[:]
                field.extend(kept)
            return response

        return behaviour

    def _unary_stream(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            principal, _ = self._admit(method, context, request)
            with bound(principal):
                responses = inner(request, context)
            return bound_iterator(principal, responses)

        return behaviour

    def _stream_stream(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
            principal, rule = self._admit(method, context)
            guard = RequestGuard(principal, rule, requests)
            with bound(principal):
                responses = inner(iter(guard), context)
            return _until_denied(principal, responses, guard, context)

        return behaviour

    def _stream_unary(self, method: str, inner: Behaviour) -> Behaviour:
        def behaviour(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
            principal, rule = self._admit(method, context)
            guard = RequestGuard(principal, rule, requests)
            with bound(principal):
                response = inner(iter(guard), context)
            if guard.denied is not None:
                abort(context, guard.denied)
            return response

        return behaviour


class RequestGuard:
    """The requests of a client stream, each checked against the caller's bindings; the first
    one refused ends the requests (the handler sees the stream end) and is kept in
    ``denied``."""

    def __init__(self, principal: Principal, rule: policy.Rule, requests: Iterator[Any]) -> None:
        self.principal = principal
        self.rule = rule
        self.requests = requests
        self.denied: SmartgateError | None = None

    def __iter__(self) -> Iterator[Any]:
        for request in self.requests:
            try:
                policy.check_request(self.principal, self.rule, request)
            except SmartgateError as exc:
                self.denied = exc
                return
            yield request


def bound_iterator(principal: Principal, items: Iterator[Any]) -> Iterator[Any]:
    """``items`` with ``principal`` current while each one is produced. The principal is set
    and reset inside each step, never across a ``yield``: gRPC may drop the iterator on
    another thread when the client goes away."""
    items = iter(items)
    while True:
        with bound(principal):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def _until_denied(
    principal: Principal,
    responses: Iterator[Any],
    guard: RequestGuard,
    context: grpc.ServicerContext,
) -> Iterator[Any]:
    """The handler's responses; once they end, PERMISSION_DENIED if a request was refused."""
    yield from bound_iterator(principal, responses)
    if guard.denied is not None:
        abort(context, guard.denied)
