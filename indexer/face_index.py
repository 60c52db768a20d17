"""One community's face templates in memory: a FAISS inner-product index keyed by template id.

Vectors are L2-normalised float32 embeddings, so inner product is cosine similarity.

Index kinds (``IndexPolicy``): ``"flat"``, exact, for small communities; from
``IndexPolicy.exact_below`` templates on, ``"pq"``: every template scanned as a 64-byte
4-bit product-quantised code (``IndexPQFastScan``), the best ``pq_rerank`` x k re-scored exactly
against the stored vectors; or ``"hnsw"`` (``IndexHNSWFlat``). ``benchmarks/index_scale.py``
measured the crossing and the parameters (``indexer/README.md``).

Certified exact search: a ``"flat"`` index scans its float vectors (``IndexFlatIP``) below
``IndexPolicy.certified_from`` rows; from there on it also keeps every row as a 512-byte 8-bit
code (``_CodeScan``), scans the codes (a quarter of the bytes) for the best C candidates,
re-scores them from the float vectors and proves with a bound on the quantisation error that no
other row can enter the top k; a query whose proof fails gets the full float scan. Either way
the result is the float scan's: same ids, same float32 similarities (``_Rows._search_certified``).

Rows and tombstones: the FAISS index is labelled by row (insertion order); ``_Rows`` maps rows
to template ids and keeps a bitmap of the live ones. ``remove`` only clears bits (HNSW cannot
remove, and compacting a flat index moves every later row). Flat and HNSW searches pass the
bitmap as an ``IDSelectorBitmap``, so FAISS skips dead rows while it collects the top k; PQ
fast-scan takes no selector, so its candidates are filtered before re-scoring. Approximate
kinds widen their candidates (beam) by the dead share. Once dead rows pass
``IndexPolicy.max_dead_share`` of the index, or the size crosses the threshold, a rebuild
compacts the rows (or changes the kind).

Rebuilds (``FaceIndex.rebuild``) run in a background thread: it copies the live rows as of its
start in chunks, each under the read lock, builds the new index outside any lock while searches
and writes go on against the old one (writes are also logged), then, under the write lock,
replays the logged adds and removes onto the new index and swaps it in. No search waits for the
build and no write is lost. While it runs, the old and the new index are both in memory.

Locking: FAISS CPU indexes are safe for concurrent searches but not for a search running
while the index changes (``add`` may reallocate the storage a search reads). ``FaceIndex``
therefore guards itself with a readers-writer lock: searches share it (FAISS releases the GIL,
so they really run in parallel), ``add``/``remove`` and the swap take it exclusively.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import faiss
import numpy as np

from indexer.locks import RWLock
from smartgate.config import IndexConfig
from smartgate.errors import AlreadyExistsError, InvalidInputError

_log = logging.getLogger(__name__)
#: faiss's bundled stubs lack ``SearchParametersHNSW`` and ``knn_inner_products_by_idx``.
_faiss: Any = faiss

# In faiss 1.15 a flat search takes the BLAS path once ``n_queries * dim`` reaches this
# threshold (older versions compared ``n_queries`` alone); the default, 128000, keeps batches of
# up to 249 512-d queries on the slower per-vector path. On one thread, 512-d, 10k and 100k
# vectors (benchmarks/index_scale.py and the notes in indexer/README.md), BLAS wins from ~8
# queries on but is 4-7x slower for one query (10k: 2.8 ms against 0.4 ms): 8 x 512. The
# setting is process-wide. Searches that skip tombstones always take the per-vector path.
faiss.cvar.distance_compute_blas_threshold = 8 * 512

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


IndexKind = Literal["flat", "pq", "hnsw"]
INDEX_KINDS: Final[tuple[IndexKind, ...]] = ("flat", "pq", "hnsw")


@dataclass(frozen=True)
class IndexPolicy:
    """Which FAISS index a community's templates get, and when it is rebuilt.

    * ``exact_below``: exact search (``"flat"``, ``IndexFlatIP``) below this many live
      templates, ``approximate`` from it on. An approximate index goes back to exact only below
      half of it (no flapping at the edge).
    * ``approximate``: ``"pq"`` (the default: every template scanned as a 4-bit product-quantised
      code, ``IndexPQFastScan``, then the best ``pq_rerank`` x k candidates re-scored exactly) or
      ``"hnsw"`` (``IndexHNSWFlat``, a graph: sub-linear, but on face-like data it misses
      matches at 1M unless its beam is wide, see ``indexer/README.md``).
    * ``pq_m``: sub-quantizers (4 bits each; ``gcd(pq_m, dim)`` of them): 128 gives 64-byte codes
      at 512-d. ``pq_rerank``: candidates re-scored exactly per result asked for (k).
    * ``hnsw_m``, ``hnsw_ef_construction``, ``hnsw_ef_search``: the HNSW graph's links per node,
      its build-time and its search-time beam width (raised to ``k`` for larger ``k``).
    * ``max_dead_share``: removed rows still in the index (tombstones) above this share of it
      trigger a compacting rebuild. Approximate searches widen their candidates (beam) by it.
    * ``build_threads``: OpenMP threads of a background rebuild. 1: on the shared 2-core machine,
      2 threads made FAISS's k-means ~60x slower (OpenMP threads spinning at barriers while
      the other processes hold the cores), and it leaves a core to the models.
    * ``auto``: rebuild by itself when the kind should change or tombstones pile up; with
      ``False`` only ``FaceIndex.rebuild`` rebuilds.
    * ``certified_from``: an exact (``"flat"``) index of this many rows or more scans 8-bit codes
      for candidates and certifies the result (module docstring); below it, the float vectors.
      ``certified_candidates``: the candidates C per query (raised to 16 x k).
    * ``scan_threads``: threads one certified search splits its code scan over (row ranges, a
      small thread pool, one OpenMP thread each). 1 (the default) scans on the calling thread;
      more shortens one search but not the total work, so it helps only with idle cores.

    The defaults come from ``benchmarks/index_scale.py`` (see ``indexer/README.md``).
    """

    exact_below: int = 20_000
    approximate: IndexKind = "pq"
    pq_m: int = 128
    pq_rerank: int = 200
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    max_dead_share: float = 0.1
    build_threads: int = 1
    auto: bool = True
    certified_from: int = 8_192
    certified_candidates: int = 128
    scan_threads: int = 1

    def __post_init__(self) -> None:
        for name in (
            "exact_below",
            "pq_m",
            "pq_rerank",
            "hnsw_m",
            "hnsw_ef_construction",
            "hnsw_ef_search",
            "build_threads",
            "certified_from",
            "certified_candidates",
            "scan_threads",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if self.approximate not in ("pq", "hnsw"):
            raise InvalidInputError(f"approximate must be pq or hnsw, got {self.approximate!r}")
        if not 0.0 < self.max_dead_share <= 1.0:
            raise InvalidInputError(
                f"max_dead_share must be in (0, 1], got {self.max_dead_share!r}"
            )

    @classmethod
    def from_config(cls, index: IndexConfig) -> IndexPolicy:
        """The default policy with the ``index`` section's settings."""
        return cls(exact_below=index.exact_below, scan_threads=index.scan_threads)

    def kind_for(self, live: int, current: IndexKind | None = None) -> IndexKind:
        """The kind for ``live`` templates, given the ``current`` one (hysteresis)."""
        threshold = self.exact_below // 2 if current not in (None, "flat") else self.exact_below
        return self.approximate if live >= threshold else "flat"


