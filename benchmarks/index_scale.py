"""Face-index scale: build time, memory, single-query top-5 latency and recall against size.

Synthetic, face-like 512-d data (``synthetic_faces``): identities are random centres drawn from
an anisotropic Gaussian (a power-law spectrum in a random basis, effective dimension ~190, so
two strangers' cosine spreads like a face embedder's, sd ~0.07, rather than the ~0.044 of
uniform points on the 512-sphere); each identity has 1-5 stored templates, centre plus noise
sized for a genuine cosine of ~0.6-0.8. Queries are fresh shots of stored identities (80 %)
and impostors (20 %, identities never stored). Below a match (the top-5 of an impostor, and
the slots after a person's own templates) the top-5 is the crowd of strangers, whose
similarities differ by thousandths: the hard part of recall@5, and the one that matters least.

For each size, each configuration (``--configs``) is built (train + add on
``--build-threads``), then searched one query at a time on one OpenMP thread (the service's
setting) with ``distance_compute_blas_threshold`` as ``indexer.face_index`` sets it: wall-clock
p50/p99 and CPU-time p99 over ``--queries`` queries (fewer for exact search at >= 500k: it is
the slow reference), recall@5 against exact search (all queries; impostors alone) and match
recall (true top-5 entries with similarity >= 0.5). ``faceindex`` is ``indexer.FaceIndex``
itself with the default ``IndexPolicy``: restored exact, then rebuilt in the background as the
policy says (its build time), searched through its Python API. ``exact`` is ``FaceIndex``'s
exact kind from ``IndexPolicy.certified_from`` rows on: 8-bit codes scanned for candidates,
re-scored from the float vectors, a certificate or the full float scan (``indexer.face_index``),
on 1 and 2 scan threads; its note gives the certificate's fallback rate, whether each answer
is bit-identical (ids and float32 similarities) to ``IndexFlatIP``'s for the same query, and the
throughput of ``BUSY_CALLERS`` threads searching at once (every core busy). Memory: the
serialised size.

Run: ``python -m benchmarks.index_scale [--sizes 1000 10000 100000 1000000] [--queries 500]
[--configs flat hnsw pq128 ...]`` (~4 min on the 2-core machine; HNSW at 1M, ~16 min to build on
one thread, only with ``--configs hnsw``). Results and the policy they chose: indexer/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from indexer.face_index import DEFAULT_POLICY, FaceIndex, IndexPolicy

#: faiss's bundled stubs lack several classes and attributes used here.
_faiss: Any = faiss

DIM = 512
TOP_K = 5
GENUINE_SHARE = 0.8
#: A template this similar to a query is a candidate match (the registry's thresholds are
#: ~0.4-0.5); below it the top-k is the crowd of strangers, where ANN misses cost nothing.
MATCH_SIMILARITY = 0.5
#: Exact search on this many vectors or more is timed on at most ``SLOW_QUERIES`` queries.
SLOW_SIZE = 500_000
SLOW_QUERIES = 100
#: ``exact``'s answers are compared with ``IndexFlatIP``'s on at most this many queries.
CHECKED_QUERIES = 200
#: ``exact``'s throughput is measured with this many threads searching at once, this long.
BUSY_CALLERS = 2
BUSY_SECONDS = 3.0


# -- data -----------------------------------------------------------------------------------


class FaceSpace:
    """A seeded anisotropic face space: ``draw(n)`` gives ``n`` unit identity centres."""

    def __init__(self, dim: int, seed: int, decay: float = 0.6) -> None:
        rng = np.random.default_rng(seed)
        spectrum = (1.0 + np.arange(dim)) ** -decay
        spectrum /= spectrum.sum()
        # A random orthonormal basis, so the variance is not aligned with the coordinates (it
        # matters for scalar and product quantisers, which work per coordinate or sub-vector).
        basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.dim = dim
        self.effective_dim = float(1.0 / (spectrum**2).sum())
        self._mix = (np.sqrt(spectrum)[:, None] * basis.T).astype(np.float32)

    def shape(self, white: np.ndarray) -> np.ndarray:
        """Map white Gaussian rows ``(n, dim)`` into the face space (not normalised)."""
        out: np.ndarray = white @ self._mix
        return out


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _shots(
    space: FaceSpace, centres: np.ndarray, rng: np.random.Generator, noise: np.ndarray
) -> np.ndarray:
    """One unit template per row of ``centres``: centre plus face-space noise of norm ~noise."""
    white = rng.standard_normal((len(centres), space.dim), dtype=np.float32)
    jitter = space.shape(white)
    jitter *= (noise / np.linalg.norm(jitter, axis=1))[:, None]
    return _unit(centres + jitter)


@dataclass
class FaceData:
    base: np.ndarray  # (n, dim) float32 unit rows, the stored templates
    queries: np.ndarray  # (q, dim) float32 unit rows
    genuine: np.ndarray  # (q,) bool: the query's identity is stored
    effective_dim: float


def synthetic_faces(
    n: int, n_queries: int, dim: int = DIM, seed: int = 0, chunk: int = 100_000
) -> FaceData:
    """``n`` templates of ~n/3 identities and ``n_queries`` queries; generated in chunks."""
    rng = np.random.default_rng(seed)
    space = FaceSpace(dim, seed)
    per_identity = rng.integers(1, 6, size=n // 2 + 2)  # 1-5 templates each
    owner = np.repeat(np.arange(len(per_identity)), per_identity)[:n]
    n_identities = int(owner[-1]) + 1
    # Noise of norm s gives a cosine of ~1/(1+s^2) between two shots: s 0.5-0.8 -> 0.6-0.8.
    quality = rng.uniform(0.5, 0.8, size=n_identities).astype(np.float32)
    n_genuine = round(n_queries * GENUINE_SHARE)
    asked = rng.choice(n_identities, size=n_genuine, replace=n_genuine > n_identities)
    asked_centres = np.empty((n_genuine, dim), np.float32)

    base = np.empty((n, dim), np.float32)
    bounds = np.searchsorted(owner, np.arange(0, n_identities + chunk, chunk))
    for first, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if lo >= hi:
            break
        ident0 = first * chunk
        count = int(owner[hi - 1]) - ident0 + 1
        centres = _unit(space.shape(rng.standard_normal((count, dim), dtype=np.float32)))
        who = owner[lo:hi] - ident0
        base[lo:hi] = _shots(space, centres[who], rng, quality[owner[lo:hi]])
        mine = (asked >= ident0) & (asked < ident0 + count)
        asked_centres[mine] = centres[asked[mine] - ident0]

    queries = np.empty((n_queries, dim), np.float32)
    queries[:n_genuine] = _shots(space, asked_centres, rng, quality[asked])
    strangers = _unit(space.shape(rng.standard_normal((n_queries - n_genuine, dim), np.float32)))
    queries[n_genuine:] = _shots(
        space, strangers, rng, rng.uniform(0.5, 0.8, len(strangers)).astype(np.float32)
    )
    genuine = np.arange(n_queries) < n_genuine
    return FaceData(base, queries, genuine, space.effective_dim)


# -- measurement ----------------------------------------------------------------------------


def serialised_bytes(index: Any) -> int:
    """The index's size as FAISS writes it (vectors, graph, codes), counted without a copy."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = _faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer
    return total


