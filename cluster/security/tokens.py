"""Signed, expiring bearer tokens for platforms (and, where a camera cannot hold a client
certificate, for gate devices).

A token is a JWT (RFC 7519) signed with Ed25519 (``alg`` ``EdDSA``), so any JWT library can
issue one for a site; its header names the signing key (``kid``: the first 16 hex digits of
the SHA-256 of the raw public key) and its claims are::

    sub          who: "ops-1", "county-platform", "cam-7"
    scopes       ["operator"] | ["county"] | ["admin"] | ["gate"]
    communities  the communities it may touch ([] for county/admin: every community)
    gates        for "gate": the gates it may stream for
    iat, exp     issued at, expires at (Unix seconds)
    jti          a random id (for the audit log)

The node verifies with a key ring of public keys only (``security.token_keys``: one PEM file
holding one or more public keys, or a folder of ``*.pub`` files). Rotation: add the new public
key to the ring, issue with the new private key, drop the old public key once its tokens expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cluster.security.principal import Principal
from smartgate.errors import ConfigError, InvalidInputError, UnauthenticatedError

SCOPES = ("gate", "operator", "county", "admin")
ALG = "EdDSA"
MAX_TOKEN_BYTES = 8192
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.DOTALL)
_TTL = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_TTL_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    scopes: frozenset[str]
    communities: frozenset[str]
    gates: frozenset[str]
    issued_at: float
    expires_at: float
    token_id: str
    key_id: str

    def principal(self) -> Principal:
        return Principal(
            subject=self.subject,
            kind="token",
            scopes=self.scopes,
            communities=self.communities,
            gates=self.gates,
        )


def key_id(public: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_ttl(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"8h"``, ``"30d"`` or plain seconds → seconds (> 0)."""
    m = _TTL.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise InvalidInputError(f"a time to live looks like 90s, 15m, 8h or 30d; got {text!r}")
    return float(m.group(1)) * _TTL_UNIT_S[m.group(2)]


# -- keys -----------------------------------------------------------------------------------


def keygen(path: Path) -> tuple[Path, str]:
    """Write a new signing key to ``path`` (PKCS#8 PEM, 0600) and its public key to
    ``path.pub``; returns the public key's path and the key id."""
    private = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"{path} exists already; a signing key is never overwritten") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public_path = path.with_name(path.name + ".pub")
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path, key_id(public)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), None)
    except FileNotFoundError as exc:
        raise ConfigError(f"signing key {path} does not exist (smartgate token keygen)") from exc
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 key (smartgate token keygen)")
    return key


class KeyRing:
    """The public keys a node accepts tokens from, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self.keys = {key_id(k): k for k in keys}
        if not self.keys:
            raise ConfigError("the token key ring holds no public key")

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """From one PEM file with one or more public keys, or a folder of ``*.pub`` files."""
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        keys: list[Ed25519PublicKey] = []
        for file in files:
            try:
                data = file.read_bytes()
            except FileNotFoundError as exc:
                raise ConfigError(f"security.token_keys: {file} does not exist") from exc
            for block in _PEM_BLOCK.findall(data):
                key = serialization.load_pem_public_key(block)
                if not isinstance(key, Ed25519PublicKey):
                    raise ConfigError(f"{file}: only Ed25519 public keys are accepted")
                keys.append(key)
        if not keys:
            raise ConfigError(f"security.token_keys: no public key in {path}")
        return cls(keys)


# -- issue and verify -----------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_claims(scopes: Iterable[str], communities: Iterable[str], gates: Iterable[str]) -> None:
    """The rules a token's scopes and bindings follow (raises ``InvalidInputError``)."""
    scopes, communities, gates = set(scopes), set(communities), set(gates)
    if not scopes or scopes - set(SCOPES):
        raise InvalidInputError(f"scopes must be among {', '.join(SCOPES)}; got {sorted(scopes)}")
    if scopes & {"operator", "gate"} and not communities:
        raise InvalidInputError("an operator or gate token names its communities (--community)")
    if "gate" in scopes and not gates:
        raise InvalidInputError("a gate token names its gates (--gate)")


