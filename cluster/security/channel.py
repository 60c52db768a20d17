"""The client side: one way to open a channel to a node, plain or TLS, with a client
certificate and a bearer token when given.

``open_channel("gate.example:50051", ca="ca.pem", cert="cam-1.pem", key="cam-1.key")`` for a
device; ``..., cert="county.pem", key="county.key", token=TOKEN`` for a platform behind mutual
TLS; ``open_channel("127.0.0.1:50051")`` for the open development mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from smartgate.errors import ConfigError

DEFAULT_MESSAGE_BYTES = 64 * 1024 * 1024
PathLike = str | Path


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call (over TLS or plain loopback)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Iterator[Any]
    ) -> Any:
        return continuation(self._details(details), requests)


def _read(path: PathLike | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path} ({exc.strerror})") from exc


def read_token(text: str | None) -> str | None:
    """A token given as itself or as ``@FILE`` (keeps it out of the process list)."""
    if not text:
        return None
    if text.startswith("@"):
        data = _read(text[1:], "--token")
        return data.decode("ascii").strip() if data else None
    return text.strip()


def open_channel(
    address: str,
    *,
    ca: PathLike | None = None,
    cert: PathLike | None = None,
    key: PathLike | None = None,
    token: str | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address``: TLS trusting ``ca`` when given (with the client certificate
    ``cert``/``key`` for mutual TLS), plain otherwise; ``token`` is sent on every call;
    ``server_name`` overrides the name checked against the server certificate."""
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs both --cert and --key")
    if cert is not None and ca is None:
        raise ConfigError("a client certificate is sent over TLS only: give --tls-ca too")
    opts = [
        ("grpc.max_send_message_length", DEFAULT_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", DEFAULT_MESSAGE_BYTES),
        *options,
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    if ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "--tls-ca"),
            private_key=_read(key, "--key"),
            certificate_chain=_read(cert, "--cert"),
        )
        channel = grpc.secure_channel(address, credentials, options=opts)
    else:
        channel = grpc.insecure_channel(address, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel
