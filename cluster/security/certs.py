"""A small local certificate authority for a site: the CA, the server certificate, one client
certificate per capture device and per platform.

Files (PEM) under one folder::

    ca.pem, ca.key                      the site CA (keep ca.key offline once the site is set up)
    server.pem, server.key              the node's certificate (SANs: localhost, 127.0.0.1, ::1,
                                        and the --host names and addresses)
    devices/<id>.pem, devices/<id>.key  a capture device: CN = <id>, SAN URI smartgate://device/<id>
    platforms/<name>.pem, .key          a platform client: CN = <name>,
                                        SAN URI smartgate://platform/<name>

Keys are ECDSA P-256, written with mode 0600. The server trusts ``ca.pem`` for client
certificates (``security.client_ca``); a device is bound to its community and gates by the
devices file, not by its certificate, so moving a camera needs no new certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smartgate.errors import ConfigError, InvalidInputError

DEVICE_URI_PREFIX = "smartgate://device/"
PLATFORM_URI_PREFIX = "smartgate://platform/"
CA_DAYS = 3650
LEAF_DAYS = 825
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOOPBACK_SANS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


def check_name(kind: str, name: str) -> str:
    """A device id or platform name: 1-64 of letters, digits, ``.``, ``_``, ``-``."""
    if not NAME_RE.match(name):
        raise InvalidInputError(
            f"{kind} {name!r}: use 1-64 letters, digits, '.', '_' or '-' (starting with a letter "
            "or digit)"
        )
    return name


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smartgate"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise InvalidInputError(f"validity must be >= 1 day, got {days}")
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)


def load_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA of ``folder`` (``ca.pem``, ``ca.key``), made by ``init_ca``."""
    try:
        cert = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
    except FileNotFoundError as exc:
        raise ConfigError(f"no CA in {folder}: run `smartgate certs init {folder}` first") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{folder / 'ca.key'}: expected an EC private key")
    return cert, key


def init_ca(folder: Path, *, name: str = "smartgate site CA", days: int = CA_DAYS) -> Issued:
    """Create the site CA in ``folder``; refuses to overwrite an existing one."""
    if (folder / "ca.key").exists():
        raise ConfigError(f"{folder / 'ca.key'} exists already; a site has one CA")
    key = _new_key()
    not_before, not_after = _validity(days)
    subject = _name(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    issued = Issued(folder / "ca.pem", folder / "ca.key")
    _write_key(issued.key, key)
    _write_cert(issued.cert, cert)
    return issued


def _leaf(
    folder: Path,
    common_name: str,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = load_ca(folder)
    key = _new_key()
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def issue_server(
    folder: Path, hosts: list[str] | tuple[str, ...] = (), days: int = LEAF_DAYS
) -> Issued:
    """The node's certificate, valid for loopback and every name or address in ``hosts``."""
    names = list(dict.fromkeys([*LOOPBACK_SANS, *hosts]))
    cn = next((h for h in hosts if not _is_ip(h)), "localhost")
    cert, key = _leaf(folder, cn, [_san(h) for h in names], ExtendedKeyUsageOID.SERVER_AUTH, days)
    issued = Issued(folder / "server.pem", folder / "server.key")
    _write_key(issued.key, key)
    _write_cert(issued.cert, cert)
    return issued


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def issue_device(folder: Path, device_id: str, days: int = LEAF_DAYS) -> Issued:
    """A capture device's client certificate: CN and SAN URI name ``device_id``."""
    check_name("device id", device_id)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(DEVICE_URI_PREFIX + device_id)]
    cert, key = _leaf(folder, device_id, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    issued = Issued(
        folder / "devices" / f"{device_id}.pem", folder / "devices" / f"{device_id}.key"
    )
    _write_key(issued.key, key)
    _write_cert(issued.cert, cert)
    return issued


def issue_platform(folder: Path, name: str, days: int = LEAF_DAYS) -> Issued:
    """A platform's client certificate (the transport; its rights come from its token)."""
    check_name("platform name", name)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(PLATFORM_URI_PREFIX + name)]
    cert, key = _leaf(folder, name, sans, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    issued = Issued(folder / "platforms" / f"{name}.pem", folder / "platforms" / f"{name}.key")
    _write_key(issued.key, key)
    _write_cert(issued.cert, cert)
    return issued
