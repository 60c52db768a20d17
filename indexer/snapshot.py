"""Snapshots of a community's face templates, so a registry (or a cluster index actor) reopens
without unsealing every template stored in ``registry.db``.

The store stays the truth. A snapshot is a cache of one community's templates as they were in
memory: template ids, their owners (person keys) and their vectors. A restore reads it, then
reconciles it with the store's list of (template id, person key) pairs, which costs no
unsealing: rows the store no longer holds are dropped, rows it holds and the snapshot lacks
(the log since the snapshot) are read and unsealed from the store alone (``plan_restore``).
Template ids are never reused and a template never changes owner or vector, so the result
equals a full restore exactly, whatever moment the snapshot caught.

File layout (``write_snapshot``), all integers little-endian::

    magic b"SGFSNAP\\n" | u32 header length | header (JSON, UTF-8)
    chunks: u32 rows | u32 blob length | blob   (ceil(count / chunk_rows) of them)
    version 2 with a structure: u32 plaintext bytes | u32 blob length | blob   (its chunks)

The header names the format ``version``, ``dim``, ``community``, ``count``, ``chunk_rows``,
``created_at``, a random ``snapshot_id`` and (version 2) ``structure``: ``null``, or what the
structure chunks hold (``StructureInfo``: its own ``format``, ``kind``, ``rows``, ``bytes``,
``chunk_bytes`` and the ``sha256`` of its plaintext). Each blob is ``KeyRing.seal`` (AES-256-GCM)
of ``ids (rows, int64) | person keys (rows, int64) | vectors (rows, dim, float32)``, with the
header and the chunk's number as associated data: nothing of a face is readable without the
data key, and a chunk moved to another position, snapshot or community, or a header altered,
fails to open. Files are written atomically (a temporary file in the same folder, fsync,
rename, fsync of the folder). ``read_snapshot`` returns ``None``, with a logged warning, for a
file that is corrupt, truncated, of another format version, community or dimension, or sealed
with a key the ring lacks: the caller restores from the store instead. Version 1 files (no
structure) still load.

The structure (version 2, a ``"pq"`` index: ``indexer.face_index.IndexStructure``) is the
plaintext ``row ids (rows, int64) | faiss.serialize_index bytes`` cut into ``chunk_bytes``
pieces, each sealed like the rows with ``faces-snapshot-structure|header|number`` as associated
data. A structure that cannot be used (a chunk that fails to open, truncated, trailing bytes,
another checksum, size, kind or structure format) is dropped with a warning and the snapshot's
rows still load (``FaceSnapshot.structure`` is ``None``): the caller restores exact and
rebuilds. Whether it fits the rows and the index policy is ``FaceIndex.from_structure``'s and
the registry's check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np

from indexer.crypto import KeyRing
from indexer.face_index import INDEX_KINDS, IndexStructure
from smartgate.errors import ConfigError

log = logging.getLogger(__name__)

MAGIC: Final = b"SGFSNAP\n"
FORMAT_VERSION: Final = 2
#: Snapshot format versions this code reads (1: no ``structure`` in the header).
READABLE_VERSIONS: Final = (1, 2)
#: The structure section's own format (``StructureInfo.format``).
STRUCTURE_FORMAT: Final = 1
#: The folder of a data directory that holds its communities' face snapshots.
SNAPSHOT_DIR: Final = "face-snapshots"
SUFFIX: Final = ".snap"
#: Plaintext bytes sealed per chunk (the rows are rounded down, at least one).
CHUNK_BYTES: Final = 4 * 1024 * 1024
_MAX_HEADER: Final = 64 * 1024
_U32: Final = struct.Struct("<I")
_CHUNK_HEAD: Final = struct.Struct("<II")


class SnapshotError(Exception):
    """A snapshot file that cannot be used (the reason is the message)."""


@dataclass(frozen=True)
class StructureInfo:
    """The header's description of a sealed ``IndexStructure``: ``rows`` row ids and ``bytes``
    of FAISS serialisation, cut into ``chunk_bytes`` chunks, ``sha256`` of the whole plaintext
    (row ids then FAISS bytes)."""

    format: int
    kind: str
    rows: int
    bytes: int
    chunk_bytes: int
    sha256: str

    def as_json(self) -> dict[str, Any]:
        return {
            "bytes": self.bytes,
            "chunk_bytes": self.chunk_bytes,
            "format": self.format,
            "kind": self.kind,
            "rows": self.rows,
            "sha256": self.sha256,
        }

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> StructureInfo:
        """``SnapshotError`` unless ``fields`` describe a structure this code reads."""
        try:
            info = cls(
                int(fields["format"]),
                str(fields["kind"]),
                int(fields["rows"]),
                int(fields["bytes"]),
                int(fields["chunk_bytes"]),
                str(fields["sha256"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(f"unreadable structure description: {exc!r}") from exc
        if info.format != STRUCTURE_FORMAT:
            raise SnapshotError(
                f"structure format {info.format}, this code reads {STRUCTURE_FORMAT}"
            )
        if info.kind not in INDEX_KINDS:
            raise SnapshotError(f"structure of unknown kind {info.kind!r}")
        if info.rows < 0 or info.bytes < 1 or info.chunk_bytes < 1:
            raise SnapshotError(f"implausible structure {info}")
        return info

    @property
    def plain_bytes(self) -> int:
        return 8 * self.rows + self.bytes

    @property
    def chunks(self) -> int:
        return -(-self.plain_bytes // self.chunk_bytes)


@dataclass(frozen=True)
class SnapshotHeader:
    """What a snapshot holds; its JSON encoding is the associated data of every chunk."""

    version: int
    community: str
    dim: int
    count: int
    chunk_rows: int
    created_at: float
    snapshot_id: str
    #: Version 2: the structure's description (``StructureInfo.as_json``), or ``None``.
    structure: dict[str, Any] | None = None

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "chunk_rows": self.chunk_rows,
            "community": self.community,
            "count": self.count,
            "created_at": self.created_at,
            "dim": self.dim,
            "snapshot_id": self.snapshot_id,
            "version": self.version,
        }
        if self.version >= 2:
            fields["structure"] = self.structure
        return json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @property
    def chunks(self) -> int:
        return -(-self.count // self.chunk_rows)


@dataclass(frozen=True)
class FaceSnapshot:
    """A community's templates as a snapshot held them, sorted by template id."""

    header: SnapshotHeader
    template_ids: np.ndarray  # (n,) int64, strictly ascending
    person_keys: np.ndarray  # (n,) int64, owner of each template
    vectors: np.ndarray  # (n, dim) float32
    structure: IndexStructure | None = None  # the index's FAISS structure, when saved