DEFAULT_POLICY: Final = IndexPolicy()


@dataclass(frozen=True)
class IndexStructure:
    """A ``"pq"`` index's trained FAISS structure, saved in a face snapshot so that a restore
    opens at that kind at once (``FaceIndex.export_with_structure``, ``FaceIndex.from_structure``,
    ``indexer.snapshot``). ``data`` ``(b,)`` uint8: ``faiss.serialize_index`` of its
    ``IndexPQFastScan`` (codebooks and the 4-bit codes of its rows, ~64 bytes a row;
    ``compact_structure`` drops the tombstones' before it is saved); ``row_ids`` ``(rows,)``
    int64: the template id of each of its rows (its labels). ``"hnsw"`` has none: its FAISS
    serialisation carries the float vectors the snapshot already holds (twice the file) and
    the kind is not the default."""

    kind: IndexKind
    row_ids: np.ndarray
    data: np.ndarray


#: Rows copied per read-lock hold while a rebuild snapshots the old index (~8 MB at 512-d).
_SNAPSHOT_CHUNK: Final = 4096
#: One background build at a time in the process: restoring many large communities at once
#: must not start as many builds.
_BUILD_SLOT = threading.Semaphore(1)
#: A product quantiser is trained on at most this many templates (evenly spread rows; its
#: k-means samples 16 x 256 of them per sub-quantizer anyway).
_PQ_TRAIN_ROWS: Final = 16_384
#: ... and needs at least 16 (one per 4-bit centroid); fewer get an exact index.
_PQ_MIN_ROWS: Final = 16

#: The float32 unit round-off.
_U32: Final = 2.0**-24
#: The certified scan's quantiser range is the rows' smallest to largest coordinate, widened on
#: each side by this share of the span (coordinates of later rows beyond it are clamped).
_SCAN_HEADROOM: Final = 0.05
#: Rows encoded per batch when codes are added (~32 MB of float32 temporaries at 512-d).
_ENCODE_CHUNK: Final = 16_384
#: A certified scan is split over threads only in parts of at least this many rows.
_SCAN_PART_ROWS: Final = 16_384


@dataclass(frozen=True)
class ScanStats:
    """Certified exact searches of one ``FaceIndex`` since it was created (across rebuilds).

    ``queries``: queries answered through the 8-bit code scan; ``fallbacks``: those whose
    certificate failed, answered by the full float scan; ``error_bound``: the current index's
    E (the largest quantisation error of a row, ``nan`` while it has no code scan).
    """

    queries: int
    fallbacks: int
    error_bound: float

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.queries if self.queries else 0.0


class _ScanCounters:
    """``ScanStats``' counters, shared by the ``_Rows`` that succeed one another in an index."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queries = 0
        self.fallbacks = 0

    def count(self, queries: int, fallbacks: int) -> None:
        with self._lock:
            self.queries += queries
            self.fallbacks += fallbacks


_scan_pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_scan_pools_lock = threading.Lock()


def _scan_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The process's pool for searches split over ``workers`` + 1 threads (the caller's too).

    Its threads run FAISS on one OpenMP thread each: the split is theirs, not OpenMP's.
    """
    with _scan_pools_lock:
        pool = _scan_pools.get(workers)
        if pool is None:
            pool = concurrent.futures.ThreadPoolExecutor(
                2 * workers,  # two searches at once split without queueing on each other
                thread_name_prefix="face-scan",
                initializer=faiss.omp_set_num_threads,
                initargs=(1,),
            )
            _scan_pools[workers] = pool
        return pool


