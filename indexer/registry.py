"""The embedded (single-process) per-community face registry.

``FaceRegistry`` keeps every community's templates twice: durably in the ``Store`` (SQLite)
and searchably in a ``FaceIndex`` (FAISS), rebuilt from the store when the registry is opened.
Each index follows the registry's ``IndexPolicy``: exact while small, approximate past the
policy's threshold, switched (and compacted) by a background rebuild that searches and
enrolments do not wait for; ``rebuild`` asks for one. A large community reopens as pq at once
when its snapshot saved the index's FAISS structure (``FaceIndex.from_structure``), else exact
(a copy of the stored vectors, immediate), turning approximate once its background build is done.

Consistency and locking:

* Writers (create, enrol, remove) are serialised by one mutex. Each writes SQLite first, in one
  transaction, and only after the commit applies the change to memory (index, template owners,
  person cache). A failed write (bad input, constraint, full disk) thus leaves both untouched;
  the in-memory step after the commit is plain array work that only running out of memory can
  break.
* A readers-writer lock separates the in-memory step from readers: ``identify`` and ``search``
  share it, so they never see a template whose owner is not yet (or no longer) known, while a
  writer's SQLite work does not hold them up. ``get`` and ``list_persons`` read SQLite.

Snapshots (``indexer.snapshot``, settings ``IndexConfig``): opening restores each community
from its sealed snapshot plus the templates the store holds beyond it (only those are
unsealed; ``restore_report`` says how each came back), which equals the full restore exactly.
A community's snapshot is rewritten in the background once ``snapshot_every_changes``
templates changed or its oldest change is ``snapshot_interval_s`` old (a background thread;
searches go on, writers wait one chunk copy at most), and on a clean ``close``. ``remove``
deletes the community's snapshot before it returns (a snapshot being written meanwhile is
discarded), so no snapshot outlives an erasure; the next one is written without the person.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np

import native
from indexer import snapshot
from indexer.changelog import Retention
from indexer.crypto import KeyRing
from indexer.face_index import (
    DEFAULT_POLICY,
    FaceIndex,
    IndexKind,
    IndexPolicy,
    check_vectors,
    compact_structure,
)
from indexer.locks import RWLock
from indexer.store import Store
from indexer.types import ROLES, Identification, Person, Role
from smartgate.checks import check_text
from smartgate.config import IndexConfig
from smartgate.errors import ConflictError, InvalidInputError, ModelError, NotFoundError

log = logging.getLogger(__name__)

MAX_ID_LENGTH: Final = 128
MAX_NAME_LENGTH: Final = 256
#: Upper bound of ``k``, ``top_k`` and ``limit`` arguments.
MAX_RESULTS: Final = 1000


class _TemplateOwners:
    """Template id → person key for one community, as two aligned arrays sorted by id, so a
    whole ``(q, k)`` block of search results maps to owners with one ``searchsorted``."""

    def __init__(self, ids: np.ndarray | None = None, keys: np.ndarray | None = None) -> None:
        self._ids = np.empty(0, np.int64) if ids is None else ids
        self._keys = np.empty(0, np.int64) if keys is None else keys
        self._sort()

    def _sort(self) -> None:
        if len(self._ids) > 1 and not bool(np.all(self._ids[1:] > self._ids[:-1])):
            order = np.argsort(self._ids, kind="stable")
            self._ids, self._keys = self._ids[order], self._keys[order]

    def add(self, ids: np.ndarray, key: int) -> None:
        # Template ids only grow (AUTOINCREMENT), so this is an append; _sort() checks that.
        self._ids = np.concatenate([self._ids, ids])
        self._keys = np.concatenate([self._keys, np.full(len(ids), key, np.int64)])
        self._sort()

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids, self._keys = self._ids[keep], self._keys[keep]

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Owners of ``ids`` (any shape, int64); ``-1`` for ``-1`` and unknown ids."""
        if len(self._ids) == 0:
            return np.full(ids.shape, -1, np.int64)
        pos = np.minimum(np.searchsorted(self._ids, ids), len(self._ids) - 1)
        found = self._ids[pos] == ids
        return np.where(found, self._keys[pos], -1).astype(np.int64, copy=False)


