"""Encryption at rest: every face template, stranger embedding and thumbnail written under the
data directory is sealed with AES-256-GCM, so a stolen data directory reveals no face.

A ``KeyRing`` holds one or more 32-byte keys; the first is *current* (new blobs are sealed with
it), the others only open older blobs (during a rotation). Each key is named by a 4-byte id
derived from it (``key_id``), so blobs say which key sealed them without naming it.

Blob layout (``seal``): ``version (1 byte, 1) | key id (4) | nonce (12) | ciphertext + tag (16)``,
33 bytes more than the plaintext. The caller passes *associated data* naming what the blob is
and where it belongs (``b"template|<community>|<person key>"``, a thumbnail's community and
event id ...): a blob copied onto another row or file fails to open (``ConfigError``).

Where the keys come from (``KeyRing.from_config``, section ``privacy``): the ``key`` text
(``SMARTGATE_PRIVACY__KEY``), else the ``key_file`` (default ``~/.config/smartgate/data.key``,
outside the data directory), which is created with one new key, mode 0600, when missing. Key
text: base64 keys separated by white space or commas, the current one first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from smartgate.config import PrivacyConfig
from smartgate.errors import ConfigError

log = logging.getLogger(__name__)

VERSION: Final = 1
KEY_BYTES: Final = 32
KEY_ID_BYTES: Final = 4
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
#: Bytes a sealed blob adds to its plaintext.
OVERHEAD: Final = 1 + KEY_ID_BYTES + NONCE_BYTES + TAG_BYTES
_HEADER: Final = 1 + KEY_ID_BYTES + NONCE_BYTES
_SEPARATORS: Final = re.compile(r"[\s,]+")


def key_id(key: bytes) -> bytes:
    """The 4-byte id naming ``key`` in blobs (a hash prefix: reveals nothing of the key)."""
    return hashlib.sha256(b"smartgate-data-key-id\x00" + key).digest()[:KEY_ID_BYTES]


def new_key() -> bytes:
    """A fresh random 32-byte key."""
    return secrets.token_bytes(KEY_BYTES)


def parse_keys(text: str, where: str) -> list[bytes]:
    """The keys in ``text`` (base64, separated by white space or commas, current first)."""
    keys = []
    for token in _SEPARATORS.split(text.strip()):
        if not token:
            continue
        try:
            key = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"{where}: a key is not valid base64") from exc
        if len(key) != KEY_BYTES:
            raise ConfigError(f"{where}: a key has {len(key)} bytes, expected {KEY_BYTES}")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{where}: holds no key")
    return keys


def format_keys(keys: Sequence[bytes]) -> str:
    """``keys`` as key text (one base64 key per line, current first)."""
    return "".join(base64.b64encode(k).decode("ascii") + "\n" for k in keys)


def write_key_file(path: Path, keys: Sequence[bytes]) -> None:
    """Replace ``path`` with ``keys`` atomically, mode 0600 (the folder is made 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(format_keys(keys))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _create_key_file(path: Path) -> None:
    """Create ``path`` with one new key unless it exists (never overwrites a key: two
    processes starting at once end up with the same file)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(format_keys([new_key()]))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return
        log.warning(
            "created a new data key in %s (mode 0600): keep it safe and back it up apart "
            "from the data directory; without it the stored faces cannot be read",
            path,
        )
    finally:
        tmp.unlink(missing_ok=True)


class KeyRing:
    """AES-256-GCM keys: ``keys[0]`` seals, every key opens. Thread-safe (immutable)."""

    def __init__(self, keys: Sequence[bytes], source: str = "keys") -> None:
        if not keys:
            raise ConfigError(f"{source}: a key ring needs at least one key")
        for key in keys:
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise ConfigError(f"{source}: every key must be {KEY_BYTES} bytes")
        self.keys: tuple[bytes, ...] = tuple(keys)
        self.source = source
        self._ciphers = {key_id(k): AESGCM(k) for k in self.keys}
        self.current_id = key_id(self.keys[0])

    def __repr__(self) -> str:
        ids = ", ".join(key_id(k).hex() for k in self.keys)
        return f"KeyRing({self.source}: {ids})"

    @classmethod
    def from_config(cls, config: PrivacyConfig) -> KeyRing:
        """The keys of ``config.key``, else of ``config.key_file`` (created when missing)."""
        if config.key:
            return cls(parse_keys(config.key, "privacy.key"), "privacy.key")
        return cls.from_file(config.key_file, create=True)

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> KeyRing:
        path = Path(path).expanduser()
        if create and not path.exists():
            _create_key_file(path)
        try:
            text = path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise ConfigError(f"the data key file {path} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the data key file {path}: {exc}") from exc
        if path.stat().st_mode & 0o077:
            log.warning("data key file %s is readable by others: chmod 600 it", path)
        return cls(parse_keys(text, str(path)), str(path))

    def with_current(self, key: bytes) -> KeyRing:
        """This ring with ``key`` first (current) and the others kept to open old blobs."""
        return KeyRing([key, *(k for k in self.keys if k != key)], self.source)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        """``plaintext`` encrypted with the current key, bound to ``associated``."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext, associated)
        return bytes([VERSION]) + self.current_id + nonce + sealed

    def open(self, blob: bytes, associated: bytes) -> bytes:
        """The plaintext of ``blob``; ``ConfigError`` when it is not a sealed blob, its key is
        not in this ring, or it fails authentication (wrong key, altered, or moved from where
        ``associated`` says it belongs)."""
        blob = bytes(blob)
        if len(blob) < OVERHEAD or blob[0] != VERSION:
            raise ConfigError(f"{_what(associated)} is not an encrypted blob of version {VERSION}")
        kid = blob[1 : 1 + KEY_ID_BYTES]
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise ConfigError(
                f"{_what(associated)} was encrypted with key {kid.hex()}, which is not among "
                f"the configured data keys ({self!r}): configure the key it was written with "
                "(privacy.key_file or SMARTGATE_PRIVACY__KEY)"
            )
        try:
            return cipher.decrypt(blob[1 + KEY_ID_BYTES : _HEADER], blob[_HEADER:], associated)
        except InvalidTag as exc:
            raise ConfigError(
                f"{_what(associated)} fails authentication with key {kid.hex()}: the data was "
                "altered or moved from another row"
            ) from exc

    def blob_key_id(self, blob: bytes) -> bytes | None:
        """The key id a sealed ``blob`` names (``None`` when it is no sealed blob)."""
        if len(blob) < OVERHEAD or blob[0] != VERSION:
            return None
        return bytes(blob[1 : 1 + KEY_ID_BYTES])

    def has_key_of(self, blob: bytes) -> bool:
        """Whether this ring holds the key that sealed ``blob``."""
        return self.blob_key_id(blob) in self._ciphers

    def is_current(self, blob: bytes) -> bool:
        """Whether ``blob`` is sealed with the current key (else a rotation re-seals it)."""
        return self.blob_key_id(blob) == self.current_id


def _what(associated: bytes) -> str:
    return associated.decode("utf-8", "replace").split("|", 1)[0] or "a blob"
