"""The server side of ``SecurityConfig``: the listening port (TLS, mutual TLS or plain), the
auth interceptor and the per-device frame limiter, built once at start-up.

Rules: a listener that is not on loopback needs TLS and an authentication method (client
certificates or tokens) unless ``security.insecure``; with nothing configured a loopback
listener stays open (development: ``make run``, the tests), every call running as ``LOCAL``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cluster.security.devices import DeviceBook
from cluster.security.interceptor import Authenticator, AuthInterceptor
from cluster.security.ratelimit import FrameLimiter, SharedFrameLimiter
from cluster.security.tokens import KeyRing, TokenVerifier
from smartgate.config import SecurityConfig
from smartgate.errors import ConfigError
from smartgate.v1 import capture_pb2

LOOPBACK_NAMES = ("localhost",)


def is_loopback(listen: str) -> bool:
    """``HOST:PORT`` names a loopback host (127.0.0.0/8, ::1, localhost)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"security.{what}: cannot read {path} ({exc.strerror})") from exc


@dataclass
class ServerSecurity:
    """What ``cluster.server`` needs: interceptors, the Capture admission hook, the port."""

    config: SecurityConfig
    interceptors: list[grpc.ServerInterceptor] = field(default_factory=list)
    admit: Callable[[capture_pb2.Frame], None] | None = None
    credentials: grpc.ServerCredentials | None = None

    @classmethod
    def build(cls, config: SecurityConfig, listen: str) -> ServerSecurity:
        """Check the configuration against the listen address and load keys and files."""
        if not is_loopback(listen) and not config.insecure:
            missing = [
                what
                for what, ok in (("TLS", config.tls), ("authentication", config.authenticates))
                if not ok
            ]
            if missing:
                raise ConfigError(
                    f"refusing to listen on {listen} without {' and '.join(missing)}: set "
                    "security.tls_cert/tls_key and security.client_ca or token_keys "
                    "(README 'Securing a site'), or security.insecure = true"
                )
        out = cls(config)
        if config.tls_cert is not None and config.tls_key is not None:
            ca = _read(config.client_ca, "client_ca") if config.client_ca else None
            out.credentials = grpc.ssl_server_credentials(
                [(_read(config.tls_key, "tls_key"), _read(config.tls_cert, "tls_cert"))],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
        if config.authenticates:
            verifier = None
            if config.token_keys is not None:
                verifier = TokenVerifier(KeyRing.load(config.token_keys), config.token_leeway_s)
            devices = DeviceBook.load(config.devices) if config.devices else None
            out.interceptors.append(AuthInterceptor(Authenticator(verifier, devices)))
            if config.device_fps > 0:
                limiter = (
                    SharedFrameLimiter(
                        config.rate_limit_redis, config.device_fps, config.device_burst
                    )
                    if config.rate_limit_redis
                    else FrameLimiter(config.device_fps, config.device_burst)
                )
                out.admit = limiter.admit
        return out

    def add_port(self, server: grpc.Server, listen: str) -> int:
        """Bind ``listen`` (TLS when configured); the bound port, 0 when binding failed."""
        if self.credentials is not None:
            return server.add_secure_port(listen, self.credentials)
        return server.add_insecure_port(listen)