@dataclass
class _Community:
    index: FaceIndex
    owners: _TemplateOwners = field(default_factory=_TemplateOwners)
    persons: dict[int, Person] = field(default_factory=dict)


RestoreSource = Literal["snapshot", "store", "new"]


@dataclass(frozen=True)
class RestoreReport:
    """How a community's templates came back when the registry opened: ``"snapshot"`` (its
    snapshot, plus ``from_store`` templates unsealed from the store, ``dropped`` snapshot rows
    the store no longer holds), ``"store"`` (every template unsealed from the store) or
    ``"new"`` (created since). ``structure``: the index opened at once as the kind of the FAISS
    structure the snapshot saved (else exact, rebuilt behind when the policy says so)."""

    source: RestoreSource
    templates: int = 0
    from_snapshot: int = 0
    from_store: int = 0
    dropped: int = 0
    seconds: float = 0.0
    structure: bool = False

    def as_dict(self) -> dict[str, int | float | str]:
        return {
            "restored_from": self.source,
            "restored_templates": self.templates,
            "restored_from_snapshot": self.from_snapshot,
            "restored_from_store": self.from_store,
            "restored_dropped": self.dropped,
            "restore_s": round(self.seconds, 4),
            "restored_structure": self.structure,
        }


@dataclass
class _Unsaved:
    """A community's changes since its snapshot (guarded by ``FaceRegistry._snap_cond``)."""

    changes: int = 0  # templates added or removed since the snapshot
    since: float | None = None  # monotonic time of the oldest of them
    erasures: int = 0  # removals so far: a snapshot exported before one is not published
    not_before: float = 0.0  # retry time after a deferred or failed write


#: A restore adds its runs of snapshot rows and stored rows to the index one by one (no copy
#: of the vectors) up to this many runs, else joined into one array first.
_MAX_RESTORE_BLOCKS: Final = 64
#: A snapshot is not written while the community's index rebuilds (both copy every vector):
#: retried after this many seconds.
_SNAPSHOT_RETRY_S: Final = 1.0