def issue(
    key: Ed25519PrivateKey,
    *,
    subject: str,
    scopes: Iterable[str],
    communities: Iterable[str] = (),
    gates: Iterable[str] = (),
    ttl_s: float,
    now: float | None = None,
) -> str:
    """A signed token; ``ttl_s`` seconds from ``now`` (default: the clock) it expires."""
    scopes, communities, gates = sorted(set(scopes)), sorted(set(communities)), sorted(set(gates))
    check_claims(scopes, communities, gates)
    if not subject:
        raise InvalidInputError("a token names its subject (--subject)")
    if ttl_s <= 0:
        raise InvalidInputError(f"ttl must be > 0 seconds, got {ttl_s}")
    issued_at = int(time.time() if now is None else now)
    header = {"alg": ALG, "typ": "JWT", "kid": key_id(key.public_key())}
    claims = {
        "sub": subject,
        "scopes": scopes,
        "communities": communities,
        "gates": gates,
        "iat": issued_at,
        "exp": int(issued_at + ttl_s),
        "jti": secrets.token_hex(8),
    }
    signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode('ascii')))}"


def _json(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


class TokenVerifier:
    """Checks signature, key id, algorithm, expiry and claims; raises ``UnauthenticatedError``
    saying what was wrong. Tokens that verified are remembered (at most ``cache_size``), so a
    device sending a token with every frame pays for the signature once; expiry is checked on
    every use."""

    def __init__(self, ring: KeyRing, leeway_s: float = 30.0, cache_size: int = 4096) -> None:
        self.ring = ring
        self.leeway_s = leeway_s
        self.cache_size = cache_size
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str, now: float | None = None) -> Claims:
        now = time.time() if now is None else now
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token, now)
            if len(self._verified) >= self.cache_size:
                self._verified.clear()
            self._verified[token] = claims
        if now > claims.expires_at + self.leeway_s:
            ago = now - claims.expires_at
            raise UnauthenticatedError(f"token of {claims.subject!r} expired {ago:.0f} s ago")
        return claims

    def _verify(self, token: str, now: float) -> Claims:
        if len(token) > MAX_TOKEN_BYTES:
            raise UnauthenticatedError("token too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise UnauthenticatedError("malformed token (expected header.claims.signature)")
        try:
            header = json.loads(_unb64(parts[0]))
            claims = json.loads(_unb64(parts[1]))
            signature = _unb64(parts[2])
        except (ValueError, binascii.Error) as exc:
            raise UnauthenticatedError("malformed token (bad base64 or JSON)") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise UnauthenticatedError("malformed token (header and claims must be objects)")
        if header.get("alg") != ALG:
            raise UnauthenticatedError(f"token algorithm must be {ALG}, got {header.get('alg')!r}")
        kid = header.get("kid")
        public = self.ring.keys.get(kid) if isinstance(kid, str) else None
        if public is None or not isinstance(kid, str):
            raise UnauthenticatedError(f"token signed by an unknown key (kid {kid!r})")
        try:
            public.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
        except (InvalidSignature, UnicodeEncodeError) as exc:
            raise UnauthenticatedError("token signature does not verify") from exc
        return self._claims(claims, kid, now)

    def _claims(self, c: dict[str, Any], kid: str, now: float) -> Claims:
        try:
            exp, iat = float(c["exp"]), float(c["iat"])
            subject = str(c["sub"])
            scopes = _strings(c.get("scopes", []))
            communities = _strings(c.get("communities", []))
            gates = _strings(c.get("gates", []))
        except (KeyError, TypeError, ValueError) as exc:
            raise UnauthenticatedError(f"token claims incomplete or malformed ({exc})") from exc
        if now > exp + self.leeway_s:
            ago = now - exp
            raise UnauthenticatedError(f"token of {subject!r} expired {ago:.0f} s ago")
        if iat > now + self.leeway_s:
            raise UnauthenticatedError(f"token of {subject!r} is issued in the future")
        try:
            check_claims(scopes, communities, gates)
        except InvalidInputError as exc:
            raise UnauthenticatedError(f"token of {subject!r}: {exc}") from exc
        return Claims(subject, scopes, communities, gates, iat, exp, str(c.get("jti", "")), kid)


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("expected a list of strings")
    return frozenset(value)
