"""FaceIndex against a brute-force numpy reference (each index kind, with tombstones, across
rebuilds under concurrent searches and writes), its input checks, its policy, and the RWLock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import pytest

from benchmarks.index_scale import synthetic_faces
from indexer import face_index
from indexer.face_index import INDEX_KINDS, FaceIndex, IndexKind, IndexPolicy, check_vectors
from indexer.locks import RWLock
from smartgate.errors import AlreadyExistsError, InvalidInputError

DIM = 32


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(
    base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    sims = queries.astype(np.float64) @ base.astype(np.float64).T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.mark.parametrize("n_queries", [1, 19, 20, 64])  # both sides of the BLAS threshold
def test_search_agrees_with_brute_force(n_queries: int) -> None:
    rng = np.random.default_rng(n_queries)
    base = unit_rows(rng, 700)
    ids = rng.choice(10**9, size=700, replace=False).astype(np.int64)
    queries = unit_rows(rng, n_queries)
    index = FaceIndex(DIM)
    index.add(ids, base)
    assert index.ntotal == 700

    sims, got = index.search(queries, 10)
    ref_sims, ref_ids = brute_force(base, ids, queries, 10)
    assert sims.dtype == np.float32 and got.dtype == np.int64
    assert sims.shape == got.shape == (n_queries, 10)
    np.testing.assert_array_equal(got, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)

    # After removing a third of the templates, it still agrees with the reference.
    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    keep = ~np.isin(ids, gone)
    sims, got = index.search(queries, 10)
    ref_sims, ref_ids = brute_force(base[keep], ids[keep], queries, 10)
    np.testing.assert_array_equal(got, ref_ids)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    assert not np.isin(got, gone).any()


def test_k_beyond_size_pads_with_minus_one_and_minus_inf() -> None:
    rng = np.random.default_rng(1)
    index = FaceIndex(DIM)
    sims, ids = index.search(unit_rows(rng, 2), 3)
    assert (ids == -1).all() and np.isneginf(sims).all()
    index.add(np.array([5, 7]), unit_rows(rng, 2))
    sims, ids = index.search(unit_rows(rng, 1), 4)
    assert sorted(ids[0, :2].tolist()) == [5, 7]
    assert ids[0, 2:].tolist() == [-1, -1] and np.isneginf(sims[0, 2:]).all()
    assert np.isfinite(sims[0, :2]).all()


def test_empty_query_batch() -> None:
    sims, ids = FaceIndex(DIM).search(np.empty((0, DIM), np.float32), 5)
    assert sims.shape == ids.shape == (0, 5)


def test_remove_ignores_unknown_ids_and_membership() -> None:
    rng = np.random.default_rng(2)
    index = FaceIndex(DIM)
    index.add(np.arange(10), unit_rows(rng, 10))
    assert 3 in index
    assert index.remove(np.array([3, 4, 1000])) == 2
    assert 3 not in index and index.ntotal == 8
    assert index.remove(np.empty(0, np.int64)) == 0


def test_duplicate_ids_are_refused_and_nothing_is_added() -> None:
    rng = np.random.default_rng(3)
    index = FaceIndex(DIM)
    index.add(np.array([1, 2]), unit_rows(rng, 2))
    with pytest.raises(AlreadyExistsError, match=r"\[2\]"):
        index.add(np.array([3, 2]), unit_rows(rng, 2))
    with pytest.raises(InvalidInputError, match="unique"):
        index.add(np.array([4, 4]), unit_rows(rng, 2))
    assert index.ntotal == 2


def _bad(rows: np.ndarray, row: int, value: float) -> np.ndarray:
    out = rows.copy()
    out[row, 0] = value
    return out


_GOOD = unit_rows(np.random.default_rng(4), 3)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (_GOOD.astype(np.float64), "float32, got dtype float64"),
        (_GOOD.astype(np.float16), "float32, got dtype float16"),
        ((_GOOD * 100).astype(np.int32), "float32, got dtype int32"),
        (_GOOD[:, :-1], rf"shape \(n, {DIM}\), got shape \(3, {DIM - 1}\)"),
        (_GOOD[0], rf"shape \(n, {DIM}\), got shape \({DIM},\)"),
        (_GOOD.reshape(1, 3, DIM), rf"got shape \(1, 3, {DIM}\)"),
        (_GOOD.tolist(), "numpy float32 array"),
        (_bad(_GOOD, 1, np.nan), r"NaN or infinite values in rows \[1\]"),
        (_bad(_GOOD, 2, np.inf), r"NaN or infinite values in rows \[2\]"),
        (_GOOD * 2, "L2-normalised"),
        (np.zeros((1, DIM), np.float32), "L2-normalised"),
    ],
)
def test_bad_vectors_are_refused_with_expected_and_actual(vectors: object, message: str) -> None:
    index = FaceIndex(DIM)
    with pytest.raises(InvalidInputError, match=message):
        index.add(np.arange(3), vectors)  # type: ignore[arg-type]
    assert index.ntotal == 0


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (np.arange(2), r"shape \(3,\)"),
        (np.arange(3).reshape(3, 1), r"shape \(n,\), got shape \(3, 1\)"),
        (np.arange(3, dtype=np.float64), "integer array"),
        (np.array([0, -1, 2]), ">= 0"),
        ([0, 1, 2], "numpy int64 array"),
    ],
)
def test_bad_ids_are_refused(ids: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        FaceIndex(DIM).add(ids, _GOOD)  # type: ignore[arg-type]


def test_non_contiguous_and_narrow_int_inputs_are_accepted() -> None:
    rng = np.random.default_rng(5)
    wide = unit_rows(rng, 8, 2 * DIM)
    strided = np.ascontiguousarray(wide[:, :DIM])
    strided /= np.linalg.norm(strided, axis=1, keepdims=True)
    fortran = np.asfortranarray(strided)
    index = FaceIndex(DIM)
    index.add(np.arange(8, dtype=np.int32), fortran)
    sims, ids = index.search(fortran[::2], 1)
    assert ids[:, 0].tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(InvalidInputError, match="k must be a positive integer"):
        FaceIndex(DIM).search(_GOOD, k)  # type: ignore[arg-type]


def test_queries_are_checked_like_vectors() -> None:
    with pytest.raises(InvalidInputError, match="queries must have shape"):
        FaceIndex(DIM).search(_GOOD[:, :4], 1)
    assert check_vectors(np.empty((0, DIM), np.float32), DIM).shape == (0, DIM)


def test_concurrent_adds_removes_and_searches() -> None:
    index = FaceIndex(DIM)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        rng = np.random.default_rng(offset)
        try:
            for i in range(40):
                ids = np.arange(offset + 10 * i, offset + 10 * i + 10)
                index.add(ids, unit_rows(rng, 10))
                if i % 2:
                    index.remove(ids[:5])
        except BaseException as exc:
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                sims, ids = index.search(unit_rows(rng, 8), 5)
                assert ((ids >= 0) | np.isneginf(sims)).all()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
    writers = [threading.Thread(target=writer, args=(o,)) for o in (0, 100_000)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    assert index.ntotal == 2 * (40 * 10 - 20 * 5)


def test_rwlock_readers_share_and_writer_excludes() -> None:
    lock = RWLock()
    inside = 0
    most = 0
    writer_saw: list[int] = []
    guard = threading.Lock()
    both_in = threading.Barrier(2, timeout=5)

    def read() -> None:
        nonlocal inside, most
        with lock.read():
            with guard:
                inside += 1
                most = max(most, inside)
            both_in.wait()  # two readers hold the lock at the same time
            time.sleep(0.02)
            with guard:
                inside -= 1

    def write() -> None:
        with lock.write():
            writer_saw.append(inside)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    time.sleep(0.005)
    w = threading.Thread(target=write)
    w.start()
    for t in [*readers, w]:
        t.join(5)
    assert most == 2
    assert writer_saw == [0]


def test_rwlock_waiting_writer_holds_back_new_readers() -> None:
    lock = RWLock()
    order: list[str] = []
    first_in = threading.Event()
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            first_in.set()
            release_first.wait(5)
            order.append("reader1")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader2")

    t1 = threading.Thread(target=first_reader)
    t1.start()
    first_in.wait(5)
    tw = threading.Thread(target=writer)
    tw.start()
    time.sleep(0.02)  # the writer is waiting now
    t2 = threading.Thread(target=late_reader)
    t2.start()
    time.sleep(0.02)
    assert order == []  # the late reader queues behind the waiting writer
    release_first.set()
    for t in (t1, tw, t2):
        t.join(5)
    assert order == ["reader1", "writer", "reader2"]


# -- index kinds, tombstones, rebuilds -------------------------------------------------------


def clustered(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """Face-like unit rows: templates scattered around ~n/3 random centres."""
    centres = unit_rows(rng, max(1, n // 3), dim)
    noise = rng.standard_normal((n, dim)).astype(np.float32) * 0.6 / np.sqrt(dim)
    x = centres[rng.integers(0, len(centres), n)] + noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float((got[:, :, None] == ref[:, None, :]).any(axis=2).mean())


def built(kind: IndexKind, ids: np.ndarray, vectors: np.ndarray, **policy: Any) -> FaceIndex:
    """A FaceIndex of ``kind`` holding ``vectors`` under ``ids`` (no automatic rebuilds)."""
    index = FaceIndex(DIM, IndexPolicy(auto=False, **policy))
    index.add(ids, vectors)
    assert index.rebuild(kind) is True
    assert index.kind == kind and index.ntotal == len(ids) and not index.rebuilding
    return index


def check_against_reference(
    index: FaceIndex, vectors: dict[int, np.ndarray], queries: np.ndarray, k: int
) -> None:
    """Exact kinds agree with brute force over ``vectors`` (id -> vector); HNSW recalls >= 0.95
    of it; both score what they return exactly, in descending order, and return only ids of
    ``vectors``."""
    ids = np.array(sorted(vectors), np.int64)
    base = np.stack([vectors[i] for i in ids.tolist()]) if len(ids) else np.empty((0, DIM))
    ref_sims, ref_ids = brute_force(base.astype(np.float32), ids, queries, k)
    sims, got = index.search(queries, k)
    if index.kind == "flat":
        np.testing.assert_array_equal(got[:, : len(ids)], ref_ids)
        np.testing.assert_allclose(sims[:, : len(ids)], ref_sims, atol=1e-5)
    else:
        assert recall(got, ref_ids) >= 0.95
    valid = got >= 0
    assert np.isin(got[valid], ids).all()
    rows = np.searchsorted(ids, np.where(valid, got, ids[0] if len(ids) else 0))
    exact = np.einsum("qd,qkd->qk", queries, base[rows]) if len(ids) else sims
    np.testing.assert_allclose(sims[valid], exact[valid], atol=1e-5)
    assert (np.diff(np.where(valid, sims, -2.0), axis=1) <= 1e-6).all()


@pytest.mark.parametrize("kind", INDEX_KINDS)
@pytest.mark.parametrize("n_queries", [1, 7, 8, 64])  # both sides of the BLAS threshold
def test_each_kind_against_brute_force(kind: IndexKind, n_queries: int) -> None:
    rng = np.random.default_rng(10 + n_queries)
    base = clustered(rng, 3000)
    ids = rng.choice(10**9, size=3000, replace=False).astype(np.int64)
    queries = np.concatenate(  # genuine-like queries and strangers
        [clustered(rng, n_queries - n_queries // 2), unit_rows(rng, n_queries // 2)]
    )
    index = built(kind, ids, base, hnsw_m=16, hnsw_ef_search=128, pq_rerank=20)
    vectors = dict(zip(ids.tolist(), base, strict=True))
    check_against_reference(index, vectors, queries, 10)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_tombstones_are_never_returned(kind: IndexKind) -> None:
    rng = np.random.default_rng(20)
    base = clustered(rng, 2000)
    ids = np.arange(1000, 3000, dtype=np.int64)
    index = built(kind, ids, base, hnsw_m=16, hnsw_ef_search=128, pq_rerank=20, max_dead_share=1.0)
    gone = ids[rng.random(len(ids)) < 0.3]
    assert index.remove(gone) == len(gone)
    assert index.remove(gone) == 0  # already gone
    assert index.tombstones == len(gone) and index.ntotal == len(ids) - len(gone)
    assert not any(i in index for i in gone.tolist())
    vectors = {i: v for i, v in zip(ids.tolist(), base, strict=True) if i not in set(gone)}
    # Queries at the removed templates themselves: their nearest rows are all tombstones.
    check_against_reference(index, vectors, base[np.isin(ids, gone)][:50], 10)
    # Every slot: k beyond the live count pads with -1 rather than a tombstone.
    _, got = index.search(base[:3], 2000)
    assert not np.isin(got, gone).any()
    assert (got[:, : index.ntotal] >= 0).sum() >= (0.95 if kind == "hnsw" else 1) * 3 * index.ntotal
    # A removed id can come back, with another vector; its old one stays dead.
    fresh = unit_rows(rng, 1)
    index.add(gone[:1], fresh)
    vectors[int(gone[0])] = fresh[0]
    sims, got = index.search(fresh, 1)
    assert got[0, 0] == gone[0] and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    check_against_reference(index, vectors, base[:40], 10)
    # A rebuild compacts: same answers, no tombstones.
    index.rebuild()
    assert index.tombstones == 0 and index.ntotal == len(vectors)
    check_against_reference(index, vectors, base[:40], 10)


@pytest.mark.parametrize("approximate", ["pq", "hnsw"])
def test_policy_switches_kind_at_the_threshold_with_hysteresis(approximate: IndexKind) -> None:
    rng = np.random.default_rng(30)
    policy = IndexPolicy(
        exact_below=100, approximate=approximate, hnsw_m=8, hnsw_ef_search=64, max_dead_share=0.3
    )
    index = FaceIndex(DIM, policy)
    base = clustered(rng, 120)
    index.add(np.arange(99), base[:99])
    assert index.wait_rebuild(10) and index.kind == "flat"
    index.add(np.array([99]), base[99:100])  # the 100th template: approximate, in the background
    assert index.wait_rebuild(10) and index.kind == approximate and index.ntotal == 100
    vectors = dict(enumerate(base[:100]))
    check_against_reference(index, vectors, base[:20], 5)
    # 30 % tombstones: kept (the share must pass max_dead_share).
    index.remove(np.arange(70, 100))
    assert index.wait_rebuild(10) and index.tombstones == 30
    check_against_reference(index, {i: base[i] for i in range(70)}, base[:20], 5)
    # Down to 69 (>= 100 // 2): compacted, still approximate.
    index.remove(np.array([69]))
    assert index.wait_rebuild(10)
    assert index.kind == approximate and index.tombstones == 0 and index.ntotal == 69
    # Below 50: back to exact.
    index.remove(np.arange(40, 69))
    assert index.wait_rebuild(10) and index.kind == "flat" and index.ntotal == 40
    check_against_reference(index, {i: base[i] for i in range(40)}, base[:20], 5)
    assert policy.kind_for(99) == "flat" and policy.kind_for(100) == approximate
    assert policy.kind_for(50, approximate) == approximate
    assert policy.kind_for(49, approximate) == "flat"


def test_writes_during_a_rebuild_are_replayed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adds and removes between the rebuild's snapshot and its swap all reach the new index."""
    rng = np.random.default_rng(40)
    base = clustered(rng, 400)
    index = FaceIndex(DIM, IndexPolicy(auto=False, hnsw_m=16, hnsw_ef_search=200))
    index.add(np.arange(300), base[:300])
    snapshot_taken, go = threading.Event(), threading.Event()
    append = face_index._Rows.append

    def paused_append(rows: Any, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        if threading.current_thread().name == "face-index-rebuild" and not go.is_set():
            snapshot_taken.set()
            assert go.wait(10)
        return append(rows, ids, vectors)

    monkeypatch.setattr(face_index._Rows, "append", paused_append)
    assert index.rebuild("hnsw", wait=False) and index.rebuilding
    assert snapshot_taken.wait(10)
    # Meanwhile: searches go on, on the old (exact) index; writes of every sort.
    _, got = index.search(base[:5], 1)
    assert got[:, 0].tolist() == [0, 1, 2, 3, 4]
    index.add(np.arange(300, 350), base[300:350])  # new ids
    index.remove(np.arange(0, 300, 3))  # snapshot ids
    index.remove(np.arange(301, 350, 5))  # ids added after the snapshot
    again = unit_rows(rng, 2)
    index.add(np.array([0, 301]), again)  # removed ids back, with other vectors
    go.set()
    assert index.wait_rebuild(10) and index.kind == "hnsw"
    vectors = {i: base[i] for i in range(350)}
    for i in [*range(0, 300, 3), *range(301, 350, 5)]:
        del vectors[i]
    vectors[0], vectors[301] = again[0], again[1]
    assert index.ntotal == len(vectors) and all(i in index for i in vectors)
    check_against_reference(index, vectors, base[:60], 5)
    index.rebuild("flat")  # exact, so the contents are checked exactly
    check_against_reference(index, vectors, np.concatenate([base[:60], again]), 5)


def hammer(
    index: FaceIndex,
    *,
    rounds: int,
    remove: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    queries: int = 4,
    check: Callable[[np.ndarray, np.ndarray], None] | None = None,
    background: Sequence[Callable[[threading.Event], None]] = (),
) -> dict[int, np.ndarray]:
    """Two writers (10 clustered rows a round; every third round ``remove(ids, rng)`` of them),
    two readers (``queries`` random queries, top 5, ``check(sims, ids)``) and each of
    ``background(stop)`` at once; returns the rows that must remain. Fails with any thread's
    first errors, or when a rebuild is still running 30 s after the writers are done."""
    expected: dict[int, np.ndarray] = {}
    guard = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        rng = np.random.default_rng(offset)
        try:
            for i in range(rounds):
                ids = np.arange(offset + 10 * i, offset + 10 * i + 10)
                vectors = clustered(rng, 10)
                index.add(ids, vectors)
                with guard:
                    expected.update(zip(ids.tolist(), vectors, strict=True))
                if i % 3 == 2:
                    gone = remove(ids, rng)
                    index.remove(gone)
                    with guard:
                        for g in gone.tolist():
                            del expected[g]
        except BaseException as exc:
            errors.append(exc)

    def reader(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                sims, ids = index.search(unit_rows(rng, queries), 5)
                assert ((ids >= 0) | np.isneginf(sims)).all()
                if check is not None:
                    check(sims, ids)
        except BaseException as exc:
            errors.append(exc)

    def looping(task: Callable[[threading.Event], None]) -> None:
        try:
            task(stop)
        except BaseException as exc:
            errors.append(exc)

    others = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    others += [threading.Thread(target=looping, args=(task,)) for task in background]
    writers = [threading.Thread(target=writer, args=(o,)) for o in (0, 100_000)]
    for t in others + writers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in others:
        t.join(60)
    assert index.wait_rebuild(30)
    assert not errors, errors[:3]
    return expected


def test_rebuilds_under_concurrent_searches_and_writes_lose_nothing() -> None:
    policy = IndexPolicy(exact_below=300, hnsw_m=8, hnsw_ef_search=64, max_dead_share=0.2)
    index = FaceIndex(DIM, policy)

    def rebuilder(stop: threading.Event) -> None:
        kinds: list[IndexKind | None] = ["hnsw", "pq", "flat", None]
        while not stop.is_set():
            for kind in kinds:
                index.rebuild(kind)

    expected = hammer(
        index,
        rounds=60,
        remove=lambda ids, rng: ids[rng.random(10) < 0.5],
        background=[rebuilder],
    )
    assert index.ntotal == len(expected) and all(i in index for i in expected)
    index.rebuild("flat")
    rng = np.random.default_rng(50)
    check_against_reference(index, expected, unit_rows(rng, 20), 10)
    some = np.stack(list(expected.values())[:50])
    _, got = index.search(some, 1)
    assert got[:, 0].tolist() == list(expected)[:50]


def test_stop_rebuild_keeps_the_current_index() -> None:
    rng = np.random.default_rng(60)
    index = FaceIndex(DIM, IndexPolicy(auto=False))
    index.add(np.arange(50), unit_rows(rng, 50))
    index.stop_rebuild()  # nothing running: no-op
    assert face_index._BUILD_SLOT.acquire(timeout=10)  # another index is building
    try:
        index.rebuild("hnsw", wait=False)
        assert index.rebuilding
        index.stop_rebuild(timeout=10)
    finally:
        face_index._BUILD_SLOT.release()
    assert not index.rebuilding and index.kind == "flat" and index.ntotal == 50
    assert index.rebuild(timeout=10) and index.kind == "flat"


def test_failed_rebuild_is_raised_and_the_old_index_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(70)
    index = FaceIndex(DIM, IndexPolicy(auto=False))
    index.add(np.arange(20), unit_rows(rng, 20))

    def broken(*args: object) -> None:
        raise MemoryError("no room for the new index")

    monkeypatch.setattr(face_index._Rows, "__init__", broken)
    with pytest.raises(MemoryError, match="no room"):
        index.rebuild("hnsw")
    assert index.kind == "flat" and not index.rebuilding and index.ntotal == 20
    index.add(np.array([20]), unit_rows(rng, 1))  # still writable and searchable
    assert index.search(unit_rows(rng, 1), 21)[1].min() >= 0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"exact_below": 0}, "exact_below must be a positive integer"),
        ({"hnsw_m": 1.5}, "hnsw_m must be a positive integer"),
        ({"hnsw_ef_search": True}, "hnsw_ef_search must be a positive integer"),
        ({"max_dead_share": 0.0}, r"max_dead_share must be in \(0, 1\]"),
        ({"build_threads": 0}, "build_threads must be a positive integer"),
        ({"approximate": "flat"}, "approximate must be pq or hnsw"),
        ({"pq_rerank": 0}, "pq_rerank must be a positive integer"),
    ],
)
def test_bad_policy(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        IndexPolicy(**fields)


def test_bad_rebuild_kind_and_policy_type() -> None:
    with pytest.raises(InvalidInputError, match="kind must be one of flat, pq, hnsw"):
        FaceIndex(DIM).rebuild("ivf")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="policy must be an IndexPolicy"):
        FaceIndex(DIM, {"exact_below": 5})  # type: ignore[arg-type]


