"""``indexer.strangers.StrangerIndex``: linking visits, templates, purges, persistence, locking."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from indexer.strangers import MANIFEST, Stranger, StrangerIndex, StrangerStats
from smartgate.errors import ConfigError, InvalidInputError, ModelError, NotFoundError

DIM = 64
DAY = 86400.0


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def people(rng: np.random.Generator, n: int) -> np.ndarray:
    return unit(rng.standard_normal((n, DIM)))


def sighting(base: np.ndarray, rng: np.random.Generator, noise: float = 0.08) -> np.ndarray:
    """A noisy face of ``base``: cosine ~0.85 to it at DIM 64, ~0 to anybody else."""
    return unit(base + rng.normal(0.0, noise, DIM))


def test_same_person_links_up_and_different_people_do_not() -> None:
    rng = np.random.default_rng(0)
    bases = people(rng, 6)
    index = StrangerIndex(DIM, threshold=0.5)
    ids: dict[int, set[str]] = {i: set() for i in range(6)}
    news = 0
    for visit in range(5):
        for i, base in enumerate(bases):
            sid, is_new, sim = index.assign("c1", sighting(base, rng), visit * DAY + i)
            ids[i].add(sid)
            news += is_new
            if not is_new:
                assert sim >= 0.5
    assert all(len(v) == 1 for v in ids.values())
    assert len(set.union(*ids.values())) == 6 and news == 6
    assert index.stats("c1") == StrangerStats(
        strangers=6, templates=index.stats("c1").templates, sightings=30
    )
    assert 6 < index.stats("c1").templates <= 6 * 5


def test_ids_are_per_community_counters() -> None:
    rng = np.random.default_rng(1)
    a, b = people(rng, 2)
    index = StrangerIndex(DIM)
    assert index.assign("c1", a, 1.0)[:2] == ("s-1", True)
    assert index.assign("c1", b, 2.0)[:2] == ("s-2", True)
    assert index.assign("c2", a, 3.0)[:2] == ("s-1", True)  # communities never share strangers
    assert index.assign("c1", a, 4.0) == ("s-1", False, pytest.approx(1.0))


def test_new_stranger_reports_nearest_similarity() -> None:
    rng = np.random.default_rng(2)
    a, b = people(rng, 2)
    index = StrangerIndex(DIM)
    assert index.assign("c1", a, 1.0)[2] == -1.0  # nobody to compare with
    _, is_new, sim = index.assign("c1", b, 2.0)
    assert is_new and sim == pytest.approx(float(a @ b), abs=1e-5)


def test_sightings_and_times() -> None:
    rng = np.random.default_rng(3)
    (base,) = people(rng, 1)
    index = StrangerIndex(DIM)
    for t in (10 * DAY, 1 * DAY, 8 * DAY, 9 * DAY, 9.5 * DAY):  # any order
        index.assign("c1", sighting(base, rng), t)
    assert index.get("c1", "s-1") == Stranger(
        "s-1", 1 * DAY, 10 * DAY, 5, index.get("c1", "s-1").templates
    )
    assert index.sightings_since("c1", "s-1", 10 * DAY - 7 * DAY) == 4  # "seen 4 times this week"
    assert [s.stranger_id for s in index.strangers("c1")] == ["s-1"]


def test_templates_are_capped_and_stay_near_the_centroid() -> None:
    rng = np.random.default_rng(4)
    (base,) = people(rng, 1)
    index = StrangerIndex(DIM, max_templates=5)
    for i in range(40):
        index.assign("c1", sighting(base, rng, noise=0.12), float(i))
    assert index.get("c1", "s-1").templates == 5
    assert index.stats("c1").templates == 5
    # An exact repeat of a template is no new template.
    index2 = StrangerIndex(DIM)
    index2.assign("c1", base, 0.0)
    index2.assign("c1", base, 1.0)
    assert index2.get("c1", "s-1").templates == 1


def test_remove_purges_and_ids_are_not_reused() -> None:
    rng = np.random.default_rng(5)
    a, b = people(rng, 2)
    index = StrangerIndex(DIM)
    index.assign("c1", a, 1.0)
    index.assign("c1", b, 2.0)
    assert index.remove("c1", ["s-1", "s-9"]) == 1  # unknown ids are ignored
    assert index.remove("c1", ["s-1"]) == 0
    assert index.remove("nowhere", ["s-1"]) == 0
    assert [s.stranger_id for s in index.strangers("c1")] == ["s-2"]
    assert index.stats("c1") == StrangerStats(1, 1, 1)
    assert index.assign("c1", sighting(a, rng), 3.0)[:2] == ("s-3", True)  # a is new again
    with pytest.raises(NotFoundError, match="has no stranger 's-1'"):
        index.get("c1", "s-1")
    with pytest.raises(InvalidInputError, match="not a stranger id"):
        index.remove("c1", ["p-1"])


def test_unknown_community_reads_as_empty() -> None:
    index = StrangerIndex(DIM)
    assert index.stats("c9") == StrangerStats(0, 0, 0)
    assert index.strangers("c9") == []
    with pytest.raises(NotFoundError):
        index.sightings_since("c9", "s-1", 0.0)


def test_persistence_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    bases = people(rng, 4)
    index = StrangerIndex(DIM)
    for visit in range(4):
        for i, base in enumerate(bases):
            index.assign(f"c{i % 2}", sighting(base, rng), visit * DAY + i)
    index.remove("c0", ["s-1"])
    index.save(tmp_path)
    index.save(tmp_path)  # a second save replaces the first
    assert len(list(tmp_path.glob("strangers-*.sealed"))) == 1
    assert not list(tmp_path.glob(".*tmp"))

    loaded = StrangerIndex.load(tmp_path, DIM)
    for community in ("c0", "c1"):
        assert loaded.strangers(community) == index.strangers(community)
        assert loaded.stats(community) == index.stats(community)
    for i, base in enumerate(bases):
        face = sighting(base, rng)
        assert loaded.assign(f"c{i % 2}", face, 9 * DAY) == index.assign(f"c{i % 2}", face, 9 * DAY)
    assert loaded.sightings_since("c1", "s-1", 0.0) == index.sightings_since("c1", "s-1", 0.0)


def test_load_of_nothing_is_empty(tmp_path: Path) -> None:
    assert StrangerIndex.load(tmp_path / "absent", DIM).stats("c1") == StrangerStats(0, 0, 0)


def test_load_refuses_another_dimension_and_bad_files(tmp_path: Path) -> None:
    index = StrangerIndex(DIM)
    index.assign("c1", people(np.random.default_rng(7), 1)[0], 1.0)
    index.save(tmp_path)
    with pytest.raises(ModelError, match="face model changed"):
        StrangerIndex.load(tmp_path, DIM * 2)
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"format": 99}))
    with pytest.raises(ConfigError, match="format 99"):
        StrangerIndex.load(tmp_path, DIM)
    manifest["communities"][0]["strangers"][0]["template_ids"] = [0, 1]  # one row short
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="cannot load"):
        StrangerIndex.load(tmp_path, DIM)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load"):
        StrangerIndex.load(tmp_path, DIM)


@pytest.mark.parametrize(
    ("embedding", "message"),
    [
        (np.ones(DIM, np.float32), "must be L2-normalised"),
        (np.ones(DIM), "must be float32"),
        (unit(np.ones(DIM + 1)), rf"shape \({DIM},\), got \({DIM + 1},\)"),
        (unit(np.ones((2, DIM))), rf"shape \({DIM},\), got \(2, {DIM}\)"),
        ([0.1] * DIM, "must be a numpy float32 array"),
    ],
)
def test_bad_embeddings_are_refused(embedding: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        StrangerIndex(DIM).assign("c1", embedding, 1.0)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    face = unit(np.ones(DIM))
    with pytest.raises(InvalidInputError, match="community must be a non-empty string"):
        StrangerIndex(DIM).assign("", face, 1.0)
    with pytest.raises(InvalidInputError, match="t must be finite"):
        StrangerIndex(DIM).assign("c1", face, float("nan"))
    with pytest.raises(InvalidInputError, match="dim must be a positive integer"):
        StrangerIndex(0)


def test_concurrent_assigns_of_one_person_make_one_stranger() -> None:
    rng = np.random.default_rng(8)
    (base,) = people(rng, 1)
    faces = [sighting(base, rng) for _ in range(64)]
    index = StrangerIndex(DIM)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def work(k: int) -> None:
        barrier.wait()
        results.extend(index.assign("c1", faces[i], float(i))[0] for i in range(k, 64, 8))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert set(results) == {"s-1"}
    assert index.stats("c1").sightings == 64
