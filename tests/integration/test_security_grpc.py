"""TLS, mutual TLS, tokens and per-device rate limits on a real server: real certificates from
``cluster.security.certs``, real Ed25519 tokens, the real node with real models and photos.

Each denial the issue names is proven here: no client certificate, a device for another gate or
community, a missing, expired or foreign-signed token, the wrong scope, a county token writing,
an operator of one community enrolling into another; and the rate limit that answers a
flooding device's frames with RESOURCE_EXHAUSTED while its stream goes on.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cluster.security import certs, tokens
from cluster.security.channel import open_channel
from cluster.server import RunningServer, start_server
from smartgate.config import SecurityConfig, ServerConfig
from smartgate.v1 import (
    capture_pb2,
    capture_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

pytestmark = pytest.mark.integration

RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
DEVICES = """
[devices.cam-1]
community = "c1"
gates = ["g1"]

[devices.cam-2]
community = "c2"
gates = ["g9"]
"""


@dataclass
class Site:
    """A site's PKI and signing key, made by the project's own tools."""

    pki: Path
    signing_key: Path
    ring: Path

    def token(self, scope: str, *communities: str, ttl_s: float = 600, **kw: object) -> str:
        return tokens.issue(
            tokens.load_signing_key(self.signing_key),
            subject=f"{scope}-test",
            scopes=[scope],
            communities=communities,
            ttl_s=ttl_s,
            **kw,  # type: ignore[arg-type]
        )

    def security(self, **kw: object) -> SecurityConfig:
        devices = self.pki / "devices.toml"
        devices.write_text(DEVICES)
        return SecurityConfig(
            tls_cert=self.pki / "server.pem",
            tls_key=self.pki / "server.key",
            client_ca=self.pki / "ca.pem",
            token_keys=self.ring,
            devices=devices,
            **kw,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    pki = tmp_path_factory.mktemp("pki")
    certs.init_ca(pki)
    certs.issue_server(pki)
    for device in ("cam-1", "cam-2", "cam-unbound"):
        certs.issue_device(pki, device)
    certs.issue_platform(pki, "platform")
    ring, _ = tokens.keygen(pki / "signing.key")
    return Site(pki, pki / "signing.key", ring)


Start = Callable[..., RunningServer]


@pytest.fixture
def start(node, site: Site) -> Iterator[Start]:  # type: ignore[no-untyped-def]
    """Start a secured server on the test's node (mTLS, tokens, the devices file)."""
    running: list[RunningServer] = []

    def _start(**security: object) -> RunningServer:
        config = ServerConfig(listen="127.0.0.1:0", max_workers=8, grace_seconds=0.5)
        server = start_server(node, config, site.security(**security))
        running.append(server)
        return server

    yield _start
    for server in running:
        server.stop(0)


@pytest.fixture
def secured(start: Start) -> RunningServer:
    return start(device_fps=1000.0, device_burst=1000)


def _device(site: Site, server: RunningServer, device: str) -> grpc.Channel:
    return open_channel(
        server.address,
        ca=site.pki / "ca.pem",
        cert=site.pki / "devices" / f"{device}.pem",
        key=site.pki / "devices" / f"{device}.key",
    )


def _platform(site: Site, server: RunningServer, token: str | None) -> grpc.Channel:
    return open_channel(
        server.address,
        ca=site.pki / "ca.pem",
        cert=site.pki / "platforms" / "platform.pem",
        key=site.pki / "platforms" / "platform.key",
        token=token,
    )


def _frame(image: bytes, seq: int, gate: str = "g1", community: str = "c1") -> capture_pb2.Frame:
    return capture_pb2.Frame(community=community, gate=gate, device="", seq=seq, image=image)


@pytest.fixture(scope="module")
def photo(faces_dir: Path) -> bytes:
    return (faces_dir / "examples_obama-480p.jpg").read_bytes()


@pytest.fixture(scope="module")
def gallery(faces_dir: Path) -> bytes:
    return (faces_dir / "examples_obama.jpg").read_bytes()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# -- transport ------------------------------------------------------------------------------


