"""The embedded gRPC server: capture, registry, search, health and reflection on one port."""

from __future__ import annotations

import logging
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cluster.node import Node
from cluster.security.transport import ServerSecurity
from cluster.servicers import CaptureServicer, NodeSlot, RegistryServicer, SearchServicer
from cluster.wire import MalformedRequests
from smartgate.config import SecurityConfig, ServerConfig
from smartgate.errors import ConfigError
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    capture_pb2.DESCRIPTOR.services_by_name["Capture"].full_name,
    registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
    search_pb2.DESCRIPTOR.services_by_name["Search"].full_name,
)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    address: str
    health: health.HealthServicer
    slot: NodeSlot

    def ready(self, node: Node) -> None:
        """Hand the loaded, warmed node to the servicers and report SERVING."""
        self.slot.fill(node)
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, let in-flight calls finish for ``grace`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()

    def wait(self) -> None:
        self.server.wait_for_termination()


def start_server(
    node: Node | None, config: ServerConfig, security: SecurityConfig | None = None
) -> RunningServer:
    """Start serving on ``config.listen`` (port 0 picks a free port).

    ``security`` (``cluster.security.transport``): TLS, mutual TLS, the auth interceptor and
    per-device rate limits; None or empty: the open development mode, on loopback only.

    With ``node`` None the server starts NOT_SERVING (every call gets UNAVAILABLE) until
    ``RunningServer.ready(node)``: a load balancer never sends a frame to a cold node.
    """
    slot = NodeSlot()
    host, _, port_text = config.listen.rpartition(":")
    if not host or not port_text.isdigit():
        raise ConfigError(f"server.listen must be HOST:PORT, got {config.listen!r}")
    guard = ServerSecurity.build(security or SecurityConfig(), config.listen)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="grpc"),
        options=options,
        maximum_concurrent_rpcs=config.max_workers,
        interceptors=[*guard.interceptors, MalformedRequests()],
    )
    capture_pb2_grpc.add_CaptureServicer_to_server(CaptureServicer(slot, admit=guard.admit), server)
    registry_pb2_grpc.add_RegistryServicer_to_server(RegistryServicer(slot), server)
    search_pb2_grpc.add_SearchServicer_to_server(SearchServicer(slot), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            *SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    try:
        port = guard.add_port(server, config.listen)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {config.listen}: {exc}") from exc
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen} (address in use?)")
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    server.start()
    address = f"{host}:{port}"
    log.info("smartgate listening on %s", address)
    running = RunningServer(server, port, address, health_servicer, slot)
    if node is not None:
        running.ready(node)
    return running


def serve_forever(running: RunningServer, grace: float) -> None:
    """Block until SIGINT/SIGTERM, then stop gracefully."""
    import signal

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping (grace %.1f s)", grace)
    running.stop(grace)