def snapshot_dir(data_dir: Path) -> Path:
    return Path(data_dir) / SNAPSHOT_DIR


def snapshot_path(data_dir: Path, community: str) -> Path:
    """Where ``community``'s snapshot lives under ``data_dir``: named by a hash of the id (any
    length, any script; the header names the community)."""
    digest = hashlib.blake2b(community.encode("utf-8"), digest_size=16).hexdigest()
    return snapshot_dir(data_dir) / f"{digest}{SUFFIX}"


def chunk_rows_for(dim: int) -> int:
    """Rows per sealed chunk: ``CHUNK_BYTES`` of plaintext (id, owner and vector per row)."""
    return max(1, CHUNK_BYTES // (16 + 4 * dim))


def _chunk_ad(header: bytes, index: int) -> bytes:
    return b"faces-snapshot|" + header + b"|" + str(index).encode("ascii")


def _structure_ad(header: bytes, index: int) -> bytes:
    return b"faces-snapshot-structure|" + header + b"|" + str(index).encode("ascii")


def _structure_plain(structure: IndexStructure) -> bytes:
    """The structure's plaintext: row ids ``(rows,)`` little-endian int64, then FAISS bytes."""
    row_ids = np.ascontiguousarray(structure.row_ids, "<i8")
    data = np.ascontiguousarray(structure.data, np.uint8)
    if row_ids.ndim != 1 or data.ndim != 1 or len(data) == 0:
        raise ValueError(f"structure arrays: row ids {row_ids.shape}, data {data.shape}")
    return row_ids.tobytes() + data.tobytes()


# -- writing ------------------------------------------------------------------------------


def write_snapshot(
    path: Path,
    keys: KeyRing,
    community: str,
    template_ids: np.ndarray,
    person_keys: np.ndarray,
    vectors: np.ndarray,
    *,
    created_at: float | None = None,
    chunk_rows: int | None = None,
    structure: IndexStructure | None = None,
    structure_chunk_bytes: int = CHUNK_BYTES,
) -> SnapshotHeader:
    """Seal the templates (ids ``(n,)`` int64 strictly ascending, owners ``(n,)`` int64,
    vectors ``(n, dim)`` float32), and the index's ``structure`` when given, into ``path``,
    atomically; see the module docstring."""
    tmp = write_temp(
        path,
        keys,
        community,
        template_ids,
        person_keys,
        vectors,
        created_at=created_at,
        chunk_rows=chunk_rows,
        structure=structure,
        structure_chunk_bytes=structure_chunk_bytes,
    )
    header = read_header_of(tmp)
    publish(tmp, path)
    return header


def write_temp(
    path: Path,
    keys: KeyRing,
    community: str,
    template_ids: np.ndarray,
    person_keys: np.ndarray,
    vectors: np.ndarray,
    *,
    created_at: float | None = None,
    chunk_rows: int | None = None,
    structure: IndexStructure | None = None,
    structure_chunk_bytes: int = CHUNK_BYTES,
) -> Path:
    """``write_snapshot`` up to the rename: returns the fsynced temporary file beside ``path``
    (``publish`` puts it in place; the caller unlinks it to give up)."""
    ids = np.ascontiguousarray(template_ids, "<i8")
    owners = np.ascontiguousarray(person_keys, "<i8")
    rows = np.ascontiguousarray(vectors, "<f4")
    if ids.ndim != 1 or owners.shape != ids.shape or rows.ndim != 2 or len(rows) != len(ids):
        raise ValueError(
            f"snapshot arrays disagree: ids {ids.shape}, keys {owners.shape}, vectors {rows.shape}"
        )
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("snapshot template ids must be strictly ascending")
    dim = int(rows.shape[1])
    per_chunk = chunk_rows_for(dim) if chunk_rows is None else int(chunk_rows)
    plain = b"" if structure is None else _structure_plain(structure)
    info = None
    if structure is not None:
        info = StructureInfo(
            format=STRUCTURE_FORMAT,
            kind=structure.kind,
            rows=len(structure.row_ids),
            bytes=len(plain) - 8 * len(structure.row_ids),
            chunk_bytes=max(1, int(structure_chunk_bytes)),
            sha256=hashlib.sha256(plain).hexdigest(),
        )
    header = SnapshotHeader(
        version=FORMAT_VERSION,
        community=community,
        dim=dim,
        count=len(ids),
        chunk_rows=max(1, per_chunk),
        created_at=time.time() if created_at is None else float(created_at),
        snapshot_id=secrets.token_hex(8),
        structure=None if info is None else info.as_json(),
    )
    encoded = header.encode()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _U32.pack(len(encoded)) + encoded)
            for index, lo in enumerate(range(0, header.count, header.chunk_rows)):
                hi = min(header.count, lo + header.chunk_rows)
                chunk = ids[lo:hi].tobytes() + owners[lo:hi].tobytes() + rows[lo:hi].tobytes()
                blob = keys.seal(chunk, _chunk_ad(encoded, index))
                f.write(_CHUNK_HEAD.pack(hi - lo, len(blob)) + blob)
            if info is not None:
                view = memoryview(plain)
                for index, lo in enumerate(range(0, len(plain), info.chunk_bytes)):
                    piece = bytes(view[lo : lo + info.chunk_bytes])
                    blob = keys.seal(piece, _structure_ad(encoded, index))
                    f.write(_CHUNK_HEAD.pack(len(piece), len(blob)) + blob)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def publish(tmp: Path, path: Path) -> None:
    """Rename the written ``tmp`` onto ``path`` and make the rename durable."""
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_snapshot(path: Path) -> bool:
    """Remove one snapshot (durably); whether there was one."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def remove_temporaries(data_dir: Path) -> None:
    """Delete temporary files a crashed writer left in ``data_dir``'s snapshot folder."""
    folder = snapshot_dir(data_dir)
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def delete_snapshots(data_dir: Path) -> int:
    """Delete every face snapshot under ``data_dir``: its own folder and those of the cluster
    mode's per-community stores (``communities/*/``). Key rotation calls this: snapshots are a
    cache, rewritten under the new key by the next close. Returns how many files went."""
    root = Path(data_dir)
    folders = [snapshot_dir(root), *(snapshot_dir(p) for p in root.glob("communities/*"))]
    removed = 0
    for folder in folders:
        if folder.is_dir():
            removed += sum(1 for p in folder.iterdir() if p.is_file())
            shutil.rmtree(folder)
    return removed