class _CodeScan:
    """Every row of an exact ``_Rows`` as an 8-bit code, scanned for candidates.

    ``QT_8bit_uniform``: one range ``[vmin, vmin + vdiff]`` for every coordinate, 256 levels,
    so a 512-d row is 512 bytes (its float vector 2048). ``error`` is E, an upper bound on
    ``||decode(encode(x)) - x||`` over the rows added, measured on each add: a row outside the
    range is clamped and only raises E. Its rows are the ``_Rows``' rows (tombstones included).
    """

    def __init__(self, dim: int, lo: float, hi: float) -> None:
        """A scan whose quantiser covers the coordinates ``[lo, hi]`` (plus headroom)."""
        span = max(hi - lo, 1e-6)
        self.dim = dim
        self.index: Any = faiss.IndexScalarQuantizer(
            dim, faiss.ScalarQuantizer.QT_8bit_uniform, faiss.METRIC_INNER_PRODUCT
        )
        trained = np.array(
            [lo - _SCAN_HEADROOM * span, (1.0 + 2.0 * _SCAN_HEADROOM) * span], np.float32
        )
        faiss.copy_array_to_vector(trained, self.index.sq.trained)
        self.index.is_trained = True
        self.error = 0.0

    def add(self, vectors: np.ndarray) -> None:
        """Encode ``vectors`` ``(n, dim)`` as the next rows and raise E to cover them."""
        for lo in range(0, len(vectors), _ENCODE_CHUNK):
            chunk = vectors[lo : lo + _ENCODE_CHUNK]
            codes = self.index.sa_encode(chunk)
            diff = self.index.sa_decode(codes)
            diff -= chunk
            worst = math.sqrt(float(np.einsum("ij,ij->i", diff, diff).max()))
            # The float32 difference and sum of squares are off by < (dim + 2) u, relatively.
            self.error = max(self.error, worst * (1.0 + 2.0 * (self.dim + 2) * _U32))
            self.index.add_sa_codes(codes)

    def margin(self, queries: np.ndarray) -> np.ndarray:
        """``(q,)`` float64: the most a query's code score and float32 score of a row differ.

        ``||q|| E`` (Cauchy-Schwarz) plus float32 rounding: each of the two ``dim``-term dot
        products is within ``dim u / (1 - dim u) ||q|| ||row||`` of the real one, and the
        decoded coordinates within an ulp of ``sa_decode``'s, both below ``4 dim u (1 + E)``.
        """
        norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        out: np.ndarray = norms * (self.error + 4.0 * self.dim * _U32 * (1.0 + self.error))
        return out

    def candidates(
        self,
        queries: np.ndarray,
        depth: int,
        n_rows: int,
        live: Any,
        threads: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best rows by code score of each part of the rows, and their bound.

        ``queries``: ``(q, dim)`` C-contiguous; ``live``: the live-row ``IDSelectorBitmap``, or
        None when every row is live. The rows ``[0, n_rows)`` are split into up to ``threads``
        ranges scanned at once. Returns ``rows`` ``(q, parts x depth)`` int64 (-1: no row) and
        ``bound`` ``(q,)`` float64: the largest ``depth``-th code score over the parts that
        found ``depth`` live rows, ``-inf`` where none did (then every live row is a candidate).
        """
        parts = max(1, min(threads, n_rows // _SCAN_PART_ROWS))
        if parts == 1:
            params = None
            if live is not None:
                params = faiss.SearchParameters()
                params.sel = live
            scores, rows = self.index.search(queries, depth, params=params)
            results = [(scores, rows)]
        else:
            results = self._split_search(queries, depth, n_rows, live, parts)
        bound = np.full(len(queries), -np.inf)
        for scores, rows in results:
            full = rows[:, -1] >= 0
            bound[full] = np.maximum(bound[full], scores[full, -1])
        return np.concatenate([rows for _, rows in results], axis=1), bound

    def _split_search(
        self, queries: np.ndarray, depth: int, n_rows: int, live: Any, parts: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        edges = np.linspace(0, n_rows, parts + 1).astype(np.int64).tolist()
        keep: list[Any] = []  # FAISS holds no reference to the selectors: these do
        params = []
        for lo, hi in itertools.pairwise(edges):
            sel: Any = faiss.IDSelectorRange(lo, hi)
            keep.append(sel)
            if live is not None:
                sel = faiss.IDSelectorAnd(sel, live)
                keep.append(sel)
            p = faiss.SearchParameters()
            p.sel = sel
            params.append(p)
        pool = _scan_pool(parts - 1)
        futures = [pool.submit(self.index.search, queries, depth, params=p) for p in params[1:]]
        mine = self.index.search(queries, depth, params=params[0])
        return [mine, *(f.result() for f in futures)]


class _Rows:
    """One FAISS index labelled by row, the template id of each row and the live-row bitmap.

    ``"flat"`` and ``"hnsw"`` keep the float vectors in their FAISS index; ``"pq"`` keeps them
    in an ``IndexFlatIP`` beside its codes, for exact re-scoring; ``"flat"`` from
    ``policy.certified_from`` rows on keeps 8-bit codes beside its vectors too (``scan``,
    trained on ``value_range``, the coordinates appended so far). Not locked itself:
    ``FaceIndex`` holds its write lock around ``append`` and ``kill``, its read lock around the
    rest.
    """

    def __init__(
        self,
        dim: int,
        kind: IndexKind,
        policy: IndexPolicy,
        train: np.ndarray | None = None,
    ) -> None:
        self.dim = dim
        self.kind: IndexKind = kind
        self.policy = policy
        self.index: Any
        self.store: Any  # holds the float vectors
        if kind == "flat":
            self.index = self.store = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, policy.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = policy.hnsw_ef_construction
            self.store = faiss.downcast_index(self.index.storage)
        else:
            if train is None or len(train) < _PQ_MIN_ROWS:
                raise ValueError(f"a pq index needs >= {_PQ_MIN_ROWS} training vectors")
            m = math.gcd(policy.pq_m, dim)
            self.index = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT)
            self.index.pq.cp.min_points_per_centroid = 1  # small communities: no warning
            self.index.train(train)
            self.store = faiss.IndexFlatIP(dim)
        self.row_ids = np.empty(0, np.int64)  # capacity >= n_rows; row -> template id
        self.live = np.zeros(0, np.uint8)  # bit r of the bitmap: row r is live
        self.n_rows = 0
        self.n_dead = 0
        self.scan: _CodeScan | None = None
        self.value_range = (math.inf, -math.inf)  # smallest and largest coordinate appended
        self.stats = _ScanCounters()
        # The search parameters, replaced only under the write lock. FAISS keeps neither the
        # selector nor the bitmap it points into alive: this object does.
        self._selector: faiss.IDSelectorBitmap | None = None
        self.params: faiss.SearchParameters | None = None
        self._reserve(1)

    def _reserve(self, rows: int) -> None:
        if rows > len(self.row_ids):
            capacity = max(rows, 2 * len(self.row_ids), 64)
            grown = np.empty(capacity, np.int64)
            grown[: self.n_rows] = self.row_ids[: self.n_rows]
            self.row_ids = grown
            bitmap = np.zeros((capacity + 7) // 8, np.uint8)
            bitmap[: len(self.live)] = self.live
            self.live = bitmap
            self._refresh_params()  # the selector pointed into the old bitmap

    def _refresh_params(self) -> None:
        # Fresh objects: a search still using the old ones held the read lock, so it ended
        # before the write lock this runs under was granted.
        self._selector = None
        self.params = None
        if self.n_dead and self.kind != "pq":  # fast-scan takes no selector: re-scoring skips
            self._selector = faiss.IDSelectorBitmap(len(self.live), faiss.swig_ptr(self.live))
            self.params = faiss.SearchParameters()
            self.params.sel = self._selector

    def append(self, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Add rows for ``ids``; returns their row numbers."""
        start, n = self.n_rows, len(ids)
        self._reserve(start + n)
        self.index.add(vectors)
        if self.kind == "pq":
            self.store.add(vectors)
        rows = np.arange(start, start + n, dtype=np.int64)
        self.row_ids[start : start + n] = ids
        np.bitwise_or.at(self.live, rows >> 3, (1 << (rows & 7)).astype(np.uint8))
        self.n_rows += n
        if n:
            lo, hi = self.value_range
            self.value_range = (min(lo, float(vectors.min())), max(hi, float(vectors.max())))
            if self.kind == "flat":
                self._append_codes(vectors)
        return rows

    def _append_codes(self, vectors: np.ndarray) -> None:
        """Encode the rows just appended; from ``certified_from`` rows on, start the scan,
        unless the policy is about to rebuild this index as another kind (a large community
        restored exact, then rebuilt approximate: its codes would be thrown away unused)."""
        if self.scan is not None:
            self.scan.add(vectors)
        elif self.n_rows >= self.policy.certified_from and not self._leaving_exact():
            self.scan = _CodeScan(self.dim, *self.value_range)
            self.scan.add(self.vectors())  # every row, dead ones too: rows keep their numbers

    def _leaving_exact(self) -> bool:
        live = self.n_rows - self.n_dead
        return self.policy.auto and self.policy.kind_for(live, "flat") != "flat"

    def kill(self, rows: np.ndarray) -> None:
        """Mark ``rows`` (live, distinct) dead."""
        if len(rows) == 0:
            return
        np.bitwise_and.at(self.live, rows >> 3, (~(1 << (rows & 7))).astype(np.uint8))
        first = self.n_dead == 0
        self.n_dead += len(rows)
        if first:
            self._refresh_params()

    def dead_share(self) -> float:
        return self.n_dead / self.n_rows if self.n_rows else 0.0

    def structure(self) -> IndexStructure:
        """A ``"pq"`` index's FAISS structure and row ids, copied (under the read lock)."""
        data = faiss.serialize_index(self.index)
        return IndexStructure(self.kind, self.row_ids[: self.n_rows].copy(), data)

    @classmethod
    def opened_pq(
        cls,
        dim: int,
        policy: IndexPolicy,
        index: Any,
        row_ids: np.ndarray,
        by_row: np.ndarray,
        live: np.ndarray,
    ) -> _Rows:
        """A ``"pq"`` ``_Rows`` around a deserialised ``IndexPQFastScan`` ``index`` of
        ``rows`` rows, labelled ``row_ids`` ``(rows,)``: ``by_row`` ``(rows, dim)`` float32 the
        vectors of its rows (zeros at dead ones), ``live`` ``(rows,)`` bool."""
        out = cls(dim, "flat", policy)
        out.kind, out.index, out.store = "pq", index, faiss.IndexFlatIP(dim)
        n = len(row_ids)
        out._reserve(n)
        out.store.add(by_row)
        out.row_ids[:n] = row_ids
        out.live[: (n + 7) >> 3] = np.packbits(live, bitorder="little")
        out.n_rows, out.n_dead = n, n - int(np.count_nonzero(live))
        if n:  # a later rebuild to flat takes it for its code scan (zeros lie within)
            out.value_range = (float(by_row.min()), float(by_row.max()))
        out._refresh_params()
        return out

    def vectors(self) -> np.ndarray:
        """A view of the stored vectors ``(n_rows, dim)``: valid until the next ``append``."""
        flat = faiss.rev_swig_ptr(self.store.get_xb(), self.n_rows * self.dim)
        out: np.ndarray = flat.reshape(self.n_rows, self.dim)
        return out

    def is_live(self, rows: np.ndarray) -> np.ndarray:
        """Whether each of ``rows`` (any shape, each in ``[0, n_rows)``) is live."""
        out: np.ndarray = ((self.live[rows >> 3] >> (rows & 7).astype(np.uint8)) & 1) == 1
        return out

    def live_rows(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the ids and vectors of the live rows in ``[lo, hi)``; ``lo % 8 == 0``."""
        bits = np.unpackbits(self.live[lo >> 3 : (hi + 7) >> 3], bitorder="little", count=hi - lo)
        live = bits.astype(bool)
        return self.row_ids[lo:hi][live], self.vectors()[lo:hi][live]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Approximate kinds widen their candidates by the dead share: tombstones take places
        # among them (HNSW's beam walks through them; PQ candidates are filtered after).
        widen = 1.0 / (1.0 - min(self.dead_share(), 0.9))
        if self.kind == "pq":
            similarities, labels = self._search_pq(queries, k, widen)
        elif self.scan is not None:
            similarities, labels = self._search_certified(self.scan, queries, k)
        else:
            params = self.params
            if self.kind == "hnsw":
                ef = math.ceil(max(self.policy.hnsw_ef_search, k) * widen)
                params = _faiss.SearchParametersHNSW(efSearch=ef)
                if self._selector is not None:
                    params.sel = self._selector
            similarities, labels = self.index.search(queries, k, params=params)
        found = labels >= 0
        ids = np.where(found, self.row_ids[np.where(found, labels, 0)], -1)
        similarities[~found] = -np.inf
        return similarities, ids

    def _search_pq(
        self, queries: np.ndarray, k: int, widen: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan the codes for candidates, re-score the live ones exactly, keep the best k.

        ``queries`` must be C-contiguous (``check_vectors`` makes them so).
        """
        n = self.n_rows
        if n == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full(
                (len(queries), k), -1, np.int64
            )
        depth = min(n, math.ceil(k * self.policy.pq_rerank * widen))
        _, candidates = self.index.search(queries, depth)
        if self.n_dead:
            candidates[~self.is_live(np.maximum(candidates, 0))] = -1
        return self._rescore(queries, candidates, k)

    def _rescore(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of each query's ``candidates`` ``(q, m)`` rows (-1: none), scored
        from the float vectors as the float scan scores them: ``(q, k)`` similarities float32
        (``-inf`` where fewer than ``k``) and rows int64 (-1 there)."""
        nq, depth = candidates.shape
        similarities = np.full((nq, k), -np.inf, np.float32)
        labels = np.full((nq, k), -1, np.int64)
        # FAISS's re-scorer stops at a row's first -1: move them last. Ascending rows, as the
        # float scan meets them, so that equal scores are kept and ordered as it does.
        last = np.iinfo(np.int64).max
        candidates = np.sort(np.where(candidates < 0, last, candidates), axis=1)
        candidates[candidates == last] = -1
        _faiss.knn_inner_products_by_idx(
            faiss.swig_ptr(queries),
            self.store.get_xb(),
            faiss.swig_ptr(candidates),
            self.dim,
            nq,
            self.n_rows,
            depth,
            k,
            faiss.swig_ptr(similarities),
            faiss.swig_ptr(labels),
            depth,  # the row stride (its default, -1, strides by n)
        )
        return similarities, labels

    def _search_certified(
        self, scan: _CodeScan, queries: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``k`` (the float scan's answer) through the 8-bit scan and its certificate.

        Proof: a row's code score a and float32 score s differ by at most m = ``margin`` (E,
        Cauchy-Schwarz, plus rounding). A live row outside a part's candidates scored
        a <= that part's C-th code score, so s <= bound + m with bound the largest C-th over
        the parts. If the k-th re-scored candidate has s_k > bound + m, every row left out is
        strictly below it, so the candidates' top k (ties broken as the float scan breaks
        them, by row) is the float scan's; a part with fewer than C live rows gave them all.
        """
        depth = max(self.policy.certified_candidates, 16 * k)
        if depth >= self.n_rows - self.n_dead:  # every live row a candidate: scan the floats
            out: tuple[np.ndarray, np.ndarray] = self.index.search(queries, k, params=self.params)
            return out
        candidates, bound = scan.candidates(
            queries, depth, self.n_rows, self._selector, self.policy.scan_threads
        )
        similarities, labels = self._rescore(queries, candidates, k)
        kth = np.where(labels[:, -1] >= 0, similarities[:, -1], -np.inf).astype(np.float64)
        certain = np.isneginf(bound) | (kth > bound + scan.margin(queries))
        miss = np.flatnonzero(~certain)
        self.stats.count(len(queries), len(miss))
        if len(miss):
            similarities[miss], labels[miss] = self.index.search(
                queries[miss], k, params=self.params
            )
        return similarities, labels


#: A write made while a rebuild runs: ("add", ids, vectors) or ("remove", ids, None).
_Write = tuple[Literal["add", "remove"], np.ndarray, np.ndarray | None]


@dataclass
class _Rebuild:
    """One background rebuild: what it builds, the writes made since its snapshot, its end."""

    kind: IndexKind | None  # None: the policy's choice once the snapshot is taken
    log: list[_Write] = field(default_factory=list)
    logging: bool = False  # set under the write lock when the snapshot is taken
    cancelled: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    thread: threading.Thread | None = None


class FaceIndex:
    """Cosine search over ``dim``-dimensional templates, each keyed by a template id.

    Exact or approximate by size, as ``policy`` (default ``DEFAULT_POLICY``) says;
    rebuilt in the background when the kind should change, when tombstones pile up, or on
    ``rebuild``. Thread-safe (see the module docstring).
    """

    def __init__(self, dim: int, policy: IndexPolicy | None = None) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if policy is not None and not isinstance(policy, IndexPolicy):
            raise InvalidInputError(f"policy must be an IndexPolicy, got {type(policy).__name__}")
        self._dim = dim
        self._policy = policy or DEFAULT_POLICY
        self._rows = _Rows(dim, "flat", self._policy)
        self._row_of: dict[int, int] = {}  # live template id -> row
        self._lock = RWLock()
        self._rebuild: _Rebuild | None = None
        self._rebuild_mutex = threading.Lock()  # starting and finishing rebuilds

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def policy(self) -> IndexPolicy:
        return self._policy

    @property
    def ntotal(self) -> int:
        """The number of templates in the index (removed ones not counted)."""
        return len(self._row_of)

    @property
    def kind(self) -> IndexKind:
        """``"flat"`` (exact), ``"pq"`` or ``"hnsw"``: the index searches run on now."""
        return self._rows.kind

    @property
    def tombstones(self) -> int:
        """Removed templates still in the FAISS index, skipped by searches until a rebuild."""
        return self._rows.n_dead

    @property
    def scan_stats(self) -> ScanStats:
        """Certified exact searches so far and how many fell back to the float scan."""
        rows = self._rows
        error = rows.scan.error if rows.scan is not None else math.nan
        return ScanStats(rows.stats.queries, rows.stats.fallbacks, error)

    @property
    def rebuilding(self) -> bool:
        """Whether a rebuild is running (or waiting for the process's build slot)."""
        return self._rebuild is not None

    def __contains__(self, template_id: object) -> bool:
        return template_id in self._row_of

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
        _apply_search_threads()  # an HNSW or PQ add runs OpenMP too
        with self._lock.write():
            present = [i for i in new if i in self._row_of]
            if present:
                raise AlreadyExistsError(f"template ids already indexed: {sorted(present)[:10]}")
            rows = self._rows.append(ids, vectors)
            self._row_of.update(zip(new, rows.tolist(), strict=True))
            job = self._rebuild
            if job is not None and job.logging:
                job.log.append(("add", ids.copy(), vectors.copy()))
        self._maybe_rebuild()

    def remove(self, ids: np.ndarray) -> int:
        """Remove the templates ``ids`` ``(n,)``; unknown ids are ignored. Returns how many went."""
        ids = check_ids(ids)
        if len(ids) == 0:
            return 0
        with self._lock.write():
            rows = [self._row_of.pop(i) for i in set(ids.tolist()) if i in self._row_of]
            self._rows.kill(np.array(rows, np.int64))
            job = self._rebuild
            if rows and job is not None and job.logging:
                job.log.append(("remove", ids.copy(), None))
        if rows:
            self._maybe_rebuild()
        return len(rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar templates of each query.

        ``queries``: ``(q, dim)`` float32 unit rows. Returns ``similarities`` ``(q, k)`` float32
        in descending order and ``ids`` ``(q, k)`` int64; slots beyond the index's size hold id
        ``-1`` and similarity ``-inf``. Exact below the policy's threshold, approximate above
        it (the similarities of what it returns are exact either way).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        queries = check_vectors(queries, self._dim, "queries")
        k = int(k)
        if len(queries) == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        _apply_search_threads()
        with self._lock.read():
            return self._rows.search(queries, k)

    # -- rebuilds ------------------------------------------------------------------------

    def rebuild(
        self, kind: IndexKind | None = None, *, wait: bool = True, timeout: float | None = None
    ) -> bool:
        """Rebuild the FAISS index from the current templates, as ``kind`` (default: what the
        policy picks for the size), in a background thread, without stopping searches or writes.

        Joins a rebuild already running when it builds the same kind (or ``kind`` is None):
        that one replays every write made before its swap too; one of another kind is let
        finish first. With ``wait`` (the default), returns once the new index is in use
        (``True``) or ``timeout`` seconds passed (``False``), and raises what the build raised;
        without it, returns ``True`` once the rebuild is under way. With ``policy.auto``, a
        kind the policy disagrees with lasts until the policy's own rebuild, started right
        after this one.
        """
        if kind is not None and kind not in INDEX_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(INDEX_KINDS)}; got {kind!r}")
        while True:
            with self._rebuild_mutex:
                job = self._rebuild
                if job is None:
                    job = self._start_rebuild(kind)
                    break
                if job.kind is None:  # not started yet: it builds what we ask for
                    job.kind = kind
                    break
                if kind in (None, job.kind):
                    break
            job.done.wait()  # another kind is being built: let it finish, then build ours
        if not wait:
            return True
        if not job.done.wait(timeout):
            return False
        if job.error is not None:
            raise job.error
        return True

    def wait_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a running rebuild (and any it triggers) to end; ``False`` on timeout."""
        while True:
            job = self._rebuild
            if job is None:
                return True
            if not job.done.wait(timeout):
                return False

    def stop_rebuild(self, timeout: float | None = None) -> None:
        """Abandon a running rebuild (the current index stays) and wait for its thread."""
        with self._rebuild_mutex:
            job = self._rebuild
            if job is not None:
                job.cancelled.set()
        if job is not None and job.thread is not None:
            job.thread.join(timeout)

    def _needs_rebuild(self) -> bool:
        rows = self._rows
        target = self._policy.kind_for(len(self._row_of), rows.kind)
        return target != rows.kind or rows.dead_share() > self._policy.max_dead_share

    def _maybe_rebuild(self) -> None:
        if self._policy.auto and self._rebuild is None and self._needs_rebuild():
            with self._rebuild_mutex:
                if self._rebuild is None:
                    self._start_rebuild(None)

    def _start_rebuild(self, kind: IndexKind | None) -> _Rebuild:
        # Under self._rebuild_mutex.
        job = _Rebuild(kind)
        job.thread = threading.Thread(
            target=self._run_rebuild, args=(job,), name="face-index-rebuild", daemon=True
        )
        self._rebuild = job
        job.thread.start()
        return job

    def _run_rebuild(self, job: _Rebuild) -> None:
        try:
            while not _BUILD_SLOT.acquire(timeout=0.05):
                if job.cancelled.is_set():
                    return
            try:
                if not job.cancelled.is_set():
                    self._build_and_swap(job)
            finally:
                _BUILD_SLOT.release()
        except BaseException as exc:  # the old index stays; rebuild() raises it
            job.error = exc
            _log.warning("face index rebuild failed: %r", exc)
        finally:
            with self._lock.write():  # no write logs into a finished job
                job.logging = False
                job.log.clear()
                with self._rebuild_mutex:
                    self._rebuild = None
                    # A follow-up (it grew past the threshold meanwhile, say) starts before
                    # this one reports done, so wait_rebuild() sees it.
                    ok = job.error is None and not job.cancelled.is_set()
                    if ok and self._policy.auto and self._needs_rebuild():
                        self._start_rebuild(None)
            job.done.set()

    def _new_pq_rows(self, chunks: list[tuple[np.ndarray, np.ndarray]]) -> _Rows:
        """An empty pq ``_Rows`` trained on the chunks' vectors (flat when too few)."""
        total = sum(len(ids) for ids, _ in chunks)
        if total < _PQ_MIN_ROWS:
            return _Rows(self._dim, "flat", self._policy)
        stride = max(1, total // _PQ_TRAIN_ROWS)
        vectors = np.concatenate([v for _, v in chunks]) if stride == 1 else None
        if vectors is None:  # every stride-th row, without joining them all first
            picked, offset = [], 0
            for _, v in chunks:
                picked.append(v[(-offset) % stride :: stride])
                offset += len(v)
            vectors = np.concatenate(picked)
        return _Rows(self._dim, "pq", self._policy, train=vectors[:_PQ_TRAIN_ROWS])

    def _build_and_swap(self, job: _Rebuild) -> None:
        faiss.omp_set_num_threads(self._policy.build_threads)  # this thread's OpenMP setting
        with self._lock.write(), self._rebuild_mutex:
            source = self._rows
            end = source.n_rows
            value_range = source.value_range
            kind = job.kind or self._policy.kind_for(len(self._row_of), source.kind)
            job.kind = kind
            job.logging = True
        chunks: list[tuple[np.ndarray, np.ndarray]] = []
        built: _Rows | None = None
        if kind != "pq":  # built as the chunks come; pq first trains on all of them
            built = _Rows(self._dim, kind, self._policy)
            built.value_range = value_range  # the code scan's range covers every row at once
        for lo in range(0, end, _SNAPSHOT_CHUNK):
            if job.cancelled.is_set():
                return
            # Rows below `end` never change, but an add may move them: copy under the lock.
            with self._lock.read():
                chunk = source.live_rows(lo, min(end, lo + _SNAPSHOT_CHUNK))
            if built is None:
                chunks.append(chunk)
            else:
                built.append(*chunk)
        if built is None:
            built = self._new_pq_rows(chunks)
            pending = collections.deque(chunks)
            del chunks
            while pending:  # each chunk freed once added
                if job.cancelled.is_set():
                    return
                built.append(*pending.popleft())
        built.stats = source.stats
        row_of = dict(zip(built.row_ids[: built.n_rows].tolist(), range(built.n_rows), strict=True))
        # Replay the writes logged meanwhile: the bulk outside the lock (the new index is still
        # ours alone), the last few under it, then swap.
        for round_ in itertools.count():
            with self._lock.write():
                if job.cancelled.is_set():
                    return
                log, job.log = job.log, []
                if len(log) <= _REPLAY_UNDER_LOCK or round_ >= _REPLAY_ROUNDS:
                    _replay(log, built, row_of)
                    job.logging = False
                    self._rows, self._row_of = built, row_of
                    return
            _replay(log, built, row_of)

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the live templates: ids ``(n,)`` int64 and vectors ``(n, dim)`` float32 (as
        added, bit for bit), in row order, for a snapshot. Copied in chunks, each under the read
        lock: searches go on, a write waits one chunk at most. Templates added or removed while
        it runs may or may not be in it (a rebuild's swap meanwhile: the rows as of the start)."""
        with self._lock.read():
            rows, end = self._rows, self._rows.n_rows
        return self._export_rows(rows, end)

    def export_with_structure(self) -> tuple[np.ndarray, np.ndarray, IndexStructure | None]:
        """``export``, plus a ``"pq"`` index's ``IndexStructure`` (else ``None``) taken under
        the same read lock as the export's start (a write waits for ``serialize_index``, ~64
        bytes a row), then compacted to the ids exported (``compact_structure``): its rows are
        exactly the exported templates, in row order; no code of a removed one is in it."""
        with self._lock.read():
            rows, end = self._rows, self._rows.n_rows
            structure = rows.structure() if rows.kind == "pq" else None
        ids, vectors = self._export_rows(rows, end)
        if structure is not None:
            structure = compact_structure(structure, ids)
        return ids, vectors, structure

    @classmethod
    def from_structure(
        cls,
        dim: int,
        policy: IndexPolicy | None,
        structure: IndexStructure,
        ids: np.ndarray,
        vectors: np.ndarray,
    ) -> FaceIndex:
        """A ``"pq"`` index opened from a snapshot's ``structure`` (no training, no encoding),
        holding the templates ``ids`` ``(n,)`` int64 with ``vectors`` ``(n, dim)`` float32:
        the snapshot's own rows, checked when first added and sealed since, so only their shape
        is checked here. Rows of the structure with other ids are tombstones. Searches then
        equal those of the index it was saved from (same codes, rows and live bits).

        ``InvalidInputError`` when it does not fit: not ``"pq"``, not a 4-bit inner-product
        ``IndexPQFastScan`` of ``dim`` and the policy's sub-quantizers, not as many rows as
        ``row_ids``, repeated row ids, or an id of ``ids`` not among them.
        """
        restored = cls(dim, policy)
        index = restored._check_structure(structure)
        ids = np.asarray(ids, np.int64)
        if vectors.dtype != np.float32 or vectors.shape != (len(ids), dim):
            raise InvalidInputError(f"vectors {vectors.shape} {vectors.dtype} for {len(ids)} ids")
        row_ids = np.asarray(structure.row_ids, np.int64)
        order = np.argsort(row_ids, kind="stable")
        ordered = row_ids[order]
        if len(ordered) > 1 and not bool(np.all(ordered[1:] > ordered[:-1])):
            raise InvalidInputError("the structure's row ids repeat")
        if len(ids) and not len(ordered):
            raise InvalidInputError(f"{len(ids)} templates but an empty structure")
        at = np.minimum(np.searchsorted(ordered, ids), max(len(ordered) - 1, 0))
        if len(ids) and not bool(np.all(ordered[at] == ids)):
            raise InvalidInputError("templates of the snapshot are not rows of the structure")
        rows = order[at]
        live = np.zeros(len(row_ids), bool)
        live[rows] = True
        if len(rows) == len(row_ids) and bool(np.all(rows == np.arange(len(rows)))):
            by_row = np.ascontiguousarray(vectors)  # the usual case: no dead row, same order
        else:
            by_row = np.zeros((len(row_ids), dim), np.float32)
            by_row[rows] = vectors
        restored._rows = _Rows.opened_pq(dim, restored._policy, index, row_ids, by_row, live)
        restored._row_of = dict(zip(ids.tolist(), rows.tolist(), strict=True))
        restored._maybe_rebuild()  # tombstones past the policy's share: compacted, as before
        return restored

    def _check_structure(self, structure: IndexStructure) -> Any:
        """The structure's deserialised FAISS index, checked to be what ``_Rows`` builds."""
        if structure.kind != "pq":
            raise InvalidInputError(f"a {structure.kind!r} structure (only pq is restored)")
        try:
            index: Any = faiss.deserialize_index(np.ascontiguousarray(structure.data, np.uint8))
        except RuntimeError as exc:
            raise InvalidInputError(f"unreadable FAISS structure: {exc}") from exc
        m = math.gcd(self._policy.pq_m, self._dim)
        if not isinstance(index, faiss.IndexPQFastScan):
            raise InvalidInputError(f"a {type(index).__name__}, not an IndexPQFastScan")
        got = (index.d, index.pq.M, index.pq.nbits, index.metric_type, index.ntotal)
        want = (self._dim, m, 4, faiss.METRIC_INNER_PRODUCT, len(structure.row_ids))
        if got != want or not index.is_trained:
            raise InvalidInputError(
                f"(dim, sub-quantizers, bits, metric, rows) {got}, expected {want}"
            )
        return index

    def _export_rows(self, rows: _Rows, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The live rows below ``end`` of ``rows`` (this index's now or before a swap)."""
        ids, vectors = np.empty(end, np.int64), np.empty((end, self._dim), np.float32)
        n = 0
        for lo in range(0, end, _SNAPSHOT_CHUNK):
            with self._lock.read():  # rows below `end` never change, but an add may move them
                chunk_ids, chunk_vectors = rows.live_rows(lo, min(end, lo + _SNAPSHOT_CHUNK))
            ids[n : n + len(chunk_ids)] = chunk_ids
            vectors[n : n + len(chunk_ids)] = chunk_vectors
            n += len(chunk_ids)
        return ids[:n], vectors[:n]


def compact_structure(structure: IndexStructure, keep: np.ndarray) -> IndexStructure:
    """``structure`` with only the rows of the template ids ``keep`` ``(n,)``, in their order.

    Tombstones keep their codes in a live ``IndexPQFastScan`` (and ``remove_ids`` leaves
    stale codes in the unused tail of its last 32-row block): the dropped rows are removed and
    the tail zeroed, so a saved structure holds no code of a removed (erased) template. The
    same object when every row is kept.
    """
    kept = np.isin(structure.row_ids, keep)
    if bool(kept.all()):
        return structure
    index: Any = faiss.deserialize_index(np.ascontiguousarray(structure.data, np.uint8))
    index.remove_ids(faiss.IDSelectorBatch(np.flatnonzero(~kept).astype(np.int64)))
    packer = index.get_CodePacker()
    zero = np.zeros(packer.code_size, np.uint8)
    capacity = index.codes.size() // packer.block_size * packer.nvec
    for row in range(index.ntotal, capacity):
        packer.pack_1_c(faiss.swig_ptr(zero), row, index.codes.get())
    return IndexStructure(structure.kind, structure.row_ids[kept], faiss.serialize_index(index))


#: A rebuild swaps once at most this many logged writes remain to replay under the write lock
#: (or after this many rounds of replaying outside it).
_REPLAY_UNDER_LOCK: Final = 64
_REPLAY_ROUNDS: Final = 8


def _replay(log: list[_Write], built: _Rows, row_of: dict[int, int]) -> None:
    for op, ids, added in log:  # in order: an id may be removed and added again
        if op == "add":
            assert added is not None
            rows = built.append(ids, added)
            row_of.update(zip(ids.tolist(), rows.tolist(), strict=True))
        else:
            gone = [row_of.pop(i) for i in set(ids.tolist()) if i in row_of]
            built.kill(np.array(gone, np.int64))
