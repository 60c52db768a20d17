"""FaceRegistry end to end on real SQLite (in tmp_path) and real FAISS, seeded synthetic faces."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import FaceRegistry, Person, Role, face_index
from indexer.face_index import IndexKind, IndexPolicy
from indexer.store import DB_FILENAME
from smartgate.errors import AlreadyExistsError, InvalidInputError, ModelError, NotFoundError

DIM = 64
THRESHOLD, MARGIN = 0.5, 0.1


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Faces:
    """Seeded synthetic identities: a random unit centre per person, noisy shots around it
    (cosine ~0.9 between two shots of one person, ~0 +- 0.13 between persons)."""

    def __init__(self, seed: int = 0, dim: int = DIM) -> None:
        self.rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres: dict[str, np.ndarray] = {}

    def centre(self, person_id: str) -> np.ndarray:
        if person_id not in self.centres:
            self.centres[person_id] = normalise(self.rng.standard_normal(self.dim))
        return self.centres[person_id]

    def shots(self, person_id: str, n: int = 1, noise: float = 0.3) -> np.ndarray:
        c = self.centre(person_id)
        jitter = self.rng.standard_normal((n, self.dim)) * noise / np.sqrt(self.dim)
        return normalise(c + jitter)

    def stranger(self, n: int = 1) -> np.ndarray:
        return normalise(self.rng.standard_normal((n, self.dim)))


@pytest.fixture
def faces() -> Faces:
    return Faces()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[FaceRegistry]:
    with FaceRegistry(tmp_path / "data", DIM) as reg:
        yield reg


def db_counts(data_dir: Path) -> dict[str, int]:
    """Row counts read straight from the SQLite file, through a separate connection."""
    con = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("communities", "persons", "templates")
        }
    finally:
        con.close()


def test_enrol_identify_search_remove(registry: FaceRegistry, faces: Faces) -> None:
    alice = registry.enroll("c1", "alice", faces.shots("alice", 3), name="Alice")
    registry.enroll("c1", "bob", faces.shots("bob", 2), role="visitor", expires_at=1e10)
    assert registry.has_community("c1") and registry.communities() == ["c1"]
    assert isinstance(alice, Person)
    assert (alice.community, alice.person_id, alice.name, alice.role) == (
        "c1",
        "alice",
        "Alice",
        "resident",
    )
    assert alice.template_count == 3 and alice.expires_at is None
    assert registry.get("c1", "bob").expires_at == 1e10

    queries = np.concatenate([faces.shots("alice"), faces.shots("bob"), faces.stranger()])
    got = registry.identify("c1", queries, THRESHOLD, MARGIN)
    assert len(got) == 3
    assert got[0].accepted and got[0].person == alice and got[0].candidate == alice
    assert got[0].score > 0.8 and got[0].runner_up < 0.5
    assert got[1].accepted and got[1].person is not None and got[1].person.person_id == "bob"
    assert not got[2].accepted and got[2].person is None and got[2].candidate is not None
    assert got[2].score < THRESHOLD

    hits = registry.search("c1", faces.shots("alice")[0], top_k=5)
    assert [p.person_id for p, _ in hits] == ["alice", "bob"]
    assert hits[0][1] > hits[1][1]

    assert registry.remove("c1", "alice") == 3
    with pytest.raises(NotFoundError, match="person 'alice' does not exist in community 'c1'"):
        registry.get("c1", "alice")
    with pytest.raises(NotFoundError, match="'alice'"):
        registry.remove("c1", "alice")
    after = registry.identify("c1", faces.shots("alice"), THRESHOLD, MARGIN)[0]
    assert after.candidate is not None and after.candidate.person_id == "bob"
    assert not after.accepted


def test_several_templates_per_person_count_with_their_best(
    registry: FaceRegistry, faces: Faces
) -> None:
    # Three quite different shots of one person (e.g. glasses, mask, profile).
    shots = np.stack([faces.stranger()[0] for _ in range(3)])
    carol = registry.enroll("c1", "carol", shots)
    registry.enroll("c1", "dave", faces.shots("dave", 2))
    assert carol.template_count == 3
    assert registry.indexed_templates("c1") == 5
    probes = normalise(shots + faces.rng.standard_normal(shots.shape) * 0.2 / np.sqrt(DIM))
    for result in registry.identify("c1", probes, THRESHOLD, MARGIN):
        assert result.accepted and result.person == carol and result.score > 0.9
    # search lists carol once, with her best template's score
    hits = registry.search("c1", probes[1], top_k=10)
    assert [p.person_id for p, _ in hits] == ["carol", "dave"]
    assert hits[0][1] == pytest.approx(float((shots @ probes[1]).max()), abs=1e-5)


def test_margin_rejects_two_similar_persons(registry: FaceRegistry, faces: Faces) -> None:
    base = faces.centre("twin")
    registry.enroll("c1", "twin-a", normalise(base + faces.stranger()[0] * 0.05)[None])
    registry.enroll("c1", "twin-b", normalise(base + faces.stranger()[0] * 0.05)[None])
    result = registry.identify("c1", base[None], THRESHOLD, MARGIN)[0]
    assert result.score >= THRESHOLD and result.score - result.runner_up < MARGIN
    assert not result.accepted and result.person is None
    assert result.candidate is not None and result.candidate.person_id.startswith("twin-")
    assert registry.identify("c1", base[None], THRESHOLD, 0.0)[0].accepted


def test_empty_community_has_no_candidates(registry: FaceRegistry, faces: Faces) -> None:
    registry.create_community("c1")
    with pytest.raises(AlreadyExistsError, match="'c1'"):
        registry.create_community("c1")
    [result] = registry.identify("c1", faces.stranger(), THRESHOLD, MARGIN)
    assert result.candidate is None and result.person is None and not result.accepted
    assert result.score == -1.0 and result.runner_up == -1.0
    assert registry.search("c1", faces.stranger()[0], 3) == []
    assert registry.list_persons("c1") == []
    assert registry.identify("c1", np.empty((0, DIM), np.float32), THRESHOLD, MARGIN) == []


def test_communities_are_separate(registry: FaceRegistry, faces: Faces) -> None:
    registry.enroll("c1", "alice", faces.shots("alice", 2))
    registry.enroll("c2", "alice", faces.shots("alice", 2))  # same person id, other community
    registry.enroll("c2", "erin", faces.shots("erin", 2))
    assert registry.communities() == ["c1", "c2"]
    [r] = registry.identify("c1", faces.shots("erin"), THRESHOLD, MARGIN)
    assert r.candidate is not None and r.candidate.person_id == "alice" and not r.accepted
    assert registry.remove("c1", "alice") == 2
    assert registry.get("c2", "alice").template_count == 2
    assert registry.indexed_templates("c2") == 4


def test_state_is_restored_on_reopen(tmp_path: Path, faces: Faces) -> None:
    data = tmp_path / "data"
    queries = None
    with FaceRegistry(data, DIM) as reg:
        for i in range(30):
            reg.enroll(f"c{i % 3}", f"p{i:02d}", faces.shots(f"p{i:02d}", 1 + i % 4))
        reg.create_community("empty")
        reg.remove("c0", "p03")
        reg.enroll("c1", "p04", faces.shots("p04", 2), replace=True, name="renamed")
        queries = np.concatenate([faces.shots(f"p{i:02d}") for i in range(30)])
        before = {c: reg.identify(c, queries, THRESHOLD, MARGIN) for c in ("c0", "c1", "c2")}
        sizes = {c: reg.indexed_templates(c) for c in reg.communities()}
        pages = reg.list_persons("c1", limit=100)
    with FaceRegistry(data, DIM) as again:
        assert again.communities() == ["c0", "c1", "c2", "empty"]
        assert {c: again.indexed_templates(c) for c in again.communities()} == sizes
        assert again.list_persons("c1", limit=100) == pages
        for c, expected in before.items():
            assert again.identify(c, queries, THRESHOLD, MARGIN) == expected
        assert again.get("c1", "p04").name == "renamed"
        # ids keep growing after a reopen: new enrolments never collide with restored ones
        again.enroll("c0", "p03", faces.shots("p03", 2))
        [r] = again.identify("c0", faces.shots("p03"), THRESHOLD, MARGIN)
        assert r.accepted and r.person is not None and r.person.person_id == "p03"


def test_removal_erases_every_template_from_db_and_index(tmp_path: Path, faces: Faces) -> None:
    data = tmp_path / "data"
    with FaceRegistry(data, DIM) as reg:
        reg.enroll("c1", "alice", faces.shots("alice", 5))
        reg.enroll("c1", "alice", faces.shots("alice", 4), replace=True)
        assert db_counts(data) == {"communities": 1, "persons": 1, "templates": 4}
        assert reg.indexed_templates("c1") == 4
        assert reg.remove("c1", "alice") == 4
        assert db_counts(data) == {"communities": 1, "persons": 0, "templates": 0}
        assert reg.indexed_templates("c1") == 0
        [r] = reg.identify("c1", faces.shots("alice"), THRESHOLD, MARGIN)
        assert r.candidate is None
    with FaceRegistry(data, DIM) as again:
        assert again.indexed_templates("c1") == 0


def _fail_third_template(data_dir: Path) -> None:
    con = sqlite3.connect(data_dir / DB_FILENAME)
    con.execute(
        "CREATE TRIGGER fail_third BEFORE INSERT ON templates "
        "WHEN (SELECT count(*) FROM templates WHERE person_key = NEW.person_key) >= 2 "
        "BEGIN SELECT RAISE(ABORT, 'simulated failure'); END"
    )
    con.commit()
    con.close()


def test_failed_enrolment_leaves_nothing(tmp_path: Path, faces: Faces) -> None:
    data = tmp_path / "data"
    with FaceRegistry(data, DIM) as reg:
        _fail_third_template(data)
        with pytest.raises(sqlite3.IntegrityError, match="simulated failure"):
            reg.enroll("c1", "alice", faces.shots("alice", 3))
        assert db_counts(data) == {"communities": 0, "persons": 0, "templates": 0}
        assert not reg.has_community("c1")
        with pytest.raises(NotFoundError, match="community 'c1' does not exist"):
            reg.get("c1", "alice")
        # two templates pass the trigger; a failed replace keeps those two untouched
        reg.enroll("c1", "alice", faces.shots("alice", 2))
        with pytest.raises(sqlite3.IntegrityError):
            reg.enroll("c1", "alice", faces.shots("alice", 3), replace=True, name="new")
        assert db_counts(data) == {"communities": 1, "persons": 1, "templates": 2}
        assert reg.indexed_templates("c1") == 2
        assert reg.get("c1", "alice").name == ""
        [r] = reg.identify("c1", faces.shots("alice"), THRESHOLD, MARGIN)
        assert r.accepted


def test_invalid_enrolment_leaves_nothing(registry: FaceRegistry, faces: Faces) -> None:
    bad = faces.shots("alice", 3)
    bad[2, 5] = np.nan
    with pytest.raises(InvalidInputError, match=r"rows \[2\]"):
        registry.enroll("c1", "alice", bad)
    assert not registry.has_community("c1")


@pytest.mark.parametrize(
    "call",
    [
        lambda r, q: r.identify("ghost", q, THRESHOLD, MARGIN),
        lambda r, q: r.search("ghost", q[0], 5),
        lambda r, q: r.list_persons("ghost"),
        lambda r, q: r.remove("ghost", "alice"),
        lambda r, q: r.get("ghost", "alice"),
        lambda r, q: r.indexed_templates("ghost"),
    ],
    ids=["identify", "search", "list", "remove", "get", "indexed_templates"],
)
def test_unknown_community_is_not_found(registry: FaceRegistry, faces: Faces, call: object) -> None:
    registry.enroll("c1", "alice", faces.shots("alice"))
    with pytest.raises(NotFoundError, match=r"^community 'ghost' does not exist$"):
        call(registry, faces.shots("alice"))  # type: ignore[operator]


def test_replace(registry: FaceRegistry, faces: Faces) -> None:
    first = registry.enroll("c1", "alice", faces.shots("alice", 3), name="A")
    with pytest.raises(AlreadyExistsError, match=r"'alice'.*'c1'"):
        registry.enroll("c1", "alice", faces.shots("alice", 1))
    # Re-enrol with a different face: the old templates no longer match at all.
    second = registry.enroll(
        "c1", "alice", faces.shots("alice-new", 2), name="B", role="watchlist", replace=True
    )
    assert second.key == first.key and second.created_at == first.created_at
    assert (second.name, second.role, second.template_count) == ("B", "watchlist", 2)
    assert registry.indexed_templates("c1") == 2
    old, new = registry.identify(
        "c1", np.concatenate([faces.shots("alice"), faces.shots("alice-new")]), THRESHOLD, MARGIN
    )
    assert not old.accepted
    assert new.accepted and new.person == second


def test_paging_is_stable_and_complete(registry: FaceRegistry, faces: Faces) -> None:
    ids = [f"p{i:03d}" for i in range(25)]
    for i, pid in enumerate(reversed(ids)):
        role: Role = "visitor" if i % 5 == 0 else "resident"
        registry.enroll("c1", pid, faces.stranger(1 + i % 2), role=role)
    seen: list[str] = []
    after = None
    while True:
        page = registry.list_persons("c1", limit=10, after=after)
        seen += [p.person_id for p in page]
        if len(page) < 10:
            break
        after = page[-1].person_id
    assert seen == ids
    visitors = registry.list_persons("c1", role="visitor")
    assert [p.person_id for p in visitors] == sorted(ids[::-1][::5])
    assert all(p.role == "visitor" for p in visitors)
    assert {p.template_count for p in registry.list_persons("c1")} == {1, 2}
    assert registry.list_persons("c1", limit=3, after="p023") == registry.list_persons(
        "c1", after="p023"
    )
    assert [p.person_id for p in registry.list_persons("c1", after="p023")] == ["p024"]


def test_search_returns_distinct_persons_beyond_one_persons_templates(
    registry: FaceRegistry, faces: Faces
) -> None:
    # One person with many templates close to the probe must not crowd the others out.
    registry.enroll("c1", "many", faces.shots("many", 60, noise=0.1))
    for i in range(5):
        registry.enroll("c1", f"other{i}", faces.shots(f"other{i}", 2))
    hits = registry.search("c1", faces.shots("many")[0], top_k=4)
    names = [p.person_id for p, _ in hits]
    assert names[0] == "many" and len(set(names)) == 4
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(registry.search("c1", faces.shots("many")[0], top_k=50)) == 6


def test_person_validity() -> None:
    p = Person(1, "c1", "v", "", "visitor", 100.0, 0.0, 1)
    assert p.is_valid_at(99.9) and not p.is_valid_at(100.0)
    assert Person(2, "c1", "r", "", "resident", None, 0.0, 1).is_valid_at(1e12)


@pytest.mark.parametrize(
    ("community", "person_id", "message"),
    [
        ("", "p", "community id must not be empty"),
        ("   ", "p", "community id must not be empty"),
        ("c" * 129, "p", "at most 128 characters, got 129"),
        ("c\n1", "p", "control or non-printable"),
        ("c1", "p\x00", "control or non-printable"),
        ("c1", "p\x1b[31m", "control or non-printable"),
        (7, "p", "community id must be a string, got int"),
        ("c1", None, "person id must be a string, got NoneType"),
    ],
)
def test_bad_ids_are_refused(
    registry: FaceRegistry, faces: Faces, community: object, person_id: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        registry.enroll(community, person_id, faces.shots("x"))  # type: ignore[arg-type]
    assert registry.communities() == []


def test_unicode_ids_and_names_are_fine(registry: FaceRegistry, faces: Faces) -> None:
    p = registry.enroll("平安小区-3", "住户 0012", faces.shots("u"), name="张三")
    assert registry.get("平安小区-3", "住户 0012") == p


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "admin"}, "role must be one of resident, visitor, watchlist"),
        ({"name": "a\tb"}, "name"),
        ({"name": "x" * 257}, "at most 256"),
        ({"expires_at": float("nan")}, "expires_at must be finite"),
        ({"expires_at": "tomorrow"}, "expires_at must be a number"),
    ],
)
def test_bad_enrol_arguments(
    registry: FaceRegistry, faces: Faces, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        registry.enroll("c1", "p", faces.shots("p"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: f.shots("p", 2).astype(np.float64), "embeddings must be float32"),
        (lambda f: f.shots("p", 2)[:, :10], rf"shape \(n, {DIM}\), got shape \(2, 10\)"),
        (lambda f: f.shots("p", 1)[0], rf"shape \(n, {DIM}\), got shape \({DIM},\)"),
        (lambda f: np.empty((0, DIM), np.float32), "at least one row"),
        (lambda f: f.shots("p", 2) * 3, "L2-normalised"),
        (lambda f: np.full((1, DIM), np.inf, np.float32), "NaN or infinite"),
        (lambda f: f.shots("p", 1).tolist(), "numpy float32 array"),
    ],
)
def test_bad_embeddings_on_enrol(
    registry: FaceRegistry, faces: Faces, make: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        registry.enroll("c1", "p", make(faces))  # type: ignore[operator]


def test_bad_queries(registry: FaceRegistry, faces: Faces) -> None:
    registry.enroll("c1", "p", faces.shots("p"))
    q = faces.shots("p", 2)
    with pytest.raises(InvalidInputError, match="float32"):
        registry.identify("c1", q.astype(np.float64), THRESHOLD, MARGIN)
    with pytest.raises(InvalidInputError, match="NaN"):
        registry.identify("c1", np.full((1, DIM), np.nan, np.float32), THRESHOLD, MARGIN)
    with pytest.raises(InvalidInputError, match=rf"embedding must have shape \({DIM},\)"):
        registry.search("c1", q, 3)
    with pytest.raises(InvalidInputError, match="shape"):
        registry.search("c1", q[0, :5], 3)
    with pytest.raises(InvalidInputError, match="k must be between 1 and 1000"):
        registry.identify("c1", q, THRESHOLD, MARGIN, k=0)
    with pytest.raises(InvalidInputError, match="threshold must be finite"):
        registry.identify("c1", q, float("nan"), MARGIN)
    with pytest.raises(InvalidInputError, match="top_k must be an integer"):
        registry.search("c1", q[0], 2.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="limit must be between"):
        registry.list_persons("c1", limit=0)
    with pytest.raises(InvalidInputError, match="role must be one of"):
        registry.list_persons("c1", role="staff")  # type: ignore[arg-type]


def test_dim_mismatch_on_restore_says_re_enrol(tmp_path: Path, faces: Faces) -> None:
    data = tmp_path / "data"
    with FaceRegistry(data, DIM) as reg:
        reg.enroll("c1", "alice", faces.shots("alice", 3))
    with pytest.raises(ModelError, match=r"3 of dimension 64.*128-dimensional.*re-enrol") as e:
        FaceRegistry(data, 128)
    assert "registry.db" in str(e.value)
    with FaceRegistry(data, DIM) as reg:  # the original model still works
        assert reg.get("c1", "alice").template_count == 3


def test_concurrent_enrolment_and_identification(tmp_path: Path) -> None:
    faces = Faces(seed=7)
    for i in range(4 * 25 + 10):
        faces.centre(f"p{i:03d}")  # draw every centre up front: the generator is not shared
    shots = {pid: faces.shots(pid, 3) for pid in list(faces.centres)}
    probes = {pid: faces.shots(pid, 1) for pid in list(faces.centres)}
    errors: list[BaseException] = []
    stop = threading.Event()

    with FaceRegistry(tmp_path / "data", DIM) as reg:
        for i in range(10):  # known before the readers start
            reg.enroll("c1", f"p{i:03d}", shots[f"p{i:03d}"][:2])

        def enrol(worker: int) -> None:
            try:
                for j in range(25):
                    pid = f"p{10 + worker * 25 + j:03d}"
                    reg.enroll("c1", pid, shots[pid])
                    if j % 5 == 0:
                        reg.enroll("c1", pid, shots[pid][:1], replace=True)
                    if j % 7 == 0:
                        reg.remove("c1", pid)
            except BaseException as exc:
                errors.append(exc)

        def identify(worker: int) -> None:
            rng = np.random.default_rng(worker)
            try:
                while not stop.is_set():
                    pick = [f"p{int(i):03d}" for i in rng.integers(0, 10, 4)]
                    got = reg.identify("c1", np.concatenate([probes[p] for p in pick]), 0.5, 0.1)
                    assert [g.person.person_id if g.person else None for g in got] == pick
                    reg.search("c1", probes[pick[0]][0], 3)
                    reg.list_persons("c1", limit=5)
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=enrol, args=(w,)) for w in range(4)]
        readers = [threading.Thread(target=identify, args=(w,)) for w in range(4)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join(60)
        stop.set()
        for t in readers:
            t.join(60)
        assert not errors, errors

        removed = {f"p{10 + w * 25 + j:03d}" for w in range(4) for j in range(0, 25, 7)}
        expected = sorted(set(shots) - removed)
        listed = [p.person_id for p in reg.list_persons("c1", limit=1000)]
        assert listed == expected
        counts = {p.person_id: p.template_count for p in reg.list_persons("c1", limit=1000)}
        assert reg.indexed_templates("c1") == sum(counts.values())
        probe = np.concatenate([probes[p] for p in expected])
        got = reg.identify("c1", probe, 0.5, 0.1)
        assert [g.person.person_id if g.person else None for g in got] == expected


# -- index policy and rebuilds -----------------------------------------------------------------


@pytest.mark.parametrize("approximate", ["pq", "hnsw"])
def test_growing_community_turns_approximate_and_reopens_exact_then_approximate(
    tmp_path: Path, faces: Faces, approximate: IndexKind
) -> None:
    policy = IndexPolicy(exact_below=40, approximate=approximate, hnsw_m=16, hnsw_ef_search=64)
    data = tmp_path / "data"
    people = [f"p{i:02d}" for i in range(20)]
    probes = np.concatenate([faces.shots(p) for p in people])
    with FaceRegistry(data, DIM, policy=policy) as reg:
        for p in people[:13]:  # 39 templates: exact
            reg.enroll("c1", p, faces.shots(p, 3))
        assert reg.rebuild("c1") and reg.index_kind("c1") == "flat"
        reg.enroll("c1", "small", faces.shots("small", 1))  # 40: approximate (background)
        reg.enroll("c2", "other", faces.shots("other", 2))
        for p in people[13:]:
            reg.enroll("c1", p, faces.shots(p, 3))
        assert reg.rebuild("c1")  # joins the automatic rebuild (or builds what the policy says)
        assert reg.index_kind("c1") == approximate and reg.index_kind("c2") == "flat"
        assert reg.indexed_templates("c1") == 61
        got = reg.identify("c1", probes, THRESHOLD, MARGIN)
        assert [g.person.person_id if g.person else None for g in got] == people
        hits = reg.search("c1", probes[0], top_k=3)
        assert hits[0][0].person_id == people[0] and len(hits) == 3
        assert reg.remove("c1", people[0]) == 3  # tombstones: never identified again
        [gone] = reg.identify("c1", probes[:1], THRESHOLD, MARGIN)
        assert gone.candidate is None or gone.candidate.person_id != people[0]
        before = reg.identify("c1", probes[1:], THRESHOLD, MARGIN)
        # Asked for explicitly: exact, until the (automatic) policy's kind is back.
        assert reg.rebuild("c1", "flat")
        assert [g.person for g in reg.identify("c1", probes[1:], THRESHOLD, MARGIN)] == [
            g.person for g in before
        ]
        assert reg.rebuild("c1") and reg.index_kind("c1") == approximate
    with FaceRegistry(data, DIM, policy=policy) as again:
        # Restored exact at once (a copy of the stored vectors), approximate once built.
        got = again.identify("c1", probes[1:], THRESHOLD, MARGIN)
        assert [g.person for g in got] == [g.person for g in before]
        assert again.rebuild("c1") and again.index_kind("c1") == approximate
        got = again.identify("c1", probes[1:], THRESHOLD, MARGIN)
        assert [g.person for g in got] == [g.person for g in before]


def test_enrolment_and_identification_during_rebuilds(tmp_path: Path) -> None:
    faces = Faces(seed=11)
    pids = [f"p{i:03d}" for i in range(60)]
    shots = {pid: faces.shots(pid, 2) for pid in pids}
    probes = {pid: faces.shots(pid, 1) for pid in pids}
    errors: list[BaseException] = []
    stop = threading.Event()
    policy = IndexPolicy(exact_below=30, hnsw_m=16, hnsw_ef_search=64, max_dead_share=0.2)
    with FaceRegistry(tmp_path / "data", DIM, policy=policy) as reg:
        for pid in pids[:20]:
            reg.enroll("c1", pid, shots[pid])

        def enrol() -> None:
            try:
                for j, pid in enumerate(pids[20:]):
                    reg.enroll("c1", pid, shots[pid])
                    if j % 4 == 0:
                        reg.enroll("c1", pid, shots[pid][:1], replace=True)
            except BaseException as exc:
                errors.append(exc)

        def identify(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                while not stop.is_set():
                    pick = [pids[int(i)] for i in rng.integers(0, 20, 4)]
                    got = reg.identify("c1", np.concatenate([probes[p] for p in pick]), 0.5, 0.1)
                    assert [g.person.person_id if g.person else None for g in got] == pick
            except BaseException as exc:
                errors.append(exc)

        def rebuild() -> None:
            try:
                while not stop.is_set():
                    for kind in ("flat", "hnsw", None):
                        reg.rebuild("c1", kind)  # type: ignore[arg-type]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=identify, args=(s,)) for s in range(2)]
        threads.append(threading.Thread(target=rebuild))
        writer = threading.Thread(target=enrol)
        for t in [*threads, writer]:
            t.start()
        writer.join(60)
        stop.set()
        for t in threads:
            t.join(60)
        assert not errors, errors[:3]
        counts = {p.person_id: p.template_count for p in reg.list_persons("c1", limit=1000)}
        assert reg.indexed_templates("c1") == sum(counts.values())
        got = reg.identify("c1", np.concatenate([probes[p] for p in pids]), 0.5, 0.1)
        assert [g.person.person_id if g.person else None for g in got] == pids


def test_rebuild_checks_and_close_abandons_a_rebuild(tmp_path: Path, faces: Faces) -> None:
    reg = FaceRegistry(tmp_path / "data", DIM, policy=IndexPolicy(auto=False))
    reg.enroll("c1", "alice", faces.shots("alice", 3))
    with pytest.raises(NotFoundError, match=r"^community 'ghost' does not exist$"):
        reg.rebuild("ghost")
    with pytest.raises(NotFoundError, match="'ghost'"):
        reg.index_kind("ghost")
    with pytest.raises(InvalidInputError, match="kind must be one of flat, pq, hnsw"):
        reg.rebuild("c1", "ivf")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="policy must be an IndexPolicy"):
        FaceRegistry(tmp_path / "other", DIM, policy="hnsw")  # type: ignore[arg-type]
    assert face_index._BUILD_SLOT.acquire(timeout=10)  # another community is building
    try:
        assert reg.rebuild("c1", "hnsw", wait=False)
        assert reg.rebuild("c1", "hnsw", timeout=0.01) is False  # still waiting for the slot
        reg.close()  # abandons it
    finally:
        face_index._BUILD_SLOT.release()
    assert reg.index_kind("c1") == "flat"