class FaceRegistry:
    """Persons and face templates of every community, persisted under ``data_dir``.

    ``dim`` is the width of the embedder's vectors; every embedding passed in must be a
    float32, finite, L2-normalised ``dim``-vector. ``policy`` picks each community's index kind
    (default ``indexer.face_index.DEFAULT_POLICY``). ``keys`` seal the stored templates
    (``indexer.crypto``; default: the user's key file, see ``Store``). Thread-safe.
    """

    def __init__(
        self,
        data_dir: Path | str,
        dim: int,
        *,
        policy: IndexPolicy | None = None,
        keys: KeyRing | None = None,
        snapshots: IndexConfig | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if policy is not None and not isinstance(policy, IndexPolicy):
            raise InvalidInputError(f"policy must be an IndexPolicy, got {type(policy).__name__}")
        self.dim = dim
        self.policy = policy
        self.snapshots = IndexConfig() if snapshots is None else snapshots
        self._store = Store(data_dir, keys, retention=Retention.from_config(self.snapshots))
        self._write_mutex = threading.Lock()
        self._rw = RWLock()
        self._communities: dict[str, _Community] = {}
        self._reports: dict[str, RestoreReport] = {}
        self._snap_cond = threading.Condition()  # guards _unsaved and _closing
        self._snap_write = threading.Lock()  # one snapshot written at a time
        self._unsaved: dict[str, _Unsaved] = {}
        self._closing = False
        self._snap_thread: threading.Thread | None = None
        try:
            self._restore()
        except BaseException:
            self._store.close()
            raise
        cfg = self.snapshots
        if cfg.snapshots and (cfg.snapshot_every_changes or cfg.snapshot_interval_s):
            self._snap_thread = threading.Thread(
                target=self._snapshot_loop, name="face-snapshots", daemon=True
            )
            self._snap_thread.start()

    def _restore(self) -> None:
        stale = {d: n for d, n in self._store.template_dims().items() if d != self.dim}
        if stale:
            held = ", ".join(f"{n} of dimension {d}" for d, n in sorted(stale.items()))
            raise ModelError(
                f"{self._store.path} holds face templates ({held}) made by another embedder "
                f"than the configured one, which produces {self.dim}-dimensional embeddings. "
                "The face model changed: re-enrol every person with the new model (or configure "
                "the model they were enrolled with)."
            )
        if self.snapshots.snapshots:
            snapshot.remove_temporaries(self._store.data_dir)
        for community in self._store.communities():
            started = time.monotonic()
            persons, ids, keys, blocks, report, opened = self._load(community)
            state = _Community(self._new_index() if opened is None else opened)
            if opened is None:  # else the index holds them already
                if len(blocks) > _MAX_RESTORE_BLOCKS:  # one add, as a full restore does
                    blocks = [np.concatenate(blocks)]
                done = 0
                for block in blocks:  # views of the snapshot (no copy) and of the store's rows
                    state.index.add(ids[done : done + len(block)], block)
                    done += len(block)
            state.owners = _TemplateOwners(ids, keys)
            state.persons = {p.key: p for p in persons}
            self._communities[community] = state
            seconds = time.monotonic() - started
            self._reports[community] = RestoreReport(
                report.source,
                len(ids),
                report.from_snapshot,
                report.from_store,
                report.dropped,
                seconds,
                report.structure,
            )
            unsaved = report.from_store + report.dropped
            if report.source == "snapshot" and not report.structure and state.index.rebuilding:
                unsaved += 1  # no (usable) structure saved: written again once rebuilt
            if unsaved:
                self._unsaved[community] = _Unsaved(unsaved, started)
            log.info(
                "community %r: %d templates restored from the %s in %.2f s (%d from the "
                "snapshot, %d unsealed from the store, %d dropped), %s index%s",
                community,
                len(ids),
                report.source,
                seconds,
                report.from_snapshot,
                report.from_store,
                report.dropped,
                state.index.kind,
                " from its saved structure" if report.structure else "",
            )

    def _load(
        self, community: str
    ) -> tuple[
        list[Person], np.ndarray, np.ndarray, list[np.ndarray], RestoreReport, FaceIndex | None
    ]:
        """A community's persons, template ids ``(n,)`` ascending, owners ``(n,)`` and vectors
        as blocks ``(n_i, dim)`` that stack to ``(n, dim)`` in id order: from its snapshot
        plus the store's changes since, else from the store; and its index already holding
        them, opened from the snapshot's saved structure, when it has a usable one."""
        path = snapshot.snapshot_path(self._store.data_dir, community)
        found = None
        if self.snapshots.snapshots:
            found = snapshot.read_snapshot(path, self._store.keys, community, self.dim)
            if found is None:
                snapshot.delete_snapshot(path)  # unusable: the next one replaces it
        if found is not None:
            owners = self._store.face_template_owners(community)
            plan = snapshot.plan_restore(
                found.template_ids, found.person_keys, owners.template_ids, owners.person_keys
            )
            ids, keys = owners.template_ids, owners.person_keys
            hits = plan.from_snapshot
            got_ids, got_keys, got = self._store.face_templates_by_id(
                community, plan.missing, self.dim
            )
            if not (
                np.array_equal(got_ids, plan.missing) and np.array_equal(got_keys, keys[~hits])
            ):
                raise RuntimeError(f"{self._store.path} changed while it was restored")
            blocks = _blocks(hits, plan.snapshot_rows, found.vectors, got)
            opened = self._open_structure(community, found, plan, got)
            report = RestoreReport(
                "snapshot",
                from_snapshot=int(plan.from_snapshot.sum()),
                from_store=len(plan.missing),
                dropped=plan.dropped,
                structure=opened is not None,
            )
            return owners.persons, ids, keys, blocks, report, opened
        stored = self._store.face_templates(community, self.dim)
        n = len(stored.template_ids)
        report = RestoreReport("store", from_store=n)
        embeddings = [stored.embeddings]
        return stored.persons, stored.template_ids, stored.person_keys, embeddings, report, None

    def _open_structure(
        self,
        community: str,
        found: snapshot.FaceSnapshot,
        plan: snapshot.RestorePlan,
        got: np.ndarray,
    ) -> FaceIndex | None:
        """The community's index opened as the kind of its snapshot's saved FAISS structure
        (``FaceIndex.from_structure``), then brought up to the store through the normal paths:
        snapshot rows the store no longer holds removed (tombstones), the templates stored
        since (``plan.missing``, vectors ``got`` ``(m, dim)``) added. ``None`` when there is
        no structure, the policy wants another kind for the store's count, or it does not fit
        (warned): the caller restores exact and the policy rebuilds behind."""
        structure = found.structure
        if structure is None:
            return None
        live = len(plan.from_snapshot)
        wanted = (self.policy or DEFAULT_POLICY).kind_for(live, structure.kind)
        if wanted != structure.kind:
            log.info(
                "community %r: the snapshot's %s structure ignored (the policy wants %s for "
                "%d templates)",
                community,
                structure.kind,
                wanted,
                live,
            )
            return None
        try:
            index = FaceIndex.from_structure(
                self.dim, self.policy, structure, found.template_ids, found.vectors
            )
        except InvalidInputError as exc:
            log.warning(
                "community %r: the index structure in its snapshot ignored (restoring exact, "
                "rebuilt behind): %s",
                community,
                exc,
            )
            return None
        kept = np.zeros(len(found.template_ids), bool)
        kept[plan.snapshot_rows[plan.from_snapshot]] = True
        index.remove(found.template_ids[~kept])
        index.add(plan.missing, got)
        return index

    @property
    def store(self) -> Store:
        """The SQLite store this registry owns, shared by the registries of other things kept
        per community (``indexer.vehicles.VehicleRegistry``); closed by ``close``."""
        return self._store

    def _new_index(self) -> FaceIndex:
        return FaceIndex(self.dim, self.policy)

    def close(self) -> None:
        """Close the database (abandoning running index rebuilds), writing the snapshot of
        every community changed since its last one first; unusable afterwards."""
        with self._snap_cond:
            if self._closing:
                return
            self._closing = True
            self._snap_cond.notify_all()
        if self._snap_thread is not None:
            self._snap_thread.join()
        with self._rw.read():
            indexes = [state.index for state in self._communities.values()]
        for index in indexes:
            index.stop_rebuild()
        try:
            if self.snapshots.snapshots:
                with self._snap_cond:
                    changed = [c for c, u in self._unsaved.items() if u.changes]
                for community in changed:
                    self._write_snapshot(community, wait_rebuild=False)
        finally:
            self._store.close()

    def restore_report(self, community: str) -> RestoreReport:
        """How ``community``'s templates came back when the registry opened."""
        community = _check_id(community, "community id")
        with self._rw.read():
            self._state(community)
            return self._reports.get(community, RestoreReport("new"))

    def snapshot_path(self, community: str) -> Path:
        """Where ``community``'s snapshot is (or would be) written."""
        return snapshot.snapshot_path(self._store.data_dir, community)

    def write_snapshot(self, community: str) -> bool:
        """Write ``community``'s snapshot now (whether it was written: not when a removal
        raced it, which leaves it due again)."""
        community = _check_id(community, "community id")
        with self._rw.read():
            self._state(community)
        return self._write_snapshot(community, wait_rebuild=False)

    # -- snapshots --------------------------------------------------------------------------

    def _note_changes(self, community: str, changes: int, *, erased: bool = False) -> None:
        """Count ``changes`` towards ``community``'s next snapshot. ``erased``: a person was
        removed: their templates must not outlive this call in a snapshot, so the snapshot is
        deleted (and one being written is not published)."""
        with self._snap_cond:
            unsaved = self._unsaved.setdefault(community, _Unsaved())
            if erased:
                unsaved.erasures += 1
                try:
                    snapshot.delete_snapshot(self.snapshot_path(community))
                except OSError as exc:  # committed already: the next snapshot replaces it
                    log.error(
                        "community %r: snapshot not deleted after a removal: %r", community, exc
                    )
                    unsaved.changes, unsaved.since = max(1, unsaved.changes), time.monotonic()
            if changes:
                unsaved.changes += changes
                if unsaved.since is None:
                    unsaved.since = time.monotonic()
                self._snap_cond.notify_all()

    def _due(self, now: float) -> tuple[list[str], float | None]:
        """Communities whose snapshot is due, and how long until the next one may be (under
        ``_snap_cond``)."""
        every = self.snapshots.snapshot_every_changes
        interval = self.snapshots.snapshot_interval_s
        due, wait = [], None
        for community, unsaved in self._unsaved.items():
            if not unsaved.changes or unsaved.since is None:
                continue
            at = unsaved.since + interval if interval else float("inf")
            if every and unsaved.changes >= every:
                at = min(at, now)
            at = max(at, unsaved.not_before)
            if at <= now:
                due.append(community)
            elif at != float("inf"):
                wait = at - now if wait is None else min(wait, at - now)
        return due, wait

    def _snapshot_loop(self) -> None:
        while True:
            with self._snap_cond:
                while True:
                    if self._closing:
                        return
                    due, wait = self._due(time.monotonic())
                    if due:
                        break
                    self._snap_cond.wait(wait)
            for community in due:
                with self._snap_cond:
                    if self._closing:
                        return
                self._write_snapshot(community, wait_rebuild=True)

    def _write_snapshot(self, community: str, *, wait_rebuild: bool) -> bool:
        """Export ``community``'s live templates and seal them into its snapshot; on failure
        (logged) or a removal meanwhile, the changes stay counted."""
        with self._snap_write:
            with self._rw.read():
                state = self._communities.get(community)
            if state is None:
                return False
            if wait_rebuild and state.index.rebuilding:
                self._defer(community, 0)
                return False
            with self._snap_cond:
                unsaved = self._unsaved.setdefault(community, _Unsaved())
                taken, erasures = unsaved.changes, unsaved.erasures
                unsaved.changes, unsaved.since = 0, None
            tmp: Path | None = None
            try:
                ids, vectors, structure = state.index.export_with_structure()
                with self._rw.read():
                    keys = state.owners.lookup(ids)
                known = keys >= 0  # removed since the export
                ids, keys, vectors = ids[known], keys[known], vectors[known]
                if structure is not None and not bool(known.all()):
                    structure = compact_structure(structure, ids)  # no code of theirs either
                if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                    order = np.argsort(ids)
                    ids, keys, vectors = ids[order], keys[order], vectors[order]
                path = self.snapshot_path(community)
                if len(ids):
                    tmp = snapshot.write_temp(
                        path, self._store.keys, community, ids, keys, vectors, structure=structure
                    )
                with self._snap_cond:
                    if self._unsaved[community].erasures != erasures:
                        self._defer(community, taken, locked=True)
                        return False
                    if tmp is not None:
                        snapshot.publish(tmp, path)
                        tmp = None
                    else:
                        snapshot.delete_snapshot(path)
                log.info("community %r: snapshot of %d templates written", community, len(ids))
                return True
            except Exception as exc:  # disk full, I/O error: the store still has it all
                log.warning("community %r: snapshot not written: %r", community, exc)
                self._defer(community, taken)
                return False
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)

    def _defer(self, community: str, changes: int, *, locked: bool = False) -> None:
        """Count ``changes`` as unsaved again and retry the snapshot in a moment."""
        if not locked:
            with self._snap_cond:
                self._defer(community, changes, locked=True)
            return
        unsaved = self._unsaved.setdefault(community, _Unsaved())
        unsaved.changes += changes
        if unsaved.changes and unsaved.since is None:
            unsaved.since = time.monotonic()
        unsaved.not_before = time.monotonic() + _SNAPSHOT_RETRY_S

    def __enter__(self) -> FaceRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- communities ----------------------------------------------------------------------

    def create_community(self, community: str) -> None:
        """Create an empty community; ``AlreadyExistsError`` when it exists."""
        community = _check_id(community, "community id")
        with self._write_mutex:
            self._store.create_community(community, time.time())
            with self._rw.write():
                self._communities[community] = _Community(self._new_index())

    def has_community(self, community: str) -> bool:
        with self._rw.read():
            return community in self._communities

    def communities(self) -> list[str]:
        """Every community id, sorted."""
        with self._rw.read():
            return sorted(self._communities)

    # -- enrolment ------------------------------------------------------------------------

    def enroll(
        self,
        community: str,
        person_id: str,
        embeddings: np.ndarray,
        *,
        name: str = "",
        role: Role = "resident",
        expires_at: float | None = None,
        replace: bool = False,
        lookalike_threshold: float | None = None,
    ) -> Person:
        """Enrol a person with one template per row of ``embeddings`` ``(n, dim)``, ``n >= 1``.

        Creates the community on its first enrolment. An existing person raises
        ``AlreadyExistsError`` unless ``replace``, which swaps all their templates (and updates
        name, role and expiry) at once. Atomic: on any error nothing is stored or indexed.

        Poisoning check: with ``lookalike_threshold``, a photo whose embedding scores at least
        that against a *different* person of the community raises ``ConflictError`` naming
        them (one face must not become two identities); pass ``None`` to accept look-alikes.
        """
        community = _check_id(community, "community id")
        person_id = _check_id(person_id, "person id")
        name = _check_name(name)
        role = _check_role(role)
        if expires_at is not None:
            expires_at = _check_number(expires_at, "expires_at")
        vectors = check_vectors(embeddings, self.dim, "embeddings")
        if len(vectors) == 0:
            raise InvalidInputError(
                f"embeddings must hold at least one row, got shape (0, {self.dim})"
            )
        if lookalike_threshold is not None:
            lookalike_threshold = _check_number(lookalike_threshold, "lookalike_threshold")
        with self._write_mutex:
            if lookalike_threshold is not None:
                self._refuse_lookalikes(community, person_id, vectors, lookalike_threshold)
            done = self._store.enroll(
                community,
                person_id,
                vectors,
                name=name,
                role=role,
                expires_at=expires_at,
                replace=bool(replace),
                now=time.time(),
            )
            with self._rw.write():
                state = self._communities.get(community)
                if state is None:
                    state = self._communities[community] = _Community(self._new_index())
                if len(done.replaced_template_ids):
                    state.index.remove(done.replaced_template_ids)
                    state.owners.remove(done.replaced_template_ids)
                state.index.add(done.template_ids, vectors)
                state.owners.add(done.template_ids, done.person.key)
                state.persons[done.person.key] = done.person
            self._note_changes(community, len(done.template_ids) + len(done.replaced_template_ids))
        return done.person

    def lookalikes(
        self, community: str, person_id: str, embeddings: np.ndarray, threshold: float
    ) -> list[tuple[int, Person, float]]:
        """Persons other than ``person_id`` whose templates score ``>= threshold`` against a
        row of ``embeddings`` ``(n, dim)``: ``(row, person, score)``, best first."""
        queries = check_vectors(embeddings, self.dim, "embeddings")
        found: dict[int, tuple[int, Person, float]] = {}
        with self._rw.read():
            state = self._communities.get(community)
            if state is None or state.index.ntotal == 0:
                return []
            # 64 nearest templates per photo: more than one person holds (MAX_ENROLL_IMAGES).
            similarities, template_ids = state.index.search(queries, min(state.index.ntotal, 64))
            keys = state.owners.lookup(template_ids)
            for row in range(len(queries)):
                for key, score in zip(keys[row].tolist(), similarities[row].tolist(), strict=True):
                    person = state.persons.get(key) if key >= 0 else None
                    if person is None or person.person_id == person_id or score < threshold:
                        continue
                    if key not in found or score > found[key][2]:
                        found[key] = (row, person, float(score))
        return sorted(found.values(), key=lambda f: -f[2])

    def _refuse_lookalikes(
        self, community: str, person_id: str, vectors: np.ndarray, threshold: float
    ) -> None:
        hits = self.lookalikes(community, person_id, vectors, threshold)
        if hits:
            row, person, score = hits[0]
            raise ConflictError(
                f"image {row + 1} matches person {person.person_id!r} of community "
                f"{community!r} (similarity {score:.3f} >= {threshold:.3f}): one face cannot "
                f"be enrolled as {person_id!r} too. Check the photo, or enrol with "
                "allow_lookalike (audited) if they really are two people (twins)"
            )

    def person_embeddings(self, community: str, person_id: str) -> np.ndarray:
        """The stored templates ``(n, dim)`` of one person (``NotFoundError`` when absent)."""
        community = _check_id(community, "community id")
        person_id = _check_id(person_id, "person id")
        return self._store.person_embeddings(community, person_id)

    def remove(self, community: str, person_id: str) -> int:
        """Erase a person and every template of theirs; returns how many templates went."""
        community = _check_id(community, "community id")
        person_id = _check_id(person_id, "person id")
        with self._write_mutex:
            key, ids = self._store.remove_person(community, person_id)
            with self._rw.write():
                state = self._communities[community]
                state.index.remove(ids)
                state.owners.remove(ids)
                state.persons.pop(key, None)
            self._note_changes(community, len(ids), erased=True)
        return len(ids)

    # -- reads ----------------------------------------------------------------------------

    def get(self, community: str, person_id: str) -> Person:
        community = _check_id(community, "community id")
        person_id = _check_id(person_id, "person id")
        return self._store.get_person(community, person_id)

    def list_persons(
        self,
        community: str,
        role: Role | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Person]:
        """A page of persons ordered by ``person_id``; pass the last one's id as ``after``."""
        community = _check_id(community, "community id")
        if role is not None:
            role = _check_role(role)
        limit = _check_count(limit, "limit")
        if after is not None and not isinstance(after, str):
            raise InvalidInputError(f"after must be a person id string, got {type(after).__name__}")
        return self._store.list_persons(community, role=role, limit=limit, after=after)

    def identify(
        self,
        community: str,
        embeddings: np.ndarray,
        threshold: float,
        margin: float,
        k: int = 10,
    ) -> list[Identification]:
        """Decide who each query ``(q, dim)`` is, from its ``k`` nearest templates.

        A query is accepted when its best person scores ``>= threshold`` and beats the best
        other person among the ``k`` templates by ``>= margin`` (``native.match_identities``).
        Note that a person with ``k`` or more close templates can fill every slot, hiding the
        runner-up: keep ``k`` above the templates per person.
        """
        community = _check_id(community, "community id")
        threshold = _check_number(threshold, "threshold")
        margin = _check_number(margin, "margin")
        k = _check_count(k, "k")
        queries = check_vectors(embeddings, self.dim, "embeddings")
        with self._rw.read():
            state = self._state(community)
            similarities, template_ids = state.index.search(queries, k)
            person_keys = state.owners.lookup(template_ids)
            match = native.match_identities(similarities, person_keys, threshold, margin)
            out = []
            for key, score, runner_up, accepted in zip(
                match.person.tolist(),
                match.score.tolist(),
                match.runner_up.tolist(),
                match.accepted.tolist(),
                strict=True,
            ):
                candidate = state.persons.get(key) if key >= 0 else None
                out.append(
                    Identification(
                        person=candidate if accepted else None,
                        candidate=candidate,
                        score=float(score),
                        runner_up=float(runner_up),
                        accepted=bool(accepted),
                    )
                )
        return out

    def search(
        self, community: str, embedding: np.ndarray, top_k: int = 10
    ) -> list[tuple[Person, float]]:
        """The ``top_k`` persons most similar to ``embedding`` ``(dim,)``, each with their best
        template's score, distinct, in descending order of score."""
        community = _check_id(community, "community id")
        top_k = _check_count(top_k, "top_k")
        if not isinstance(embedding, np.ndarray) or embedding.ndim != 1:
            shape = getattr(embedding, "shape", type(embedding).__name__)
            raise InvalidInputError(f"embedding must have shape ({self.dim},), got {shape}")
        query = check_vectors(embedding.reshape(1, -1), self.dim, "embedding")
        with self._rw.read():
            state = self._state(community)
            ntotal = state.index.ntotal
            if ntotal == 0:
                return []
            # Fetch templates until top_k distinct persons are among them (or all were seen).
            k = min(ntotal, max(4 * top_k, 16))
            while True:
                similarities, template_ids = state.index.search(query, k)
                keys = state.owners.lookup(template_ids[0])
                scores = similarities[0]
                valid = keys >= 0
                keys, scores = keys[valid], scores[valid]
                distinct, first = np.unique(keys, return_index=True)
                if len(distinct) >= top_k or k >= ntotal:
                    break
                k = min(ntotal, 4 * k)
            # Results come in descending score, so each person's first hit is their best.
            best = np.sort(first)[:top_k]
            return [(state.persons[int(keys[i])], float(scores[i])) for i in best]

    def rebuild(
        self,
        community: str,
        kind: IndexKind | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """Rebuild the community's index from its templates (``FaceIndex.rebuild``) as ``kind``
        (``"flat"`` exact, ``"pq"`` or ``"hnsw"``; default: the policy's choice for its size),
        compacting removed templates, while identify, search and enrolment go on. With ``wait``
        returns once the new index serves (``False`` if ``timeout`` seconds passed first)."""
        community = _check_id(community, "community id")
        with self._rw.read():
            index = self._state(community).index
        return index.rebuild(kind, wait=wait, timeout=timeout)

    def index_kind(self, community: str) -> IndexKind:
        """``"flat"`` (exact), ``"pq"`` or ``"hnsw"``: the kind the community is searched with."""
        community = _check_id(community, "community id")
        with self._rw.read():
            return self._state(community).index.kind

    def indexed_templates(self, community: str) -> int:
        """How many templates the community's in-memory index holds."""
        community = _check_id(community, "community id")
        with self._rw.read():
            return self._state(community).index.ntotal

    def _state(self, community: str) -> _Community:
        state = self._communities.get(community)
        if state is None:
            raise NotFoundError(f"community {community!r} does not exist")
        return state


def _blocks(
    hits: np.ndarray, snapshot_rows: np.ndarray, snapshot_vectors: np.ndarray, got: np.ndarray
) -> list[np.ndarray]:
    """The restored vectors in id order as views: runs of consecutive snapshot rows
    (``hits`` ``(n,)`` true, ``snapshot_rows`` ``(n,)`` their rows in ``snapshot_vectors``) and
    runs of rows unsealed from the store (``got`` ``(n - hits.sum(), dim)``, in order)."""
    n = len(hits)
    if n == 0:
        return []
    follows = snapshot_rows[1:] == snapshot_rows[:-1] + 1
    breaks = (hits[1:] != hits[:-1]) | (hits[1:] & ~follows)
    starts = [0, *(np.flatnonzero(breaks) + 1).tolist()]
    misses_before = np.cumsum(~hits) - ~hits  # rows of `got` before each position
    out = []
    for a, b in zip(starts, [*starts[1:], n], strict=True):
        if hits[a]:
            row = int(snapshot_rows[a])
            out.append(snapshot_vectors[row : row + b - a])
        else:
            row = int(misses_before[a])
            out.append(got[row : row + b - a])
    return out


def _check_id(value: object, what: str) -> str:
    """Ids are matched exactly, so they must not differ from their look-alikes invisibly:
    printable, 1-128 characters, no surrounding white space, Unicode NFC."""
    text = check_text(value, what, MAX_ID_LENGTH)
    if text != text.strip():
        raise InvalidInputError(f"{what} {text!r} starts or ends with white space")
    if unicodedata.normalize("NFC", text) != text:
        raise InvalidInputError(f"{what} {text!r} is not in Unicode NFC form")
    return text


def _check_name(value: object) -> str:
    return check_text(value, "name", MAX_NAME_LENGTH, required=False)


def _check_role(value: object) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise InvalidInputError(f"role must be one of {', '.join(ROLES)}; got {value!r}")


def _check_number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInputError(f"{what} must be finite, got {number}")
    return number


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidInputError(f"{what} must be an integer, got {type(value).__name__}")
    if not 1 <= value <= MAX_RESULTS:
        raise InvalidInputError(f"{what} must be between 1 and {MAX_RESULTS}, got {value}")
    return int(value)
