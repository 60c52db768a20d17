"""Pseudo-identities for faces that match nobody, per community ("strangers").

A usable face that matches no enrolled person is assigned to a stranger: the nearest existing
stranger of the community when its best template is at least ``threshold`` (cosine) away from
the face, else a new one named ``s-<n>`` (a counter per community, never reused, kept across
restarts). Repeated visits by the same unknown person thus link up ("seen 4 times this
week"). The caller assigns one face per passage (a tracker's best shot), not every frame.

Each stranger keeps up to ``max_templates`` templates in the community's FAISS
``IndexIDMap2(IndexFlatIP)`` (keyed by a template id) and the running sum of every face
assigned to it (its centroid's direction). A matched face becomes a template when there is
room and it is not a near-copy of one (cosine ``>= DUPLICATE_SIMILARITY``); when the stranger
is full, the template least similar to the updated centroid (possibly the new face) is
dropped, which keeps the cluster tight rather than letting it drift towards other people. Two
strangers are never merged (their ids are in use elsewhere); a face close to several joins the
nearest.

Persistence: ``save(directory)`` writes the arrays (templates, centroid sums, sighting times)
as an ``.npz`` sealed with the data key (``indexer.crypto``, bound to its file name) to a new
``strangers-<token>.sealed`` and then atomically replaces ``strangers.json`` (ids, counters,
times, and the name of the arrays file: no embedding), fsyncing both; older arrays files are
deleted afterwards. A crash at any point leaves the previous state loadable. A plaintext
``strangers-<token>.npz`` of an older smartgate is still read (and sealed at the next save).
``StrangerIndex.load(directory, dim)`` restores it (an empty index when there is nothing yet).

Thread-safe: one readers-writer lock; ``assign`` and ``remove`` are exclusive (an assignment
is a search and a change that must not interleave with another), reads and ``save`` share.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final, Protocol

import faiss
import numpy as np

from indexer.crypto import KeyRing
from indexer.face_index import _apply_search_threads, check_vectors
from indexer.locks import RWLock
from smartgate.config import PrivacyConfig
from smartgate.errors import ConfigError, InvalidInputError, ModelError, NotFoundError

FORMAT: Final = 1
MANIFEST: Final = "strangers.json"
#: A matched face this close to one of the stranger's templates adds nothing as a template.
DUPLICATE_SIMILARITY: Final = 0.95
#: Sighting times kept per stranger (the most recent); ``sightings`` counts them all.
MAX_SEEN: Final = 1024
_ID = re.compile(r"s-([1-9][0-9]*)")
_ARRAYS = re.compile(r"strangers-[0-9a-f]+\.(npz|sealed)")


@dataclass(frozen=True)
class Stranger:
    """What is known about one stranger."""

    stranger_id: str
    first_seen: float
    last_seen: float
    sightings: int
    templates: int


@dataclass(frozen=True)
class StrangerStats:
    """One community's strangers in numbers."""

    strangers: int
    templates: int
    sightings: int


@dataclass
class _Stranger:
    number: int
    first_seen: float
    last_seen: float
    sightings: int
    embedding_sum: np.ndarray  # (dim,) float64
    template_ids: list[int] = field(default_factory=list)
    seen: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_SEEN))

    @property
    def stranger_id(self) -> str:
        return f"s-{self.number}"

    def public(self) -> Stranger:
        return Stranger(
            self.stranger_id,
            self.first_seen,
            self.last_seen,
            self.sightings,
            len(self.template_ids),
        )


class _Community:
    def __init__(self, dim: int) -> None:
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.strangers: dict[int, _Stranger] = {}  # number → stranger
        self.owner: dict[int, int] = {}  # template id → stranger number
        self.vectors: dict[int, np.ndarray] = {}  # template id → (dim,) float32
        self.next_stranger = 1
        self.next_template = 0

    def add_template(self, stranger: _Stranger, vector: np.ndarray) -> None:
        template_id = self.next_template
        self.next_template += 1
        self.index.add_with_ids(vector[None, :], np.array([template_id], np.int64))
        self.owner[template_id] = stranger.number
        self.vectors[template_id] = vector
        stranger.template_ids.append(template_id)

    def drop_templates(self, template_ids: list[int]) -> None:
        if not template_ids:
            return
        ids = np.array(template_ids, np.int64)
        self.index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))
        for template_id in template_ids:
            del self.owner[template_id]
            del self.vectors[template_id]