@dataclass
class Row:
    size: int
    index: str
    search: str
    build_s: float
    memory_mb: float
    p50_ms: float
    p99_ms: float
    cpu_p99_ms: float
    recall: float
    recall_impostors: float
    match_recall: float  # of the true top-k with similarity >= MATCH_SIMILARITY
    note: str = ""


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth: exact top-``k`` (similarities, rows) of ``base`` per query (all cores)."""
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    sims, ids = faiss.knn(queries, base, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims, ids


def found_mask(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(q, k)`` bool: whether each true top-k row is among the found ones."""
    out: np.ndarray = (truth[:, :, None] == found[:, None, :]).any(axis=2)
    return out


def time_single_queries(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    k: int,
    warmup: int = 20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Search one query at a time on one thread.

    Returns wall-clock latencies (ms), the thread's CPU time per search (ms: what the search
    itself costs, without time spent waiting for a core on a shared machine) and the ids found.
    """
    faiss.omp_set_num_threads(1)
    for i in range(min(warmup, len(queries))):
        search(queries[i : i + 1], k)
    found = np.empty((len(queries), k), np.int64)
    wall = np.empty(len(queries))
    cpu = np.empty(len(queries))
    for i in range(len(queries)):
        q = queries[i : i + 1]
        c = time.thread_time_ns()
        t = time.perf_counter_ns()
        _, ids = search(q, k)
        wall[i] = time.perf_counter_ns() - t
        cpu[i] = time.thread_time_ns() - c
        found[i] = ids[0]
    return wall / 1e6, cpu / 1e6, found


Searcher = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass
class Config:
    """One index to build and the search settings to sweep on it.

    ``build(base)`` returns the built index (anything ``serialised_bytes`` takes, or None) and
    a ``settings -> searcher`` function, called once per entry of ``sweep``.
    """

    key: str  # what --configs selects
    name: str
    build: Callable[[np.ndarray], tuple[Any, Callable[[Any], Searcher]]]
    sweep: list[tuple[str, Any]]
    min_size: int = 0
    max_size: int = 10**12
    #: Skipped above this size unless --configs names it (slow to build).
    default_max_size: int = 10**12


HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = (32, 64, 128, 256, 512, 1024)
HNSW_SQ8_K_FACTOR = 4
IVF_NLIST = 1024
IVF_NPROBE = (16, 32, 64)
#: Trained on at most this many vectors (evenly spread rows).
TRAIN_ROWS = 50_000


def _sample(base: np.ndarray, rows: int = TRAIN_ROWS) -> np.ndarray:
    return base[:: max(1, len(base) // rows)][:rows]


def _faiss_searcher(index: Any, apply: Callable[[Any], None]) -> Callable[[Any], Searcher]:
    def searcher(setting: Any) -> Searcher:
        apply(setting)
        out: Searcher = index.search
        return out

    return searcher


def _build_flat(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    index = faiss.IndexFlatIP(DIM)
    index.add(base)
    return index, _faiss_searcher(index, lambda _: None)


def _build_hnsw(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    index = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(base)

    def apply(ef: int) -> None:
        index.hnsw.efSearch = ef

    return index, _faiss_searcher(index, apply)


def _build_hnsw_sq8(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    hnsw = _faiss.IndexHNSWSQ(
        DIM, faiss.ScalarQuantizer.QT_8bit, HNSW_M, faiss.METRIC_INNER_PRODUCT
    )
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index = faiss.IndexRefineFlat(hnsw)
    index.k_factor = float(HNSW_SQ8_K_FACTOR)
    index.train(_sample(base))
    index.add(base)

    def apply(ef: int) -> None:
        hnsw.hnsw.efSearch = ef

    return index, _faiss_searcher(index, apply)


def _build_ivf(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    quantizer = faiss.IndexFlatIP(DIM)  # faiss's Python constructor keeps it alive
    index = faiss.IndexIVFFlat(quantizer, DIM, IVF_NLIST, faiss.METRIC_INNER_PRODUCT)
    index.train(_sample(base, 40 * IVF_NLIST))
    index.add(base)

    def apply(nprobe: int) -> None:
        index.nprobe = nprobe

    return index, _faiss_searcher(index, apply)


def _pq_builder(m: int) -> Callable[[np.ndarray], tuple[Any, Callable[[Any], Searcher]]]:
    """Every vector as an m x 4-bit PQ code (fast-scan), the best k x k_factor re-scored
    exactly: the algorithm of ``FaceIndex``'s ``"pq"`` kind, through FAISS's own re-ranker."""

    def build(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
        pq = faiss.IndexPQFastScan(DIM, m, 4, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexRefineFlat(pq)
        index.train(_sample(base))
        index.add(base)

        def apply(k_factor: int) -> None:
            index.k_factor = float(k_factor)

        return index, _faiss_searcher(index, apply)

    return build


def _build_face_index(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    """``FaceIndex`` as the registry restores it: an exact copy first, then the policy's
    rebuild (in its background thread, ``DEFAULT_POLICY.build_threads``)."""
    index = FaceIndex(DIM, IndexPolicy(auto=False))
    index.add(np.arange(len(base), dtype=np.int64), base)
    index.rebuild(DEFAULT_POLICY.kind_for(len(base)))
    kind = index.kind

    def searcher(_: Any) -> Searcher:
        out: Searcher = index.search
        return out

    inner = index._rows  # for its serialised size: the searched index, and pq's vectors
    parts = [inner.index, inner.store] if kind == "pq" else [inner.index]
    return parts, searcher


class _ExactSearch:
    """``FaceIndex.search`` on its certified exact path with ``scan_threads`` threads; ``note``
    says how often its certificate failed since ``start`` and checks it against ``flat``."""

    def __init__(self, index: FaceIndex, flat: Any, threads: int) -> None:
        # A benchmark's shortcut: one index (2.5 GB at 1M) measured at two thread counts.
        index._rows.policy = dataclasses.replace(index.policy, scan_threads=threads)
        self.index, self.flat = index, flat
        self.start = index.scan_stats

    def __call__(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k)

    def note(self, queries: np.ndarray, k: int) -> str:
        stats = self.index.scan_stats
        asked = stats.queries - self.start.queries
        failed = stats.fallbacks - self.start.fallbacks
        same = 0
        queries = queries[:: -(-len(queries) // CHECKED_QUERIES)]
        for i in range(len(queries)):  # one at a time: the float scan's per-vector path
            sims, ids = self.index.search(queries[i : i + 1], k)
            ref_sims, ref_rows = self.flat.search(queries[i : i + 1], k)
            same += np.array_equal(ids, ref_rows) and np.array_equal(sims, ref_sims)
        rate = throughput(self, queries, k, BUSY_CALLERS, BUSY_SECONDS)
        return (
            f"fallbacks {failed}/{asked}, E {stats.error_bound:.4f}, "
            f"identical to IndexFlatIP {same}/{len(queries)}, "
            f"{BUSY_CALLERS} callers at once: {rate:.0f} queries/s"
        )


def throughput(
    search: Searcher, queries: np.ndarray, k: int, callers: int, seconds: float
) -> float:
    """Queries per second of ``callers`` threads searching one query at a time, all at once
    (every core busy): whether splitting one search over threads costs total throughput."""
    done = [0] * callers
    stop = threading.Event()

    def caller(slot: int) -> None:
        faiss.omp_set_num_threads(1)
        i = slot
        while not stop.is_set():
            search(queries[i % len(queries) : i % len(queries) + 1], k)
            done[slot] += 1
            i += callers

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - started)


def _build_exact(base: np.ndarray) -> tuple[Any, Callable[[Any], Searcher]]:
    """``FaceIndex`` exact (``"flat"``) with its 8-bit code scan (ids are the rows)."""
    index = FaceIndex(DIM, IndexPolicy(auto=False, certified_from=min(len(base), 8_192)))
    index.add(np.arange(len(base), dtype=np.int64), base)
    rows = index._rows  # for the serialised size (vectors and codes) and the reference
    if index.kind != "flat" or rows.scan is None:
        raise RuntimeError(f"expected an exact index with its code scan, got {index.kind}")

    def searcher(threads: int) -> Searcher:
        return _ExactSearch(index, rows.store, threads)

    return [rows.store, rows.scan.index], searcher


PQ_K_FACTORS = (20, 50, 100, 200)

CONFIGS = [
    Config("flat", "Flat (exact)", _build_flat, [("-", None)]),
    Config(
        "exact",
        "FaceIndex exact: SQ8 scan + certificate",
        _build_exact,
        [("1 scan thread", 1), ("2 scan threads", 2)],
        min_size=1_000,
    ),
    Config(
        "hnsw",
        f"HNSW{HNSW_M} efC={HNSW_EF_CONSTRUCTION}",
        _build_hnsw,
        [(f"efSearch={ef}", ef) for ef in HNSW_EF_SEARCH],
        min_size=10_000,
        default_max_size=100_000,  # 1M: ~16 min to build on one thread
    ),
    Config(
        "hnsw-sq8",
        f"HNSW{HNSW_M}+SQ8 efC={HNSW_EF_CONSTRUCTION}, re-score x{HNSW_SQ8_K_FACTOR}",
        _build_hnsw_sq8,
        [(f"efSearch={ef}", ef) for ef in HNSW_EF_SEARCH[:4]],
        min_size=100_000,
    ),
    Config(
        "ivf",
        f"IVF{IVF_NLIST},Flat",
        _build_ivf,
        [(f"nprobe={p}", p) for p in IVF_NPROBE],
        min_size=100_000,
        max_size=100_000,  # dominated by HNSW at 100k already
    ),
    Config(
        "pq128",
        "PQ128x4 fast-scan + exact re-score",
        _pq_builder(128),
        [(f"re-score {f}k", f) for f in PQ_K_FACTORS],
        min_size=10_000,
    ),
    Config(
        "pq256",
        "PQ256x4 fast-scan + exact re-score",
        _pq_builder(256),
        [(f"re-score {f}k", f) for f in PQ_K_FACTORS[:3]],
        min_size=100_000,
    ),
    Config(
        "faceindex",
        "FaceIndex, default policy",
        _build_face_index,
        [("policy", None)],
    ),
]


def measure(
    size: int,
    n_queries: int,
    configs: list[Config],
    seed: int,
    build_threads: int,
    named: bool,
) -> list[Row]:
    t0 = time.perf_counter()
    data = synthetic_faces(size, n_queries, seed=seed)
    print(
        f"\n{size:,} vectors: generated in {time.perf_counter() - t0:.1f} s "
        f"(effective dimension {data.effective_dim:.0f})",
        file=sys.stderr,
    )
    truth_sims, truth = exact_top_k(data.base, data.queries, TOP_K)
    rows = []
    for config in configs:
        if not config.min_size <= size <= config.max_size:
            continue
        if not named and size > config.default_max_size:
            print(f"{config.name}: skipped at {size:,} (name it in --configs)", file=sys.stderr)
            continue
        gc.collect()
        faiss.omp_set_num_threads(build_threads)
        t = time.perf_counter()
        index, searcher = config.build(data.base)
        build = time.perf_counter() - t
        parts = index if isinstance(index, list) else [index]
        memory = sum(serialised_bytes(part) for part in parts) / 2**20
        name = config.name
        if isinstance(index, list) and config.key == "faceindex":
            name += f" ({DEFAULT_POLICY.kind_for(size)})"
        for label, setting in config.sweep:
            search = searcher(setting)
            pick = np.arange(len(data.queries))
            if config.key == "flat" and size >= SLOW_SIZE:
                pick = pick[:: -(-len(pick) // SLOW_QUERIES)]  # genuine and impostors alike
            wall, cpu, found = time_single_queries(search, data.queries[pick], TOP_K)
            note = getattr(search, "note", None)
            hit = found_mask(found, truth[pick])
            recall = hit.mean(axis=1)
            matches = truth_sims[pick] >= MATCH_SIMILARITY
            impostors = ~data.genuine[pick]
            rows.append(
                Row(
                    size,
                    name,
                    label,
                    build,
                    memory,
                    float(np.percentile(wall, 50)),
                    float(np.percentile(wall, 99)),
                    float(np.percentile(cpu, 99)),
                    float(recall.mean()),
                    float(recall[impostors].mean()) if impostors.any() else float("nan"),
                    float(hit[matches].mean()) if matches.any() else float("nan"),
                    note(data.queries[pick], TOP_K) if note is not None else "",
                )
            )
            print(_format_row(rows[-1]), file=sys.stderr)
        del index, searcher
    return rows


def _format_row(r: Row) -> str:
    return (
        f"| {r.size:,} | {r.index} | {r.search} | {r.build_s:.1f} | {r.memory_mb:,.0f} "
        f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.cpu_p99_ms:.3f} | {r.recall:.4f} "
        f"| {r.recall_impostors:.4f} | {r.match_recall:.4f} | {r.note} |"
    )


HEADER = (
    "| vectors | index | search | build s | MB | p50 ms | p99 ms | CPU p99 ms | recall@5 "
    f"| recall@5 impostors | match recall (sim >= {MATCH_SIMILARITY}) | note |"
    "\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--configs",
        nargs="+",
        choices=[c.key for c in CONFIGS],
        help="default: all but hnsw-sq8, and hnsw only up to 100k (1M takes ~16 min to build)",
    )
    parser.add_argument(
        "--build-threads",
        type=int,
        default=1,
        help="OpenMP threads for builds (default 1: on a shared 2-core machine more threads "
        "made FAISS's k-means and HNSW builds far slower, spinning at barriers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    named = args.configs is not None
    keys = args.configs if named else [c.key for c in CONFIGS if c.key != "hnsw-sq8"]
    configs = [c for c in CONFIGS if c.key in keys]
    started = time.perf_counter()
    rows: list[Row] = []
    for size in args.sizes:
        rows += measure(size, args.queries, configs, args.seed, args.build_threads, named)
    print(
        f"\nfaiss {faiss.__version__}; build (train + add) on {args.build_threads} thread(s); "
        f"search one query at a time on 1 thread, top-{TOP_K}, blas threshold "
        f"{faiss.cvar.distance_compute_blas_threshold}; MB: serialised size; CPU p99: the "
        "search thread's CPU time (without waiting for a core)\n"
    )
    print(HEADER)
    for row in rows:
        print(_format_row(row))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
