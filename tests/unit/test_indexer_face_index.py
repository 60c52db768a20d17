"""FaceIndex against a brute-force numpy reference, its input checks, and the RWLock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from indexer.face_index import FaceIndex, check_vectors
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
