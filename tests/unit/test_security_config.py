"""The security section, the listener rules, the devices file, certificates and rate limits."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from cluster.security import certs
from cluster.security.devices import DeviceBook
from cluster.security.interceptor import bearer_token, certificate_identity
from cluster.security.principal import Principal, bound
from cluster.security.ratelimit import FrameLimiter
from cluster.security.transport import ServerSecurity, is_loopback
from smartgate.config import SecurityConfig, load_config
from smartgate.errors import (
    ConfigError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
)
from smartgate.v1 import capture_pb2


def test_security_section_from_file_env_and_defaults(tmp_path: Path) -> None:
    assert load_config(environ={}).security == SecurityConfig()
    cfg_file = tmp_path / "site.toml"
    cfg_file.write_text('[security]\ntls_cert = "/x/server.pem"\ntls_key = "/x/server.key"\n')
    cfg = load_config(cfg_file, environ={"SMARTGATE_SECURITY__DEVICE_FPS": "12.5"})
    assert cfg.security.tls_cert == Path("/x/server.pem")
    assert cfg.security.tls
    assert not cfg.security.authenticates
    assert cfg.security.device_fps == 12.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tls_cert": Path("c")}, "together"),
        ({"client_ca": Path("ca")}, "needs tls_cert"),
        ({"devices": Path("d")}, "set client_ca"),
        ({"device_burst": 0}, "device_burst"),
    ],
)
def test_security_section_refuses_half_configurations(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        SecurityConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:1", True),
        ("localhost:0", True),
        ("[::1]:50051", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.5:50051", False),
        ("gate.example:50051", False),
    ],
)
def test_is_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_open_listener_off_loopback_is_refused_unless_insecure() -> None:
    with pytest.raises(ConfigError, match="without TLS and authentication"):
        ServerSecurity.build(SecurityConfig(), "0.0.0.0:50051")
    assert ServerSecurity.build(SecurityConfig(insecure=True), "0.0.0.0:50051").interceptors == []
    # loopback without configuration: the open development mode, no interceptor
    dev = ServerSecurity.build(SecurityConfig(), "127.0.0.1:0")
    assert dev.interceptors == [] and dev.credentials is None and dev.admit is None


def test_tls_without_authentication_is_refused_off_loopback(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    issued = certs.issue_server(tmp_path)
    config = SecurityConfig(tls_cert=issued.cert, tls_key=issued.key)
    with pytest.raises(ConfigError, match="without authentication"):
        ServerSecurity.build(config, "0.0.0.0:50051")


def test_certificates_name_the_device_and_keys_are_private(tmp_path: Path) -> None:
    ca = certs.init_ca(tmp_path)
    server = certs.issue_server(tmp_path, ["gate.example", "10.0.0.5"])
    device = certs.issue_device(tmp_path, "cam-1")
    platform = certs.issue_platform(tmp_path, "county")
    for issued in (ca, server, device, platform):
        assert stat.S_IMODE(os.stat(issued.key).st_mode) == 0o600
    leaf = x509.load_pem_x509_certificate(device.cert.read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["smartgate://device/cam-1"]
    assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "cam-1"
    srv = x509.load_pem_x509_certificate(server.cert.read_bytes())
    names = srv.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "gate.example"} <= set(names.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {
        "127.0.0.1",
        "10.0.0.5",
    }
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    leaf.verify_directly_issued_by(ca_cert)
    with pytest.raises(ConfigError, match="exists already"):
        certs.init_ca(tmp_path)


def test_device_ids_are_checked(tmp_path: Path) -> None:
    certs.init_ca(tmp_path)
    with pytest.raises(Exception, match="letters, digits"):
        certs.issue_device(tmp_path, "../../etc/passwd")


def test_certificate_identity() -> None:
    assert certificate_identity({"peer_uri": [b"smartgate://device/cam-1"]}) == ("device", "cam-1")
    assert certificate_identity({"peer_uri": [b"smartgate://platform/county"]}) == (
        "platform",
        "county",
    )
    assert certificate_identity({"x509_common_name": [b"cam-9"]}) == ("device", "cam-9")
    assert certificate_identity({"transport_security_type": [b"insecure"]}) == ("", "")


def test_bearer_token_header() -> None:
    assert bearer_token([("authorization", "Bearer abc.def.ghi")]) == "abc.def.ghi"
    assert bearer_token([("x-other", "1")]) is None
    with pytest.raises(UnauthenticatedError, match="Bearer"):
        bearer_token([("authorization", "Basic dXNlcjpwdw==")])


def test_devices_file_binds_each_device(tmp_path: Path) -> None:
    path = tmp_path / "devices.toml"
    path.write_text('[devices.cam-1]\ncommunity = "c1"\ngates = ["g1", "g2"]\n')
    book = DeviceBook.load(path)
    p = book.principal("cam-1")
    assert p.kind == "device" and p.communities == {"c1"} and p.gates == {"g1", "g2"}
    with pytest.raises(PermissionDeniedError, match="not bound"):
        book.principal("cam-2")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[devices.cam-1]\ngates = ["g1"]\n', "community"),
        ('[devices.cam-1]\ncommunity = "c1"\ngates = []\n', "gates"),
        ('[devices.cam-1]\ncommunity = "c1"\ngates = ["g"]\nroom = 1\n', "unknown field"),
        ('[cameras.cam-1]\ncommunity = "c1"\n', "unknown table"),
        ("[devices\n", "devices"),
    ],
)
def test_devices_file_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "devices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        DeviceBook.load(path)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_the_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = FrameLimiter(rate=10, burst=5, clock=clock)
    assert [limiter.allow("device:cam-1") for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("device:cam-2")  # another device has its own bucket
    clock.now += 0.1  # one frame's worth at 10/s
    assert limiter.allow("device:cam-1")
    assert not limiter.allow("device:cam-1")
    clock.now += 10  # refills to the burst, not beyond
    assert sum(limiter.allow("device:cam-1") for _ in range(10)) == 5


def test_rate_limit_applies_to_capture_principals_only() -> None:
    limiter = FrameLimiter(rate=1, burst=1, clock=Clock())
    frame = capture_pb2.Frame(community="c1", gate="g1", seq=7)
    for _ in range(3):
        limiter.admit(frame)  # LOCAL (auth off): never limited
    device = Principal("cam-1", "device", frozenset({"gate"}), frozenset({"c1"}), frozenset({"g1"}))
    admin = Principal("root", "token", frozenset({"admin", "gate"}))
    with bound(admin):
        for _ in range(3):
            limiter.admit(frame)
    with bound(device):
        limiter.admit(frame)
        with pytest.raises(RateLimitedError, match="frame 7"):
            limiter.admit(frame)
