"""Tokens: issue and verify with real Ed25519 keys; every way a token can be wrong."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from cluster.security import tokens
from cluster.security.tokens import KeyRing, TokenVerifier
from smartgate.errors import ConfigError, InvalidInputError, UnauthenticatedError

NOW = 1_800_000_000.0


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "signing.key"
    tokens.keygen(path)
    return path


@pytest.fixture
def verifier(key_file: Path) -> TokenVerifier:
    return TokenVerifier(KeyRing.load(key_file.with_name("signing.key.pub")), leeway_s=30)


def _issue(key_file: Path, **kw: object) -> str:
    args: dict[str, object] = {
        "subject": "ops-1",
        "scopes": ["operator"],
        "communities": ["c1"],
        "ttl_s": 3600,
        "now": NOW,
    }
    args.update(kw)
    return tokens.issue(tokens.load_signing_key(key_file), **args)  # type: ignore[arg-type]


def test_keygen_writes_a_private_key_readable_by_its_owner_only(key_file: Path) -> None:
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert key_file.with_name("signing.key.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    with pytest.raises(ConfigError, match="never overwritten"):
        tokens.keygen(key_file)


def test_a_valid_token_gives_its_claims(key_file: Path, verifier: TokenVerifier) -> None:
    token = _issue(key_file, communities=["c1", "c2"])
    claims = verifier.verify(token, now=NOW + 10)
    assert claims.subject == "ops-1"
    assert claims.scopes == {"operator"}
    assert claims.communities == {"c1", "c2"}
    assert claims.expires_at == NOW + 3600
    principal = claims.principal()
    assert principal.actor == "token:ops-1"
    assert principal.kind == "token"


def test_expired_token_is_unauthenticated(key_file: Path, verifier: TokenVerifier) -> None:
    token = _issue(key_file, ttl_s=60)
    verifier.verify(token, now=NOW + 60 + 29)  # within the leeway
    with pytest.raises(UnauthenticatedError, match="expired"):
        verifier.verify(token, now=NOW + 60 + 31)


def test_token_issued_in_the_future_is_unauthenticated(
    key_file: Path, verifier: TokenVerifier
) -> None:
    token = _issue(key_file, now=NOW + 3600)
    with pytest.raises(UnauthenticatedError, match="future"):
        verifier.verify(token, now=NOW)


def test_token_of_another_key_is_unauthenticated(tmp_path: Path, verifier: TokenVerifier) -> None:
    other = tmp_path / "other.key"
    tokens.keygen(other)
    token = _issue(other)
    with pytest.raises(UnauthenticatedError, match="unknown key"):
        verifier.verify(token, now=NOW)


def _parts(token: str) -> list[dict[str, object]]:
    return [json.loads(base64.urlsafe_b64decode(p + "==")) for p in token.split(".")[:2]]


def _encode(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_altered_claims_do_not_verify(key_file: Path, verifier: TokenVerifier) -> None:
    token = _issue(key_file)
    _header, claims = _parts(token)
    claims["scopes"] = ["admin"]
    forged = ".".join([token.split(".")[0], _encode(claims), token.split(".")[2]])
    with pytest.raises(UnauthenticatedError, match="signature"):
        verifier.verify(forged, now=NOW)


def test_alg_none_is_refused(key_file: Path, verifier: TokenVerifier) -> None:
    token = _issue(key_file)
    header, claims = _parts(token)
    header["alg"] = "none"
    forged = f"{_encode(header)}.{_encode(claims)}."
    with pytest.raises(UnauthenticatedError, match="algorithm"):
        verifier.verify(forged, now=NOW)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "a.b.c", "!!!.???.***", "x" * 9000])
def test_malformed_tokens_are_unauthenticated(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(UnauthenticatedError):
        verifier.verify(garbage, now=NOW)


def test_key_ring_rotation_accepts_old_and_new_keys(tmp_path: Path) -> None:
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    tokens.keygen(old)
    tokens.keygen(new)
    ring_file = tmp_path / "ring.pem"
    ring_file.write_bytes(
        old.with_name("old.key.pub").read_bytes() + new.with_name("new.key.pub").read_bytes()
    )
    verifier = TokenVerifier(KeyRing.load(ring_file))
    for key in (old, new):
        assert verifier.verify(_issue(key), now=NOW).subject == "ops-1"
    folder_ring = KeyRing.load(tmp_path)  # a folder of *.pub works the same
    assert set(folder_ring.keys) == set(verifier.ring.keys)


def test_key_ring_refuses_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(ConfigError, match="no public key"):
        KeyRing.load(tmp_path / "empty.pem")


@pytest.mark.parametrize(
    ("scopes", "communities", "gates", "match"),
    [
        ([], ["c1"], [], "scopes must be"),
        (["root"], ["c1"], [], "scopes must be"),
        (["operator"], [], [], "names its communities"),
        (["gate"], ["c1"], [], "names its gates"),
    ],
)
def test_issue_refuses_tokens_that_make_no_sense(
    key_file: Path, scopes: list[str], communities: list[str], gates: list[str], match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        _issue(key_file, scopes=scopes, communities=communities, gates=gates)


def test_county_and_admin_tokens_may_name_no_community(
    key_file: Path, verifier: TokenVerifier
) -> None:
    for scope in ("county", "admin"):
        claims = verifier.verify(_issue(key_file, scopes=[scope], communities=[]), now=NOW)
        assert claims.communities == frozenset()


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("8h", 28800), ("30d", 2592000), ("5", 5)]
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1h", "8x", "h"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        tokens.parse_ttl(text)
