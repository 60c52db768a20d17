"""One community's face templates in memory: a FAISS inner-product index keyed by template id.

Vectors are L2-normalised float32 embeddings, so inner product is cosine similarity.

Locking: FAISS CPU indexes are safe for concurrent searches but not for a search running
while the index changes (``add`` may reallocate the storage a search reads; ``remove`` compacts
it). ``FaceIndex`` therefore guards itself with a readers-writer lock: searches share it (FAISS
releases the GIL, so they really run in parallel), ``add``/``remove`` take it exclusively.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from indexer.locks import RWLock
from smartgate.errors import AlreadyExistsError, InvalidInputError

# FAISS sends query batches smaller than this threshold down a slow non-BLAS path; the
# project's measurements (docs: PLATFORM.md) show 100k x 512 with 64 queries going from
# ~223 ms to ~35-40 ms with 20. The setting is process-wide.
faiss.cvar.distance_compute_blas_threshold = 20

_search_threads = 1
_thread_state = threading.local()


def set_search_threads(threads: int) -> None:
    """How many OpenMP threads a FAISS search may use (default 1).

    OpenMP keeps this per calling thread, and server threads are created after start-up, so
    each thread applies it before its first search (``_apply_search_threads``). One thread
    keeps FAISS's spinning OpenMP workers from stealing the cores onnxruntime works on: on
    the 2-core machine, a one-face frame's match stage went from ~20 ms to ~0.3 ms.
    """
    global _search_threads  # noqa: PLW0603 (process-wide FAISS setting)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _search_threads = threads


def _apply_search_threads() -> None:
    if getattr(_thread_state, "threads", None) != _search_threads:
        faiss.omp_set_num_threads(_search_threads)
        _thread_state.threads = _search_threads


#: How far from 1.0 the L2 norm of an embedding may be before it is refused.
NORM_TOLERANCE = 1e-3


def check_vectors(vectors: object, dim: int, what: str = "vectors") -> np.ndarray:
    """Return ``vectors`` as a C-contiguous ``(n, dim)`` float32 array of unit rows.

    Raises ``InvalidInputError`` naming ``what`` and the expected against the actual shape or
    dtype when it is not a float32 ``(n, dim)`` array, holds NaN/inf, or a row's L2 norm is
    not 1 within ``NORM_TOLERANCE``. ``n`` may be 0.
    """
    if not isinstance(vectors, np.ndarray):
        raise InvalidInputError(
            f"{what} must be a numpy float32 array of shape (n, {dim}), "
            f"got {type(vectors).__name__}"
        )
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise InvalidInputError(
            f"{what} must have shape (n, {dim}), got shape {tuple(vectors.shape)}"
        )
    if vectors.dtype != np.float32:
        raise InvalidInputError(f"{what} must be float32, got dtype {vectors.dtype}")
    out = np.ascontiguousarray(vectors)
    if len(out) == 0:
        return out
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise InvalidInputError(f"{what} hold NaN or infinite values in rows {bad[:10].tolist()}")
    norms = np.linalg.norm(out, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(off):
        raise InvalidInputError(
            f"{what} must be L2-normalised; rows {off[:10].tolist()} have norms "
            f"{np.round(norms[off[:10]], 4).tolist()}"
        )
    return out


def check_ids(ids: object, what: str = "ids") -> np.ndarray:
    """Return ``ids`` as a C-contiguous ``(n,)`` int64 array of non-negative ids."""
    if not isinstance(ids, np.ndarray):
        raise InvalidInputError(
            f"{what} must be a numpy int64 array of shape (n,), got {type(ids).__name__}"
        )
    if ids.ndim != 1:
        raise InvalidInputError(f"{what} must have shape (n,), got shape {tuple(ids.shape)}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InvalidInputError(f"{what} must be an integer array, got dtype {ids.dtype}")
    out = np.ascontiguousarray(ids, dtype=np.int64)
    if len(out) and int(out.min()) < 0:
        raise InvalidInputError(f"{what} must be >= 0 (-1 marks an empty result slot)")
    return out


class FaceIndex:
    """Exact cosine search over ``dim``-dimensional templates, each keyed by a template id.

    FAISS ``IndexIDMap2(IndexFlatIP(dim))``; thread-safe (see the module docstring).
    """

    def __init__(self, dim: int) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        self._dim = dim
        self._flat = faiss.IndexFlatIP(dim)
        self._index = faiss.IndexIDMap2(self._flat)
        self._ids: set[int] = set()
        self._lock = RWLock()

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def ntotal(self) -> int:
        """The number of templates in the index."""
        return int(self._index.ntotal)

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``vectors`` ``(n, dim)`` float32, unit rows, under ``ids`` ``(n,)`` int64.

        Raises ``InvalidInputError`` on a bad shape, dtype or value, or repeated ids in the
        batch, and ``AlreadyExistsError`` for an id the index already holds; nothing is added
        then.
        """
        ids = check_ids(ids)
        vectors = check_vectors(vectors, self._dim)
        if len(ids) != len(vectors):
            raise InvalidInputError(
                f"ids must have shape ({len(vectors)},) to match vectors {vectors.shape}, "
                f"got shape {ids.shape}"
            )
        if len(ids) == 0:
            return
        new = ids.tolist()
        if len(set(new)) != len(new):
            raise InvalidInputError("ids must be unique within one add")
        with self._lock.write():
            present = self._ids.intersection(new)
            if present:
                raise AlreadyExistsError(f"template ids already indexed: {sorted(present)[:10]}")
            self._index.add_with_ids(vectors, ids)
            self._ids.update(new)

    def remove(self, ids: np.ndarray) -> int:
        """Remove the templates ``ids`` ``(n,)``; unknown ids are ignored. Returns how many went."""
        ids = check_ids(ids)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            # IDSelectorBatch (a hash set) rather than IDSelectorArray (a scan per stored id).
            removed = int(
                self._index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))
            )
            self._ids.difference_update(ids.tolist())
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar templates of each query.

        ``queries``: ``(q, dim)`` float32 unit rows. Returns ``similarities`` ``(q, k)`` float32
        in descending order and ``ids`` ``(q, k)`` int64; slots beyond the index's size hold id
        ``-1`` and similarity ``-inf``.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        queries = check_vectors(queries, self._dim, "queries")
        k = int(k)
        if len(queries) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        _apply_search_threads()
        with self._lock.read():
            similarities, ids = self._index.search(queries, k)
        similarities[ids < 0] = -np.inf
        return similarities, ids