def _check_community(community: object) -> str:
    if not isinstance(community, str) or not community:
        raise InvalidInputError(f"community must be a non-empty string, got {community!r}")
    return community


class StrangerBook(Protocol):
    """What the passages, erasure and the retention purge use of the strangers: a
    ``StrangerIndex`` (embedded mode), or in cluster mode
    ``cluster.distributed.strangers.ClusterStrangers`` (held by each community's index actor).
    ``save(directory)``: persist now (the proxy flushes the actors; it ignores ``directory``)."""

    def assign(
        self, community: str, embedding: np.ndarray, t: float
    ) -> tuple[str, bool, float]: ...

    def remove(self, community: str, stranger_ids: list[str]) -> int: ...

    def matching(self, community: str, embeddings: np.ndarray, threshold: float) -> list[str]: ...

    def stats(self, community: str) -> StrangerStats: ...

    def strangers(self, community: str) -> list[Stranger]: ...

    def get(self, community: str, stranger_id: str) -> Stranger: ...

    def sightings_since(self, community: str, stranger_id: str, since: float) -> int: ...

    def save(self, directory: Path | str) -> None: ...


class StrangerIndex:
    """Per-community stranger clusters over ``dim``-dimensional unit embeddings; ``keys`` seal
    what ``save`` writes (default: the user's key file, as ``indexer.store.Store``)."""

    def __init__(
        self,
        dim: int,
        threshold: float = 0.5,
        *,
        max_templates: int = 5,
        keys: KeyRing | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if not -1.0 <= threshold <= 1.0:
            raise InvalidInputError(f"threshold must be in [-1, 1], got {threshold}")
        if max_templates < 1:
            raise InvalidInputError(f"max_templates must be >= 1, got {max_templates}")
        self._dim = dim
        self.keys = KeyRing.from_config(PrivacyConfig()) if keys is None else keys
        self.threshold = float(threshold)
        self.max_templates = int(max_templates)
        self._communities: dict[str, _Community] = {}
        self._lock = RWLock()
        self._save_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    # -- changes -----------------------------------------------------------------------------

    def assign(self, community: str, embedding: np.ndarray, t: float) -> tuple[str, bool, float]:
        """Link a face of ``community`` seen at ``t`` to a stranger, creating one if needed.

        ``embedding``: ``(dim,)`` (or ``(1, dim)``) float32, L2-normalised. Returns
        ``(stranger_id, is_new, similarity)``: ``similarity`` is the cosine to the best
        template of the stranger joined, or for a new stranger to the nearest existing one
        (``-1.0`` when the community had none). Raises ``InvalidInputError`` on a bad
        community, embedding or time.
        """
        community = _check_community(community)
        if not isinstance(embedding, np.ndarray) or embedding.shape not in (
            (self._dim,),
            (1, self._dim),
        ):
            raise InvalidInputError(
                f"embedding must be a numpy float32 array of shape ({self._dim},), got "
                f"{getattr(embedding, 'shape', type(embedding).__name__)}"
            )
        vector = check_vectors(embedding.reshape(1, self._dim), self._dim, "embedding")
        t = float(t)
        if not math.isfinite(t):
            raise InvalidInputError(f"t must be finite, got {t}")
        _apply_search_threads()
        with self._lock.write():
            state = self._communities.get(community)
            if state is None:
                state = self._communities[community] = _Community(self._dim)
            similarity, number = -1.0, -1
            if state.index.ntotal:
                sims, ids = state.index.search(vector, 1)
                if ids[0, 0] >= 0:
                    similarity, number = float(sims[0, 0]), state.owner[int(ids[0, 0])]
            if number >= 0 and similarity >= self.threshold:
                stranger = state.strangers[number]
                self._join(state, stranger, vector[0], t)
                return stranger.stranger_id, False, similarity
            stranger = _Stranger(
                number=state.next_stranger,
                first_seen=t,
                last_seen=t,
                sightings=1,
                embedding_sum=vector[0].astype(np.float64),
            )
            stranger.seen.append(t)
            state.next_stranger += 1
            state.strangers[stranger.number] = stranger
            state.add_template(stranger, vector[0].copy())
            return stranger.stranger_id, True, similarity

    def _join(self, state: _Community, stranger: _Stranger, vector: np.ndarray, t: float) -> None:
        stranger.sightings += 1
        stranger.first_seen = min(stranger.first_seen, t)
        stranger.last_seen = max(stranger.last_seen, t)
        stranger.seen.append(t)
        stranger.embedding_sum += vector
        templates = np.stack([state.vectors[i] for i in stranger.template_ids])
        if float((templates @ vector).max()) >= DUPLICATE_SIMILARITY:
            return
        if len(stranger.template_ids) < self.max_templates:
            state.add_template(stranger, vector.copy())
            return
        centroid = stranger.embedding_sum / np.linalg.norm(stranger.embedding_sum)
        fit = templates @ centroid
        worst = int(np.argmin(fit))
        if float(vector @ centroid) <= float(fit[worst]):
            return  # the new face is the outlier: keep the templates as they are
        dropped = stranger.template_ids.pop(worst)
        state.drop_templates([dropped])
        state.add_template(stranger, vector.copy())

    def remove(self, community: str, stranger_ids: list[str]) -> int:
        """Forget these strangers of ``community`` (retention); unknown ids are ignored.

        Returns how many were removed. Their ids are not reused.
        """
        community = _check_community(community)
        numbers = set()
        for stranger_id in stranger_ids:
            match = _ID.fullmatch(stranger_id) if isinstance(stranger_id, str) else None
            if match is None:
                raise InvalidInputError(f"not a stranger id: {stranger_id!r} (expected s-<n>)")
            numbers.add(int(match.group(1)))
        with self._lock.write():
            state = self._communities.get(community)
            if state is None:
                return 0
            gone = [state.strangers.pop(n) for n in sorted(numbers) if n in state.strangers]
            state.drop_templates([i for s in gone for i in s.template_ids])
            return len(gone)

    def matching(self, community: str, embeddings: np.ndarray, threshold: float) -> list[str]:
        """Ids of the strangers of ``community`` with a template scoring ``>= threshold``
        against a row of ``embeddings`` ``(n, dim)`` (an enrolled person seen as a stranger
        before: erased with them)."""
        community = _check_community(community)
        queries = check_vectors(
            np.ascontiguousarray(embeddings, np.float32).reshape(-1, self._dim),
            self._dim,
            "embeddings",
        )
        with self._lock.read():
            state = self._communities.get(community)
            if state is None or state.index.ntotal == 0 or len(queries) == 0:
                return []
            sims, ids = state.index.search(queries, min(int(state.index.ntotal), 64))
            numbers = {
                state.owner[int(i)]
                for i, sim in zip(ids.ravel().tolist(), sims.ravel().tolist(), strict=True)
                if i >= 0 and sim >= threshold
            }
        return [f"s-{n}" for n in sorted(numbers)]

    def sighting_at(
        self, community: str, embedding: np.ndarray, t: float
    ) -> tuple[str, bool, float] | None:
        """What ``assign(community, embedding, t)`` answered when it already counted this face
        at exactly ``t``: the nearest stranger with a template at or above the threshold and a
        sighting at ``t`` (``is_new`` when that was its only sighting; ``similarity`` to its
        best template, as for a stranger joined), else ``None``. A caller that lost the answer
        of an assignment asks this first, so it is not counted twice."""
        community = _check_community(community)
        query = check_vectors(
            np.ascontiguousarray(embedding, np.float32).reshape(1, self._dim),
            self._dim,
            "embedding",
        )
        t = float(t)
        with self._lock.read():
            state = self._communities.get(community)
            if state is None or state.index.ntotal == 0:
                return None
            sims, ids = state.index.search(query, min(int(state.index.ntotal), 64))
            for i, sim in zip(ids[0].tolist(), sims[0].tolist(), strict=True):
                if i < 0 or sim < self.threshold:
                    break  # best first
                stranger = state.strangers[state.owner[int(i)]]
                if t in stranger.seen:
                    is_new = stranger.sightings == 1 and stranger.first_seen == t
                    return stranger.stranger_id, is_new, float(sim)
            return None

    def next_number(self, community: str) -> int:
        """The number ``n`` of the next new stranger of ``community`` (``s-<n>``)."""
        community = _check_community(community)
        with self._lock.read():
            state = self._communities.get(community)
            return 1 if state is None else state.next_stranger

    def reserve_from(self, community: str, number: int) -> None:
        """Number new strangers of ``community`` from ``number`` on at least (ids handed out
        before a crash, after the last save, are never given again: the caller persists a
        watermark ahead of the numbers it issues and passes it here after a restart)."""
        community = _check_community(community)
        with self._lock.write():
            state = self._communities.get(community)
            if state is None:
                state = self._communities[community] = _Community(self._dim)
            state.next_stranger = max(state.next_stranger, int(number))

    # -- reads -------------------------------------------------------------------------------

    def stats(self, community: str) -> StrangerStats:
        """Counts for ``community`` (all zero for a community without strangers)."""
        community = _check_community(community)
        with self._lock.read():
            state = self._communities.get(community)
            if state is None:
                return StrangerStats(0, 0, 0)
            return StrangerStats(
                strangers=len(state.strangers),
                templates=int(state.index.ntotal),
                sightings=sum(s.sightings for s in state.strangers.values()),
            )

    def strangers(self, community: str) -> list[Stranger]:
        """Every stranger of ``community``, oldest id first (retention picks from these)."""
        community = _check_community(community)
        with self._lock.read():
            state = self._communities.get(community)
            if state is None:
                return []
            return [s.public() for s in state.strangers.values()]

    def get(self, community: str, stranger_id: str) -> Stranger:
        """One stranger; ``NotFoundError`` when ``community`` has no such stranger."""
        return self._public(community, stranger_id)[0]

    def sightings_since(self, community: str, stranger_id: str, since: float) -> int:
        """How often the stranger was seen at or after ``since`` (the last ``MAX_SEEN`` count)."""
        return sum(1 for t in self._public(community, stranger_id)[1] if t >= since)

    def _public(self, community: str, stranger_id: str) -> tuple[Stranger, list[float]]:
        community = _check_community(community)
        match = _ID.fullmatch(stranger_id) if isinstance(stranger_id, str) else None
        with self._lock.read():
            state = self._communities.get(community)
            stranger = None
            if match is not None and state is not None:
                stranger = state.strangers.get(int(match.group(1)))
            if stranger is None:
                raise NotFoundError(f"community {community!r} has no stranger {stranger_id!r}")
            return stranger.public(), list(stranger.seen)

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path | str) -> None:
        """Write the whole index under ``directory`` (created if needed), atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._save_lock:
            with self._lock.read():
                manifest, arrays = self._snapshot()
            name = f"strangers-{secrets.token_hex(8)}.sealed"
            manifest["arrays"] = name
            buffer = io.BytesIO()
            np.savez(
                buffer,
                allow_pickle=False,
                templates=arrays["templates"],
                sums=arrays["sums"],
                seen=arrays["seen"],
            )
            sealed = self.keys.seal(buffer.getvalue(), _arrays_ad(name))
            _write_atomic(directory / name, lambda f: f.write(sealed))
            text = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
            _write_atomic(directory / MANIFEST, lambda f: f.write(text))
            _fsync_dir(directory)
            for old in directory.iterdir():
                if _ARRAYS.fullmatch(old.name) and old.name != name:
                    old.unlink(missing_ok=True)

    def _snapshot(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        communities = []
        templates: list[np.ndarray] = []
        sums: list[np.ndarray] = []
        seen: list[float] = []
        for name, state in self._communities.items():
            records = []
            for s in state.strangers.values():
                records.append(
                    {
                        "number": s.number,
                        "first_seen": s.first_seen,
                        "last_seen": s.last_seen,
                        "sightings": s.sightings,
                        "template_ids": list(s.template_ids),
                        "seen": len(s.seen),
                    }
                )
                templates.extend(state.vectors[i] for i in s.template_ids)
                sums.append(s.embedding_sum)
                seen.extend(s.seen)
            communities.append(
                {
                    "name": name,
                    "next_stranger": state.next_stranger,
                    "next_template": state.next_template,
                    "strangers": records,
                }
            )
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "dim": self._dim,
            "threshold": self.threshold,
            "max_templates": self.max_templates,
            "communities": communities,
        }
        arrays = {
            "templates": np.stack(templates) if templates else np.empty((0, self._dim), np.float32),
            "sums": np.stack(sums) if sums else np.empty((0, self._dim), np.float64),
            "seen": np.asarray(seen, np.float64),
        }
        return manifest, arrays

    @classmethod
    def load(
        cls,
        directory: Path | str,
        dim: int,
        threshold: float = 0.5,
        *,
        max_templates: int = 5,
        keys: KeyRing | None = None,
    ) -> StrangerIndex:
        """The index saved under ``directory``; an empty one when nothing was saved there yet.

        ``threshold`` and ``max_templates`` are the caller's (the saved ones are informative).
        Raises ``ModelError`` when the saved embeddings are not ``dim`` wide (the face model
        changed: the strangers must be rebuilt), ``ConfigError`` when the files are unreadable,
        of a newer format, or inconsistent.
        """
        index = cls(dim, threshold, max_templates=max_templates, keys=keys)
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.exists():
            return index
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            fmt = manifest.get("format")
            if fmt != FORMAT:
                raise ConfigError(
                    f"{path} has format {fmt!r}; this smartgate reads format {FORMAT}"
                )
            if manifest["dim"] != dim:
                raise ModelError(
                    f"{path} holds {manifest['dim']}-dimensional stranger templates, but the "
                    f"face model produces {dim}-dimensional embeddings; the face model changed, "
                    "so the strangers must be rebuilt (move the directory away)"
                )
            arrays_name = manifest["arrays"]
            if not isinstance(arrays_name, str) or not _ARRAYS.fullmatch(arrays_name):
                raise ConfigError(f"{path}: bad arrays file name {arrays_name!r}")
            raw = (directory / arrays_name).read_bytes()
            if arrays_name.endswith(".sealed"):
                raw = index.keys.open(raw, _arrays_ad(arrays_name))
            with np.load(io.BytesIO(raw), allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("templates", "sums", "seen")}
            index._restore(manifest, arrays)
            if not arrays_name.endswith(".sealed"):
                index.save(directory)  # an older smartgate's plaintext arrays: seal them now
        except (ConfigError, ModelError):
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidInputError) as exc:
            raise ConfigError(f"cannot load the strangers saved in {directory}: {exc}") from exc
        return index

    def _restore(self, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        templates = check_vectors(
            np.ascontiguousarray(arrays["templates"], np.float32), self._dim, "templates"
        )
        sums, seen = arrays["sums"], arrays["seen"]
        t_row = s_row = seen_row = 0
        for record in manifest["communities"]:
            state = _Community(self._dim)
            state.next_stranger = int(record["next_stranger"])
            state.next_template = int(record["next_template"])
            for r in record["strangers"]:
                count = int(r["seen"])
                stranger = _Stranger(
                    number=int(r["number"]),
                    first_seen=float(r["first_seen"]),
                    last_seen=float(r["last_seen"]),
                    sightings=int(r["sightings"]),
                    embedding_sum=np.array(sums[s_row], np.float64),
                )
                stranger.seen.extend(float(x) for x in seen[seen_row : seen_row + count])
                s_row, seen_row = s_row + 1, seen_row + count
                ids = [int(i) for i in r["template_ids"]]
                if (
                    not ids
                    or len(ids) != len(set(ids))
                    or not 1 <= stranger.number < state.next_stranger
                    or stranger.number in state.strangers
                    or any(not 0 <= i < state.next_template or i in state.owner for i in ids)
                ):
                    raise ValueError(f"stranger record {r} is inconsistent")
                vectors = templates[t_row : t_row + len(ids)]
                t_row += len(ids)
                state.index.add_with_ids(vectors, np.array(ids, np.int64))
                for template_id, vector in zip(ids, vectors, strict=True):
                    state.owner[template_id] = stranger.number
                    state.vectors[template_id] = vector.copy()
                stranger.template_ids = ids
                state.strangers[stranger.number] = stranger
            self._communities[str(record["name"])] = state
        if (t_row, s_row, seen_row) != (len(templates), len(sums), len(seen)):
            raise ValueError(
                f"arrays hold {len(templates)} templates, {len(sums)} sums, {len(seen)} times; "
                f"the manifest names {t_row}, {s_row}, {seen_row}"
            )


def reseal_saved(directory: Path | str, keys: KeyRing) -> bool:
    """Re-encrypt the saved arrays under ``directory`` with ``keys``' current key (key
    rotation; ``keys`` must still hold the key they were sealed with). ``False`` when there is
    nothing sealed to re-encrypt."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.exists():
        return False
    name = json.loads(path.read_text(encoding="utf-8")).get("arrays")
    if not isinstance(name, str) or not _ARRAYS.fullmatch(name) or not name.endswith(".sealed"):
        return False
    sealed = (directory / name).read_bytes()
    if keys.is_current(sealed):
        return False
    plain = keys.open(sealed, _arrays_ad(name))
    resealed = keys.seal(plain, _arrays_ad(name))
    _write_atomic(directory / name, lambda f: f.write(resealed))
    _fsync_dir(directory)
    return True


def _arrays_ad(name: str) -> bytes:
    """What a sealed arrays file is bound to: its own name."""
    return f"strangers|{name}".encode()


def _write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