# -- certified exact search (8-bit code scan + certificate) ----------------------------------


def certified(
    ids: np.ndarray, vectors: np.ndarray, *, candidates: int = 16, **policy: Any
) -> FaceIndex:
    """An exact FaceIndex that scans 8-bit codes from 64 rows on (no automatic rebuilds)."""
    index = FaceIndex(
        DIM, IndexPolicy(auto=False, certified_from=64, certified_candidates=candidates, **policy)
    )
    index.add(ids, vectors)
    assert index.kind == "flat"
    return index


def float_scan(index: FaceIndex) -> Any:
    """An ``IndexFlatIP`` holding ``index``'s rows (tombstones too), labelled by row."""
    ref = faiss.IndexFlatIP(DIM)
    ref.add(np.ascontiguousarray(index._rows.vectors()))
    return ref


def check_identical(index: FaceIndex, queries: np.ndarray, k: int) -> None:
    """Each query alone gives the float scan's answer bit for bit: ids, similarities, order."""
    rows = index._rows
    ref = float_scan(index)
    params = None
    if rows.n_dead:
        params = faiss.SearchParameters()
        params.sel = rows._selector
    for i in range(len(queries)):
        sims, ids = index.search(queries[i : i + 1], k)
        ref_sims, ref_rows = ref.search(queries[i : i + 1], k, params=params)
        found = ref_rows >= 0
        ref_ids = np.where(found, rows.row_ids[np.maximum(ref_rows, 0)], -1)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(sims[found], ref_sims[found])
        assert np.isneginf(sims[~found]).all()