def test_no_client_certificate_is_refused_at_the_handshake(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    with open_channel(secured.address, ca=site.pki / "ca.pem") as ch:
        code, _ = _code(
            lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        )
    assert code == grpc.StatusCode.UNAVAILABLE
    with open_channel(secured.address) as ch:  # plaintext to a TLS port
        code, _ = _code(
            lambda: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        )
    assert code == grpc.StatusCode.UNAVAILABLE


def test_health_is_public_behind_mutual_tls(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    with _platform(site, secured, token=None) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_listener_speaks_tls(site: Site, node) -> None:  # type: ignore[no-untyped-def]
    port = node.metrics.serve("127.0.0.1:0", site.pki / "server.pem", site.pki / "server.key")
    context = ssl.create_default_context(cafile=str(site.pki / "ca.pem"))
    with urllib.request.urlopen(
        f"https://127.0.0.1:{port}/metrics", context=context, timeout=5
    ) as reply:
        assert b"smartgate_models_ready" in reply.read()


# -- devices --------------------------------------------------------------------------------


def test_device_streams_for_its_own_gate(site: Site, secured, node, gallery, photo) -> None:  # type: ignore[no-untyped-def]
    node.engine.enroll("c1", "obama", [gallery])
    with _device(site, secured, "cam-1") as ch:
        frames = [_frame(photo, seq) for seq in range(3)]
        decisions = list(capture_pb2_grpc.CaptureStub(ch).Stream(iter(frames), timeout=60))
    assert [d.seq for d in decisions] == [0, 1, 2]
    assert all(d.status.code == 0 for d in decisions)
    assert all(d.frame_action == capture_pb2.ACTION_OPEN for d in decisions)


def test_device_streaming_for_another_gate_is_denied(site: Site, secured, photo) -> None:  # type: ignore[no-untyped-def]
    frames = [_frame(photo, 0), _frame(photo, 1, gate="g2"), _frame(photo, 2)]
    answered = []
    with _device(site, secured, "cam-1") as ch, pytest.raises(grpc.RpcError) as info:
        for decision in capture_pb2_grpc.CaptureStub(ch).Stream(iter(frames), timeout=60):
            answered.append(decision.seq)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "gate 'g2'" in info.value.details()
    assert answered == [0]  # the frame before the foreign one was answered, none after


def test_device_submitting_for_another_community_is_denied(
    site: Site, secured, node, photo
) -> None:  # type: ignore[no-untyped-def]
    node.engine.registry.create_community("c1")
    before = node.scheduler.stats.submitted
    with _device(site, secured, "cam-1") as ch:
        stub = capture_pb2_grpc.CaptureStub(ch)
        code, details = _code(lambda: stub.Submit(_frame(photo, 0, community="c2"), timeout=30))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "community c2" in details
        assert stub.Submit(_frame(photo, 1), timeout=30).status.code == 0
    assert node.scheduler.stats.submitted == before + 1  # the denied frame was never queued


def test_unbound_device_and_device_on_platform_methods_are_denied(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    with _device(site, secured, "cam-unbound") as ch:
        code, details = _code(
            lambda: capture_pb2_grpc.CaptureStub(ch).Submit(_frame(b"x", 0), timeout=10)
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "not bound" in details
    with _device(site, secured, "cam-1") as ch:
        code, details = _code(
            lambda: registry_pb2_grpc.RegistryStub(ch).ListPersons(
                registry_pb2.ListPersonsRequest(community="c1"), timeout=10
            )
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "needs scope" in details


def test_flooding_device_gets_resource_exhausted_frames_and_the_stream_goes_on(  # type: ignore[no-untyped-def]
    site: Site, start: Start, node, photo
) -> None:
    node.engine.registry.create_community("c1")
    server = start(device_fps=0.5, device_burst=2)
    frames = [_frame(photo, seq) for seq in range(6)]
    with _device(site, server, "cam-1") as ch:
        stub = capture_pb2_grpc.CaptureStub(ch)
        decisions = list(stub.Stream(iter(frames), timeout=60))
        code, details = _code(lambda: stub.Submit(_frame(photo, 99), timeout=30))
    assert [d.seq for d in decisions] == list(range(6))  # every frame answered, stream ended OK
    codes = [d.status.code for d in decisions]
    assert codes[:2] == [0, 0]
    assert codes[2:] == [RESOURCE_EXHAUSTED] * 4
    assert "faster than 0.5 frames/s" in decisions[2].status.message
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "device:cam-1" in details


# -- platforms ------------------------------------------------------------------------------


def _list_persons(ch: grpc.Channel, community: str = "c1") -> registry_pb2.ListPersonsResponse:
    return registry_pb2_grpc.RegistryStub(ch).ListPersons(
        registry_pb2.ListPersonsRequest(community=community), timeout=10
    )


def test_missing_token_is_unauthenticated(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    with _platform(site, secured, token=None) as ch:
        code, details = _code(lambda: _list_persons(ch))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "send a token" in details


def test_expired_token_is_unauthenticated(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    expired = site.token("operator", "c1", ttl_s=60, now=time.time() - 3600)
    with _platform(site, secured, expired) as ch:
        code, details = _code(lambda: _list_persons(ch))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in details


def test_token_signed_by_another_key_is_unauthenticated(site: Site, secured, tmp_path) -> None:  # type: ignore[no-untyped-def]
    tokens.keygen(tmp_path / "rogue.key")
    rogue = tokens.issue(
        tokens.load_signing_key(tmp_path / "rogue.key"),
        subject="rogue",
        scopes=["admin"],
        ttl_s=600,
    )
    with _platform(site, secured, rogue) as ch:
        code, details = _code(lambda: _list_persons(ch))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown key" in details
    with _platform(site, secured, "not-a-token") as ch:
        code, _ = _code(lambda: _list_persons(ch))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_scope_is_permission_denied(site: Site, secured, photo) -> None:  # type: ignore[no-untyped-def]
    with _platform(site, secured, site.token("operator", "c1")) as ch:
        code, details = _code(
            lambda: capture_pb2_grpc.CaptureStub(ch).Submit(_frame(photo, 0), timeout=10)
        )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "needs scope admin or gate" in details


def test_operator_of_c1_enrolling_into_c2_is_denied(site: Site, secured, node, gallery) -> None:  # type: ignore[no-untyped-def]
    with _platform(site, secured, site.token("operator", "c1")) as ch:
        stub = registry_pb2_grpc.RegistryStub(ch)

        def enroll(community: str) -> registry_pb2.EnrollPersonResponse:
            return stub.EnrollPerson(
                registry_pb2.EnrollPersonRequest(
                    community=community, person_id="obama", images=[gallery]
                ),
                timeout=60,
            )

        code, details = _code(lambda: enroll("c2"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "may not access community c2" in details
        assert enroll("c1").person.template_count == 1
        listed = stub.ListCommunities(registry_pb2.ListCommunitiesRequest(), timeout=10)
    assert not node.engine.registry.has_community("c2")  # nothing was processed
    node.engine.registry.create_community("c3")
    assert list(listed.communities) == ["c1"]  # c3 exists but is not the operator's


def test_county_token_cannot_write(site: Site, secured, node, gallery) -> None:  # type: ignore[no-untyped-def]
    node.engine.enroll("c1", "obama", [gallery])
    with _platform(site, secured, site.token("county")) as ch:
        stub = registry_pb2_grpc.RegistryStub(ch)
        code, details = _code(
            lambda: stub.RemovePerson(
                registry_pb2.RemovePersonRequest(community="c1", person_id="obama"), timeout=10
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "needs scope admin or operator" in details
        code, _ = _code(
            lambda: stub.EnrollPerson(
                registry_pb2.EnrollPersonRequest(community="c1", person_id="x", images=[gallery]),
                timeout=60,
            )
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert [p.person_id for p in _list_persons(ch).persons] == ["obama"]  # reads are fine


def test_county_searches_across_communities(site: Site, secured, node, gallery, photo) -> None:  # type: ignore[no-untyped-def]
    node.engine.enroll("c1", "obama", [gallery])
    node.engine.enroll("c2", "obama-too", [gallery])
    request = search_pb2.SearchFaceRequest(
        communities=["c1", "c2"], image=photo, top_k=5, reason="security test"
    )
    with _platform(site, secured, site.token("county")) as ch:
        reply = search_pb2_grpc.SearchStub(ch).SearchFace(request, timeout=60)
    assert {(h.person.community, h.person.person_id) for h in reply.hits} == {
        ("c1", "obama"),
        ("c2", "obama-too"),
    }
    with _platform(site, secured, site.token("operator", "c1")) as ch:
        code, _ = _code(lambda: search_pb2_grpc.SearchStub(ch).SearchFace(request, timeout=60))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_tokens_on_a_loopback_server_without_tls(site: Site, node) -> None:  # type: ignore[no-untyped-def]
    node.engine.registry.create_community("c1")
    config = ServerConfig(listen="127.0.0.1:0", max_workers=4, grace_seconds=0.5)
    server = start_server(node, config, SecurityConfig(token_keys=site.ring))
    try:
        with open_channel(server.address) as ch:
            code, _ = _code(lambda: _list_persons(ch))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(server.address, token=site.token("admin")) as ch:
            assert list(_list_persons(ch).persons) == []  # past the interceptor
    finally:
        server.stop(0)


def test_gate_simulator_runs_against_a_secured_server(site: Site, secured, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from benchmarks import gates

    token_file = tmp_path / "admin.token"
    token_file.write_text(site.token("admin"))
    argv = ["--server", secured.address, "--tls-ca", str(site.pki / "ca.pem")]
    argv += ["--cert", str(site.pki / "platforms/platform.pem")]
    argv += ["--key", str(site.pki / "platforms/platform.key"), "--token", f"@{token_file}"]
    argv += ["--gates", "1", "--vehicle-gates", "0", "--fps", "2", "--duration", "1"]
    argv += ["--warmup", "0.5", "--sweep", "1", "--passages", "1", "--no-plots"]
    out = tmp_path / "out"
    assert gates.main([*argv, "--plots", str(out), "--quiet"]) == 0
    node = json.loads((out / "report.json").read_text())["node"]
    assert node["answered"] == node["sent"] > 0
    assert node["errors"] == 0 and node["stream_errors"] == 0


def test_malformed_request_from_a_known_device_is_invalid_argument(site: Site, secured) -> None:  # type: ignore[no-untyped-def]
    with _device(site, secured, "cam-1") as ch:
        submit = ch.unary_unary("/smartgate.v1.Capture/Submit")  # raw bytes, no serializer
        code, _ = _code(lambda: submit(b"\x0a\x05\xff\xfe\xfd\xfc\xfb", timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    with open_channel(secured.address, ca=site.pki / "ca.pem", token="x.y.z") as ch:
        code, _ = _code(lambda: ch.unary_unary("/smartgate.v1.Capture/Submit")(b"", timeout=10))
    assert code == grpc.StatusCode.UNAVAILABLE  # no client certificate: no connection at all


def test_operator_watches_alerts_of_its_own_community_only(site: Site, secured, node) -> None:  # type: ignore[no-untyped-def]
    from smartgate.v1 import events_pb2

    node.engine.registry.create_community("c1")
    node.engine.registry.create_community("c2")
    with _platform(site, secured, site.token("operator", "c1")) as ch:
        stub = search_pb2_grpc.SearchStub(ch)

        def first_alert(community: str) -> object:
            request = events_pb2.WatchAlertsRequest(community=community)
            return next(iter(stub.WatchAlerts(request, timeout=1.5)))

        for community in ("c2", ""):  # another community; every community
            code, details = _code(lambda c=community: first_alert(c))  # type: ignore[misc]
            assert code == grpc.StatusCode.PERMISSION_DENIED, details
        code, _ = _code(lambda: first_alert("c1"))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED  # admitted; no alert came in 1.5 s