# -- reading ------------------------------------------------------------------------------


def read_header_of(path: Path) -> SnapshotHeader:
    """The header of the snapshot at ``path`` (``SnapshotError`` when it has none)."""
    with path.open("rb") as f:
        return _parse_header(f)[0]


def _read_exact(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SnapshotError(f"truncated in {what} ({len(data)} of {n} bytes)")
    return data


def _parse_header(f: BinaryIO) -> tuple[SnapshotHeader, bytes]:
    if _read_exact(f, len(MAGIC), "the magic") != MAGIC:
        raise SnapshotError("not a face snapshot (bad magic)")
    (length,) = _U32.unpack(_read_exact(f, _U32.size, "the header length"))
    if length > _MAX_HEADER:
        raise SnapshotError(f"header of {length} bytes is implausible")
    encoded = _read_exact(f, length, "the header")
    try:
        fields: dict[str, Any] = json.loads(encoded.decode("utf-8"))
        header = SnapshotHeader(
            version=int(fields["version"]),
            community=str(fields["community"]),
            dim=int(fields["dim"]),
            count=int(fields["count"]),
            chunk_rows=int(fields["chunk_rows"]),
            created_at=float(fields["created_at"]),
            snapshot_id=str(fields["snapshot_id"]),
            structure=fields["structure"] if int(fields["version"]) >= 2 else None,
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"unreadable header: {exc!r}") from exc
    if header.encode() != encoded:
        raise SnapshotError("header is not in canonical form")
    if header.version not in READABLE_VERSIONS:
        raise SnapshotError(f"format version {header.version}, this code reads {READABLE_VERSIONS}")
    if header.structure is not None and not isinstance(header.structure, dict):
        raise SnapshotError(f"structure {header.structure!r} is not an object")
    if header.dim < 1 or header.count < 0 or header.chunk_rows < 1:
        raise SnapshotError(f"implausible header {header}")
    return header, encoded


def _chunks(f: BinaryIO, header: SnapshotHeader) -> Iterator[tuple[int, int, bytes]]:
    """``(index, rows, blob)`` of each chunk the header announces."""
    for index in range(header.chunks):
        rows, length = _CHUNK_HEAD.unpack(_read_exact(f, _CHUNK_HEAD.size, f"chunk {index}"))
        expected = min(header.chunk_rows, header.count - index * header.chunk_rows)
        if rows != expected:
            raise SnapshotError(f"chunk {index} holds {rows} rows, expected {expected}")
        yield index, rows, _read_exact(f, length, f"chunk {index}")
    if header.structure is None and f.read(1):
        raise SnapshotError("bytes after the last chunk")


def _read_structure(
    f: BinaryIO, header: SnapshotHeader, encoded: bytes, keys: KeyRing
) -> IndexStructure:
    """The structure section after the rows' chunks (``SnapshotError`` when unusable)."""
    assert header.structure is not None
    info = StructureInfo.parse(header.structure)
    if info.rows < header.count:
        raise SnapshotError(f"structure of {info.rows} rows for {header.count} templates")
    plain = bytearray()
    for index in range(info.chunks):
        size, length = _CHUNK_HEAD.unpack(
            _read_exact(f, _CHUNK_HEAD.size, f"structure chunk {index}")
        )
        expected = min(info.chunk_bytes, info.plain_bytes - index * info.chunk_bytes)
        if size != expected:
            raise SnapshotError(f"structure chunk {index} of {size} bytes, expected {expected}")
        blob = _read_exact(f, length, f"structure chunk {index}")
        try:
            piece = keys.open(blob, _structure_ad(encoded, index))
        except ConfigError as exc:
            raise SnapshotError(f"structure chunk {index}: {exc}") from exc
        if len(piece) != size:
            raise SnapshotError(f"structure chunk {index} opened to {len(piece)} bytes")
        plain += piece
    if f.read(1):
        raise SnapshotError("bytes after the structure's last chunk")
    if hashlib.sha256(plain).hexdigest() != info.sha256:
        raise SnapshotError("structure checksum mismatch")
    row_ids = np.frombuffer(plain, "<i8", info.rows).astype(np.int64)
    data = np.frombuffer(plain, np.uint8, info.bytes, 8 * info.rows).copy()
    kind: Any = info.kind
    return IndexStructure(kind, row_ids, data)


def load_snapshot(path: Path, keys: KeyRing, community: str, dim: int) -> FaceSnapshot:
    """The snapshot at ``path``, checked to be ``community``'s, ``dim`` wide and whole;
    ``SnapshotError`` (or ``OSError``) otherwise."""
    with path.open("rb") as f:
        header, encoded = _parse_header(f)
        if header.community != community:
            raise SnapshotError(f"holds community {header.community!r}, not {community!r}")
        if header.dim != dim:
            raise SnapshotError(f"holds {header.dim}-dimensional templates, not {dim}")
        ids = np.empty(header.count, np.int64)
        owners = np.empty(header.count, np.int64)
        vectors = np.empty((header.count, dim), np.float32)
        for index, rows, blob in _chunks(f, header):
            try:
                plain = keys.open(blob, _chunk_ad(encoded, index))
            except ConfigError as exc:
                raise SnapshotError(f"chunk {index}: {exc}") from exc
            if len(plain) != rows * (16 + 4 * dim):
                raise SnapshotError(f"chunk {index} has {len(plain)} bytes for {rows} rows")
            lo = index * header.chunk_rows
            ids[lo : lo + rows] = np.frombuffer(plain, "<i8", rows)
            owners[lo : lo + rows] = np.frombuffer(plain, "<i8", rows, 8 * rows)
            vectors[lo : lo + rows] = np.frombuffer(plain, "<f4", rows * dim, 16 * rows).reshape(
                rows, dim
            )
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise SnapshotError("template ids are not strictly ascending")
        structure = None
        if header.structure is not None:
            try:
                structure = _read_structure(f, header, encoded, keys)
            except SnapshotError as exc:
                log.warning(
                    "the index structure in face snapshot %s of community %r ignored (its "
                    "templates restored exact, the index rebuilt behind): %s",
                    path,
                    community,
                    exc,
                )
    return FaceSnapshot(header, ids, owners, vectors, structure)


def read_snapshot(path: Path, keys: KeyRing, community: str, dim: int) -> FaceSnapshot | None:
    """``load_snapshot``, or ``None`` when there is none or it cannot be used (warned)."""
    if not path.is_file():
        return None
    try:
        return load_snapshot(path, keys, community, dim)
    except (SnapshotError, OSError) as exc:
        log.warning(
            "face snapshot %s of community %r ignored (restoring from the store): %s",
            path,
            community,
            exc,
        )
        return None


# -- restoring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    """How the store's templates (ids ``(n,)`` ascending) come back: ``from_snapshot`` ``(n,)``
    bool, ``snapshot_rows`` ``(n,)`` int64 (the snapshot row of each template it holds, else
    -1), ``missing`` the ids to read from the store, ``dropped`` how many snapshot rows the
    store no longer holds."""

    from_snapshot: np.ndarray
    snapshot_rows: np.ndarray
    missing: np.ndarray
    dropped: int


def plan_restore(
    snapshot_ids: np.ndarray,
    snapshot_keys: np.ndarray,
    store_ids: np.ndarray,
    store_keys: np.ndarray,
) -> RestorePlan:
    """Match the store's ``(id, owner)`` pairs (ids ascending) against a snapshot's (ids
    ascending): a template comes from the snapshot when it holds the same id with the same
    owner, else from the store."""
    if len(snapshot_ids) == 0:
        found = np.zeros(len(store_ids), bool)
        pos = np.full(len(store_ids), -1, np.int64)
    else:
        pos = np.minimum(np.searchsorted(snapshot_ids, store_ids), len(snapshot_ids) - 1)
        found = (snapshot_ids[pos] == store_ids) & (snapshot_keys[pos] == store_keys)
        pos = np.where(found, pos, -1).astype(np.int64)
    return RestorePlan(
        from_snapshot=found,
        snapshot_rows=pos,
        missing=store_ids[~found],
        dropped=len(snapshot_ids) - int(found.sum()),
    )