def check_exact(
    index: FaceIndex, vectors: dict[int, np.ndarray], queries: np.ndarray, k: int
) -> None:
    """Against numpy in float64 (ids, similarities within float32 rounding) and bit for bit
    against the float scan; and the searches went through the code scan."""
    before = index.scan_stats.queries
    check_against_reference(index, vectors, queries, k)  # a batch: ids as brute force's
    check_identical(index, queries, k)
    assert index.scan_stats.queries > before


def face_like(n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    data = synthetic_faces(n, n_queries, dim=DIM, seed=seed)
    return data.base, data.queries


@pytest.mark.parametrize("data", ["random", "clustered", "face-like"])
def test_certified_scan_is_the_float_scan(data: str) -> None:
    rng = np.random.default_rng(80)
    if data == "face-like":
        base, queries = face_like(3000, 40, seed=1)
    else:
        make = unit_rows if data == "random" else clustered
        base = make(rng, 3000)
        queries = np.concatenate([base[:20], make(rng, 20)])  # stored ones and others
    ids = rng.choice(10**9, size=len(base), replace=False).astype(np.int64)
    index = certified(ids, base)
    assert index._rows.scan is not None and 0 < index.scan_stats.error_bound < 0.05
    vectors = dict(zip(ids.tolist(), base, strict=True))
    for k in (1, 5, 10):
        check_exact(index, vectors, queries, k)
    stats = index.scan_stats
    assert stats.fallbacks < stats.queries / 2  # the certificate usually holds


def test_code_scores_are_within_the_margin() -> None:
    """The bound the certificate rests on: |code score - float32 score| <= margin, every row."""
    rng = np.random.default_rng(81)
    base = clustered(rng, 500)
    index = certified(np.arange(500), base)
    scan = index._rows.scan
    assert scan is not None
    queries = np.concatenate([base[:10], unit_rows(rng, 10)])
    code_scores, rows = scan.index.search(queries, 500)
    exact = np.take_along_axis(queries @ base.T, rows, axis=1)
    gap = np.abs(code_scores.astype(np.float64) - exact).max(axis=1)
    margin = scan.margin(queries)
    assert (gap <= margin).all()
    assert (gap > margin / 20).all()  # and the bound is not vacuous


def test_certified_scan_with_tombstones_and_k_beyond_the_live_rows() -> None:
    rng = np.random.default_rng(82)
    base = clustered(rng, 1500)
    ids = np.arange(5000, 6500, dtype=np.int64)
    index = certified(ids, base, max_dead_share=1.0)
    gone = ids[rng.random(len(ids)) < 0.4]
    assert index.remove(gone) == len(gone)
    vectors = {i: v for i, v in zip(ids.tolist(), base, strict=True) if i not in set(gone)}
    removed = base[np.isin(ids, gone)][:30]  # their nearest rows are tombstones
    check_exact(index, vectors, np.concatenate([removed, unit_rows(rng, 10)]), 5)
    # k above the live rows (the float scan then), and just below it (the code scan).
    live = index.ntotal
    sims, got = index.search(base[:2], live + 50)
    assert not np.isin(got, gone).any() and (got[:, :live] >= 0).all()
    assert (got[:, live:] == -1).all() and np.isneginf(sims[:, live:]).all()
    check_identical(index, base[:3], live // 16 - 1)
    # Fewer live rows than candidates: the float scan, without the codes.
    index.remove(ids[20:])
    counted = index.scan_stats.queries
    check_against_reference(index, {i: v for i, v in vectors.items() if i < ids[20]}, base, 5)
    check_identical(index, base[:5], 5)
    assert index.scan_stats.queries == counted


def test_duplicates_and_ties_are_kept_and_ordered_as_the_float_scan() -> None:
    rng = np.random.default_rng(83)
    distinct = unit_rows(rng, 100)
    base = np.repeat(distinct, 8, axis=0)  # every similarity tied eight times
    rng.shuffle(base)
    index = certified(np.arange(len(base)) * 7, base)
    queries = np.concatenate([distinct[:10], unit_rows(rng, 10)])
    for k in (1, 3, 8, 12):
        check_identical(index, queries, k)
    index.remove(np.arange(0, len(base), 3) * 7)
    check_identical(index, queries, 5)


def test_a_failed_certificate_falls_back_to_the_float_scan() -> None:
    """Near-duplicates: the top scores differ by far less than the quantisation error."""
    rng = np.random.default_rng(84)
    centre = unit_rows(rng, 1)
    base = centre + 1e-4 * rng.standard_normal((400, DIM)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    base = np.concatenate([base, unit_rows(rng, 400)])
    index = certified(np.arange(800), base)
    queries = np.concatenate([centre, base[:5]])
    before = index.scan_stats
    # Float32 cannot order these as float64 does: the float scan is the reference, and the
    # similarities are float64's top 5 within float32 rounding.
    check_identical(index, queries, 5)
    sims, got = index.search(queries, 5)
    assert (got < 400).all()
    top = np.sort(queries.astype(np.float64) @ base.T.astype(np.float64), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(sims, top, atol=1e-6)
    after = index.scan_stats
    assert after.fallbacks - before.fallbacks == 2 * len(queries)  # every one, both times
    # Other queries still pass theirs.
    check_identical(index, unit_rows(rng, 10), 5)
    assert index.scan_stats.fallbacks - after.fallbacks < 5


def test_vectors_outside_the_trained_range_raise_the_bound_and_stay_exact() -> None:
    rng = np.random.default_rng(85)
    spread = clustered(rng, 200)  # every coordinate small
    index = certified(np.arange(200), spread)
    lo, hi = index._rows.value_range
    assert lo > -0.9 and hi < 0.9
    e0 = index.scan_stats.error_bound
    axes = np.eye(DIM, dtype=np.float32)[:8]  # one coordinate 1.0: far outside the range
    index.add(np.arange(200, 208), axes)
    scan = index._rows.scan
    assert scan is not None
    vmin, vdiff = faiss.vector_to_array(scan.index.sq.trained)
    assert vmin < lo and hi < vmin + vdiff < 0.9  # the range, with some headroom
    every = np.concatenate([spread, axes])
    errors = np.linalg.norm(scan.index.sa_decode(scan.index.sa_encode(every)) - every, axis=1)
    assert index.scan_stats.error_bound >= errors.max() > 10 * e0  # the axes, clamped
    vectors = dict(enumerate(np.concatenate([spread, axes])))
    check_exact(index, vectors, np.concatenate([axes, spread[:10], unit_rows(rng, 10)]), 5)
    _, got = index.search(axes, 1)
    assert got[:, 0].tolist() == list(range(200, 208))
    # A rebuild trains on every row: the bound covers the axes without clamping them.
    index.rebuild("flat")
    assert index.scan_stats.error_bound < index._rows.value_range[1] - index._rows.value_range[0]
    check_exact(index, vectors, axes, 3)


def test_rebuilds_keep_the_certified_scan_and_its_counts() -> None:
    rng = np.random.default_rng(86)
    base = clustered(rng, 600)
    index = certified(np.arange(600), base, max_dead_share=1.0)
    index.search(base[:4], 5)
    counted = index.scan_stats.queries
    assert counted == 4
    index.remove(np.arange(0, 600, 4))
    vectors = {i: base[i] for i in range(600) if i % 4}
    for kind in ("pq", "flat", "hnsw", "flat"):  # through every kind and back
        index.rebuild(kind)
    assert index.kind == "flat" and index.tombstones == 0 and index._rows.scan is not None
    assert index.scan_stats.queries == counted  # counts survive the swaps
    check_exact(index, vectors, np.concatenate([base[:10], unit_rows(rng, 10)]), 5)
    # Small again (below certified_from): the plain float scan.
    index.remove(np.array([i for i in vectors if i >= 40]))
    index.rebuild("flat")
    assert index._rows.scan is None and index.scan_stats.error_bound != index.scan_stats.error_bound
    check_against_reference(index, {i: base[i] for i in range(1, 40) if i % 4}, base[:10], 5)


def test_a_growing_flat_index_starts_its_code_scan_at_the_threshold() -> None:
    rng = np.random.default_rng(87)
    base = clustered(rng, 300)
    index = FaceIndex(DIM, IndexPolicy(auto=False, certified_from=100, certified_candidates=8))
    index.add(np.arange(99), base[:99])
    assert index._rows.scan is None
    index.search(base[:3], 2)
    assert index.scan_stats.queries == 0  # the plain float scan
    for lo in range(99, 300, 50):  # the 100th row starts it: rows 0-99 encoded, then each add
        index.add(np.arange(lo, min(300, lo + 50)), base[lo : lo + 50])
        assert index._rows.scan is not None and index._rows.scan.index.ntotal == index.ntotal
    check_exact(index, dict(enumerate(base)), base[::10], 4)


@pytest.mark.parametrize("dead", [False, True])
def test_scan_split_over_threads_is_exact(monkeypatch: pytest.MonkeyPatch, dead: bool) -> None:
    monkeypatch.setattr(face_index, "_SCAN_PART_ROWS", 200)
    rng = np.random.default_rng(88)
    base = clustered(rng, 1000)
    index = certified(np.arange(1000), base, scan_threads=3, max_dead_share=1.0)
    vectors = dict(enumerate(base))
    if dead:
        index.remove(np.arange(0, 1000, 3))
        vectors = {i: v for i, v in vectors.items() if i % 3}
    # Three parts, one per thread: each keeps its own best 16, the bound is the largest.
    rows, bound = index._rows.scan.candidates(  # type: ignore[union-attr]
        base[:2], 16, 1000, index._rows._selector, 3
    )
    assert rows.shape == (2, 48) and np.isfinite(bound).all()
    assert all(len(set(r.tolist())) == 48 for r in rows)
    assert not dead or not np.isin(rows, np.arange(0, 1000, 3)).any()
    check_exact(index, vectors, np.concatenate([base[:10], unit_rows(rng, 10)]), 5)
    # The first part (rows 0-332) down to 10 live rows: all of them are candidates.
    index.remove(np.arange(10, 333))
    vectors = {i: v for i, v in vectors.items() if i < 10 or i >= 333}
    rows, bound = index._rows.scan.candidates(  # type: ignore[union-attr]
        base[:2], 16, 1000, index._rows._selector, 3
    )
    assert ((rows[:, :16] >= 0).sum(axis=1) == (6 if dead else 10)).all()
    assert np.isfinite(bound).all()
    check_exact(index, vectors, np.concatenate([base[:10], unit_rows(rng, 10)]), 5)
    # Every part short of 16 live rows: every live row is a candidate, nothing to bound.
    index.remove(np.arange(333, 1000))
    rows, bound = index._rows.scan.candidates(  # type: ignore[union-attr]
        base[:2], 16, 1000, index._rows._selector, 3
    )
    assert np.isneginf(bound).all() and ((rows >= 0).sum(axis=1) == (6 if dead else 10)).all()


def test_certified_searches_under_concurrent_writes_and_rebuilds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(face_index, "_SCAN_PART_ROWS", 100)
    policy = IndexPolicy(
        exact_below=10**6,
        certified_from=64,
        certified_candidates=16,
        scan_threads=2,
        max_dead_share=0.2,
    )
    index = FaceIndex(DIM, policy)

    def ordered(sims: np.ndarray, ids: np.ndarray) -> None:
        assert (np.diff(np.where(ids >= 0, sims, -2.0), axis=1) <= 0).all()

    expected = hammer(index, rounds=40, remove=lambda ids, rng: ids[:4], queries=3, check=ordered)
    assert index.kind == "flat" and index._rows.scan is not None
    assert index.scan_stats.queries > 0
    check_exact(index, expected, unit_rows(np.random.default_rng(89), 10), 5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"certified_from": 0}, "certified_from must be a positive integer"),
        ({"certified_candidates": 2.5}, "certified_candidates must be a positive integer"),
        ({"scan_threads": 0}, "scan_threads must be a positive integer"),
    ],
)
def test_bad_certified_policy(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        IndexPolicy(**fields)


def test_policy_from_the_index_config_section() -> None:
    from smartgate.config import IndexConfig
    from smartgate.errors import ConfigError

    policy = IndexPolicy.from_config(IndexConfig(exact_below=50_000, scan_threads=2))
    assert (policy.exact_below, policy.scan_threads) == (50_000, 2)
    assert policy.pq_m == face_index.DEFAULT_POLICY.pq_m
    with pytest.raises(ConfigError, match="scan_threads"):
        IndexConfig(scan_threads=0)


def test_an_exact_index_about_to_turn_approximate_keeps_no_codes() -> None:
    # Restoring a large community fills an exact index the policy then rebuilds as PQ: encoding
    # 8-bit codes for it would be thrown away. With auto off the exact index stays: it scans.
    rng = np.random.default_rng(7)
    vectors = unit_rows(rng, 600)
    ids = np.arange(600, dtype=np.int64)
    leaving = FaceIndex(DIM, IndexPolicy(exact_below=400, certified_from=64, auto=False))
    leaving.add(ids, vectors)
    assert leaving.kind == "flat" and leaving.scan_stats.error_bound > 0  # auto off: scans
    auto = FaceIndex(DIM, IndexPolicy(exact_below=400, certified_from=64))
    auto.add(ids, vectors)
    assert np.isnan(auto.scan_stats.error_bound)  # no codes, before and after the rebuild
    auto.wait_rebuild(60)
    assert auto.kind == "pq"
    staying = FaceIndex(DIM, IndexPolicy(exact_below=1000, certified_from=64))
    staying.add(ids, vectors)
    assert staying.kind == "flat" and staying.scan_stats.error_bound > 0
