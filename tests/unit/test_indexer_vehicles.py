"""VehicleRegistry on real SQLite (in tmp_path): registration, paging, restore, exact and fuzzy
matching with look-alike characters, search across communities, input checks, prefilter speed."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer import FaceRegistry, Role, plate_fuzzy
from indexer.store import DB_FILENAME, SCHEMA_VERSION, Store
from indexer.vehicles import MAX_PLATE_LENGTH, Vehicle, VehicleMatch, VehicleRegistry
from recognizer.plates.text import PROVINCES, normalize
from smartgate.errors import AlreadyExistsError, InvalidInputError, NotFoundError

DIM = 8
SERIAL = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"  # no I, no O
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"


@pytest.fixture
def faces(tmp_path: Path) -> Iterator[FaceRegistry]:
    with FaceRegistry(tmp_path / "data", DIM) as reg:
        yield reg


@pytest.fixture
def vehicles(faces: FaceRegistry) -> VehicleRegistry:
    return VehicleRegistry(faces)


def test_add_get_list_remove(vehicles: VehicleRegistry, faces: FaceRegistry) -> None:
    before = time.time()
    car = vehicles.add("c1", "皖a·0n718", owner="unit 3-201")
    assert isinstance(car, Vehicle)
    assert (car.community, car.plate, car.role, car.owner, car.expires_at) == (
        "c1",
        "皖A0N718",
        "resident",
        "unit 3-201",
        None,
    )
    assert car.created_at >= before and car.key > 0
    assert faces.has_community("c1")  # created through the face registry
    assert vehicles.get("c1", "皖A0N718") == car
    assert vehicles.get("c1", " 皖A-0N718 ") == car  # the lookup normalises too

    with pytest.raises(AlreadyExistsError, match="皖A0N718"):
        vehicles.add("c1", "皖A0N718", role="watchlist")
    updated = vehicles.add("c1", "皖A0N718", role="watchlist", owner="police 17", replace=True)
    assert (updated.key, updated.created_at, updated.role, updated.owner) == (
        car.key,
        car.created_at,
        "watchlist",
        "police 17",
    )
    assert vehicles.get("c1", "皖A0N718") == updated

    removed = vehicles.remove("c1", "皖A0N718")
    assert removed == updated
    with pytest.raises(NotFoundError, match="皖A0N718"):
        vehicles.get("c1", "皖A0N718")
    with pytest.raises(NotFoundError, match="皖A0N718"):
        vehicles.remove("c1", "皖A0N718")
    assert vehicles.match("c1", "皖A0N718") is None
    assert vehicles.indexed_vehicles("c1") == 0


def test_list_pages_in_plate_order_and_filters_roles(vehicles: VehicleRegistry) -> None:
    plates = [f"京A{n:05d}" for n in range(25)]
    for n, plate in enumerate(reversed(plates)):
        role: Role = "watchlist" if n % 5 == 0 else "resident"
        vehicles.add("c1", plate, role=role)
    seen: list[str] = []
    after = None
    while True:
        page = vehicles.list("c1", limit=10, after=after)
        seen += [v.plate for v in page]
        if len(page) < 10:
            break
        after = page[-1].plate
    assert seen == sorted(plates)
    watch = vehicles.list("c1", role="watchlist", limit=100)
    assert [v.plate for v in watch] == sorted(plates[n] for n in range(24, -1, -5))
    assert vehicles.list("c1", after="京A99999") == []
    with pytest.raises(InvalidInputError, match="limit"):
        vehicles.list("c1", limit=0)
    with pytest.raises(InvalidInputError, match="role"):
        vehicles.list("c1", role="admin")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="'nowhere'"):
        vehicles.list("nowhere")


def test_restore_after_reopen(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with FaceRegistry(data, DIM) as faces:
        vehicles = VehicleRegistry(faces)
        vehicles.add("c1", "皖A0N718", owner="p1")
        vehicles.add("c1", "皖B12345", role="visitor", expires_at=2e9)
        vehicles.add("c2", "沪C88888", role="watchlist")
        vehicles.add("c2", "沪C99999")
        vehicles.remove("c2", "沪C99999")
        before = {c: vehicles.list(c) for c in ("c1", "c2")}
    with FaceRegistry(data, DIM) as faces:
        vehicles = VehicleRegistry(faces)
        assert faces.communities() == ["c1", "c2"]
        assert {c: vehicles.list(c) for c in ("c1", "c2")} == before
        assert vehicles.indexed_vehicles("c1") == 2 and vehicles.indexed_vehicles("c2") == 1
        hit = vehicles.match("c1", "皖B12345")
        assert hit is not None and hit.vehicle.role == "visitor" and not hit.fuzzy
        fuzzy = vehicles.match("c2", "沪C8888B")
        assert fuzzy is not None and fuzzy.vehicle.plate == "沪C88888" and fuzzy.fuzzy
        assert vehicles.match("c2", "沪C99999") is None


def test_migration_adds_vehicles_table(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        assert store.schema_version() == SCHEMA_VERSION >= 2
    finally:
        store.close()
    con = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "vehicles" in tables
        con.execute("PRAGMA foreign_keys=ON")
        con.execute("INSERT INTO communities (id, created_at) VALUES ('c1', 0)")
        with pytest.raises(sqlite3.IntegrityError):  # visitors carry an expiry, even in SQL
            con.execute(
                "INSERT INTO vehicles (community, plate, role, created_at) "
                "VALUES ('c1', '京A12345', 'visitor', 0)"
            )
    finally:
        con.close()


def test_version_1_database_gains_vehicles(tmp_path: Path) -> None:
    """A registry written before vehicles existed (schema 1) is upgraded in place on open."""
    with FaceRegistry(tmp_path, DIM) as faces:
        faces.enroll("c1", "p1", np.eye(1, DIM, dtype=np.float32))
    con = sqlite3.connect(tmp_path / DB_FILENAME)
    con.execute("DROP TABLE vehicles")
    con.execute("UPDATE schema_version SET version = 1")
    con.commit()
    con.close()
    with FaceRegistry(tmp_path, DIM) as faces:
        assert faces.store.schema_version() == SCHEMA_VERSION
        assert faces.get("c1", "p1").template_count == 1
        vehicles = VehicleRegistry(faces)
        assert vehicles.list("c1") == []
        assert vehicles.add("c1", "京A12345").plate == "京A12345"


# Registry plate → reading, with the look-alike the reading swaps in. Each differs by one
# look-alike substitution, which costs less than a full edit.
LOOK_ALIKES = [
    ("皖A0N718", "皖ADN718", "0/D"),
    ("皖A0N718", "皖A0N7I8", "1/I (folded by normalize: exact)"),
    ("皖A0N718", "皖AON718", "0/O (folded by normalize: exact)"),
    ("皖A0N718", "皖A0N71B", "8/B"),
    ("皖A2N718", "皖AZN718", "2/Z"),
    ("皖A5N718", "皖ASN718", "5/S"),
    ("皖A0N718", "皖A0N118", "7/1"),
    ("皖A6N718", "皖AGN718", "6/G"),
]


@pytest.mark.parametrize(("plate", "reading", "pair"), LOOK_ALIKES)
def test_look_alike_reading_matches(
    vehicles: VehicleRegistry, plate: str, reading: str, pair: str
) -> None:
    vehicles.add("c1", plate)
    vehicles.add("c1", "沪C88888")  # an unrelated plate must not interfere
    hit = vehicles.match("c1", reading)
    assert hit is not None, pair
    assert hit.vehicle.plate == plate
    if "exact" in pair:
        assert (hit.distance, hit.fuzzy) == (0.0, False)
    else:
        assert hit.fuzzy and 0.0 < hit.distance < 1.0, (pair, hit.distance)
        assert hit.distance == pytest.approx(plate_fuzzy.weighted_distance(reading, plate))


@pytest.mark.parametrize(
    ("reading", "max_distance", "expected"),
    [
        ("皖A0N718", 1.0, ("皖A0N718", False)),  # exact
        ("皖A0N719", 1.0, ("皖A0N718", True)),  # one plain substitution costs 1
        ("皖A0N719", 0.5, None),  # ... more than allowed
        ("皖A0N7189", 1.0, ("皖A0N718", True)),  # one insertion (8-character reading)
        ("皖A0N18", 1.0, ("皖A0N718", True)),  # one deletion
        ("皖A0N729", 1.0, None),  # two plain edits away with max 1
        ("皖A3N729", 1.0, None),
        ("皖A0N7", 1.0, None),  # two deletions
        ("京A0N719", 1.0, None),  # province and a digit changed: two plain edits
    ],
)
def test_exact_and_fuzzy_bounds(
    vehicles: VehicleRegistry,
    reading: str,
    max_distance: float,
    expected: tuple[str, bool] | None,
) -> None:
    vehicles.add("c1", "皖A0N718")
    hit = vehicles.match("c1", reading, max_distance=max_distance)
    if expected is None:
        assert hit is None
    else:
        assert hit is not None and (hit.vehicle.plate, hit.fuzzy) == expected
        assert hit.distance <= max_distance


def test_best_is_lowest_distance_and_watchlist_wins_ties(vehicles: VehicleRegistry) -> None:
    vehicles.add("c1", "皖A0N718", role="resident")
    vehicles.add("c1", "皖A0N71G", role="watchlist")  # sorts after the resident's plate
    # "6" is a weak look-alike of both "8" and "G": equally far from both plates.
    assert plate_fuzzy.weighted_distance("皖A0N716", "皖A0N718") == pytest.approx(
        plate_fuzzy.weighted_distance("皖A0N716", "皖A0N71G")
    )
    tie = vehicles.match("c1", "皖A0N716")
    assert tie is not None and tie.fuzzy and tie.distance < 1
    assert tie.vehicle.role == "watchlist"  # the alert is not hidden by the resident
    plain_tie = vehicles.match("c1", "皖A0N71X")  # a plain substitution from both
    assert plain_tie is not None and plain_tie.vehicle.role == "watchlist"
    # An exact resident hit still wins over a watchlist look-alike.
    exact = vehicles.match("c1", "皖A0N718")
    assert exact is not None and exact.vehicle.role == "resident" and not exact.fuzzy
    # A closer resident beats a farther watchlist plate.
    vehicles.add("c1", "粤B12345", role="resident")
    vehicles.add("c1", "粤B12349", role="watchlist")
    near = vehicles.match("c1", "粤B1234S")  # S/5 look-alike vs plain S/9
    assert near is not None and near.vehicle.plate == "粤B12345"
    # Ties between two plates of one role go to the smaller plate.
    vehicles.add("c1", "川D55550")
    vehicles.add("c1", "川D55551")
    first = vehicles.match("c1", "川D55552")
    assert first is not None and first.vehicle.plate == "川D55550"


def test_fuzzy_watchlist_alert_is_flagged(vehicles: VehicleRegistry) -> None:
    vehicles.add("c1", "沪C88888", role="watchlist", owner="case 2024-17")
    hit = vehicles.match("c1", "沪C8888B")
    assert isinstance(hit, VehicleMatch)
    assert hit.vehicle.role == "watchlist" and hit.fuzzy and hit.distance > 0


def test_visitor_expiry(vehicles: VehicleRegistry) -> None:
    with pytest.raises(InvalidInputError, match="expires_at"):
        vehicles.add("c1", "京A12345", role="visitor")
    visitor = vehicles.add("c1", "京A12345", role="visitor", expires_at=1000.0)
    assert visitor.is_valid_at(999.9) and not visitor.is_valid_at(1000.0)
    resident = vehicles.add("c1", "京A54321")
    assert resident.is_valid_at(1e12)
    hit = vehicles.match("c1", "京A12345")  # matching finds expired visitors; callers decide
    assert hit is not None and not hit.vehicle.is_valid_at(time.time())


def test_unknown_community(vehicles: VehicleRegistry, faces: FaceRegistry) -> None:
    for call in (
        lambda: vehicles.match("nowhere", "京A12345"),
        lambda: vehicles.get("nowhere", "京A12345"),
        lambda: vehicles.remove("nowhere", "京A12345"),
        lambda: vehicles.list("nowhere"),
        lambda: vehicles.search(["nowhere"], "京A12345"),
    ):
        with pytest.raises(NotFoundError, match="'nowhere'"):
            call()
    # A community created by a face enrolment has no vehicle yet: no match, no error.
    faces.create_community("faces-only")
    assert vehicles.match("faces-only", "京A12345") is None
    assert vehicles.list("faces-only") == []
    assert vehicles.search(["faces-only"], "京A12345") == []
    assert not faces.has_community("nowhere")


def test_vehicle_creates_community_seen_by_faces(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with FaceRegistry(data, DIM) as faces:
        vehicles = VehicleRegistry(faces)
        vehicles.add("gate-7", "京A12345")
        assert faces.has_community("gate-7") and faces.communities() == ["gate-7"]
        assert faces.list_persons("gate-7") == []
        with pytest.raises(AlreadyExistsError):
            faces.create_community("gate-7")
        vehicles.add("gate-7", "京A54321")  # the existing community is reused
        faces.create_community("c2")
        vehicles.add("c2", "京A12345")  # and so is one made by the face registry
    with FaceRegistry(data, DIM) as faces:
        assert faces.communities() == ["c2", "gate-7"]


@pytest.mark.parametrize(
    ("plate", "message"),
    [
        ("", "no plate characters"),
        ("  ·-", "no plate characters"),
        ("京A123456789", "too long"),
        ("京A" + "1" * 100, "too long"),
        ("京A12\x0045", "control"),
        ("京A12\n345", "control"),
        ("京A12\u200b345", "control"),  # zero-width space (Cf)
        (12345, "string"),
        (None, "string"),
    ],
)
def test_invalid_plates(vehicles: VehicleRegistry, plate: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        vehicles.add("c1", plate)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=message):
        vehicles.match("c1", plate)  # type: ignore[arg-type]
    assert vehicles.add("c1", "京A" + "1" * (MAX_PLATE_LENGTH - 2)).plate == "京A" + "1" * 8


def test_invalid_arguments(vehicles: VehicleRegistry) -> None:
    with pytest.raises(InvalidInputError, match="role"):
        vehicles.add("c1", "京A12345", role="vip")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="owner"):
        vehicles.add("c1", "京A12345", owner="x\ny")
    with pytest.raises(InvalidInputError, match="owner"):
        vehicles.add("c1", "京A12345", owner="x" * 1000)
    with pytest.raises(InvalidInputError, match="expires_at"):
        vehicles.add("c1", "京A12345", role="visitor", expires_at=float("nan"))
    with pytest.raises(InvalidInputError, match="community id"):
        vehicles.add("", "京A12345")
    vehicles.add("c1", "京A12345")
    for bad in (-0.1, 3.5, float("inf"), "1"):
        with pytest.raises(InvalidInputError, match="max_distance"):
            vehicles.match("c1", "京A12345", max_distance=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="communities"):
        vehicles.search([], "京A12345")
    with pytest.raises(InvalidInputError, match="communities"):
        vehicles.search("c1", "京A12345")
    with pytest.raises(InvalidInputError, match="limit"):
        vehicles.search(["c1"], "京A12345", limit=0)
    # Nothing was stored by the refused calls.
    assert [v.plate for v in vehicles.list("c1")] == ["京A12345"]


def test_search_across_communities(vehicles: VehicleRegistry, faces: FaceRegistry) -> None:
    vehicles.add("c1", "皖A0N718")
    vehicles.add("c2", "皖A0N71B", role="watchlist")
    vehicles.add("c2", "皖A0N718", owner="c2 owner")
    vehicles.add("c3", "皖A0N718")
    exact = vehicles.search(["c1", "c2"], "皖a0n718", fuzzy=False)
    assert [(m.vehicle.community, m.vehicle.plate, m.fuzzy) for m in exact] == [
        ("c1", "皖A0N718", False),
        ("c2", "皖A0N718", False),
    ]
    both = vehicles.search(["c2", "c1"], "皖A0N718", fuzzy=True, max_distance=1.0)
    assert [(m.vehicle.community, m.vehicle.plate, m.fuzzy) for m in both] == [
        ("c1", "皖A0N718", False),
        ("c2", "皖A0N718", False),
        ("c2", "皖A0N71B", True),
    ]
    assert [m.distance for m in both][:2] == [0.0, 0.0] and 0 < both[2].distance < 1
    assert len(vehicles.search(["c1", "c2", "c3"], "皖A0N718", limit=2)) == 2
    assert vehicles.search(["c1", "c1"], "皖A0N718", fuzzy=False) == exact[:1]  # deduplicated
    assert vehicles.search(["c1"], "粤Z99999") == []
    with pytest.raises(NotFoundError, match="'c9'"):
        vehicles.search(["c1", "c9"], "皖A0N718")


def test_index_stays_consistent_through_writes(vehicles: VehicleRegistry) -> None:
    """Adds and removes in random order: the fuzzy prefilter's arrays (rows moved on removal)
    must agree with a brute-force distance over the live plates."""
    rng = random.Random(7)
    live: set[str] = set()
    pool = [f"苏E{a}{b}{c}88" for a in "0D8B" for b in "25ZS" for c in "17G6"]
    for _ in range(300):
        plate = rng.choice(pool)
        if plate in live:
            vehicles.remove("c1", plate)
            live.discard(plate)
        else:
            vehicles.add("c1", plate)
            live.add(plate)
    assert vehicles.indexed_vehicles("c1") == len(live)
    for query in [*rng.sample(pool, 20), "苏E0Z1889", "苏E0Z18"]:
        hits = vehicles.search(["c1"], query, fuzzy=True, max_distance=1.5, limit=1000)
        expected = sorted(
            p for p in live if p == query or plate_fuzzy.weighted_distance(query, p) <= 1.5
        )
        assert sorted(h.vehicle.plate for h in hits) == expected, query


@pytest.mark.parametrize("max_distance", [0.3, 0.6, 1.0, 1.5, 2.4])
def test_prefilter_never_drops_a_match(vehicles: VehicleRegistry, max_distance: float) -> None:
    """Fuzzy search against brute force (``best_matches`` over every plate) for readings made
    by random look-alike swaps, substitutions, insertions and deletions."""
    rng = random.Random(int(max_distance * 10))
    plates = random_plates(300, seed=3)
    # Near neighbours of the plates, so that many lie within max_distance of each other.
    confusable = "0OD Q8B1I5S2Z17LT4AG6".replace(" ", "")
    for plate in plates[:150]:
        vehicles.add("c1", plate)
        twin = plate[:-2] + rng.choice(confusable) + plate[-1]
        if normalize(twin) != normalize(plate):
            vehicles.add("c1", twin, replace=True)
    live = [v.plate for v in vehicles.list("c1", limit=1000)]
    matched = 0
    for plate in rng.sample(live, 100) + plates[150:180]:
        reading = list(plate)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            pos = rng.randrange(len(reading))
            edit = rng.random()
            partners = [b for a, b in plate_fuzzy.SUBSTITUTION_COSTS if a == reading[pos]]
            if edit < 0.5 and partners:
                reading[pos] = rng.choice(partners)
            elif edit < 0.6:
                reading[pos] = rng.choice(confusable + "XKW京")
            elif edit < 0.8 and len(reading) > 3:
                del reading[pos]
            else:
                reading.insert(pos, rng.choice(confusable))
        query = normalize("".join(reading))
        hits = vehicles.search(["c1"], query, max_distance=max_distance, limit=1000)
        brute = plate_fuzzy.best_matches(query, live, max_distance)
        found = sorted((h.vehicle.plate, h.distance) for h in hits)
        assert found == sorted(brute), query
        matched += bool(brute)
    assert matched >= 5  # the comparison is not vacuous
    print(f"max_distance {max_distance}: {matched}/130 readings within reach of a plate")


def test_concurrent_matches_during_writes(vehicles: VehicleRegistry) -> None:
    for n in range(200):
        vehicles.add("c1", f"浙A{n:05d}")
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                hit = vehicles.match("c1", "浙A0001B")
                assert hit is not None and hit.vehicle.plate == "浙A00018"
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(200, 400):
            vehicles.add("c1", f"浙B{n:05d}")
            vehicles.remove("c1", f"浙B{n:05d}")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def random_plates(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    plates: set[str] = set()
    while len(plates) < n:
        plates.add(rng.choice(PROVINCES) + rng.choice(LETTERS) + "".join(rng.choices(SERIAL, k=5)))
    return sorted(plates)


@pytest.mark.slow
def test_fuzzy_match_speed_on_10000_plates(
    vehicles: VehicleRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    plates = random_plates(10_000)
    for plate in plates:
        vehicles.add("big", plate)
    rng = np.random.default_rng(1)
    swaps = {"0": "D", "8": "B", "2": "Z", "5": "S", "1": "7", "6": "G", "D": "0", "B": "8"}
    queries = []
    for i in rng.choice(len(plates), 200, replace=False).tolist():
        plate = plates[i]
        pos = next((j for j in range(2, 7) if plate[j] in swaps), 6)
        twisted = plate[:pos] + swaps.get(plate[pos], "X") + plate[pos + 1 :]
        queries.append((plate, twisted))
    hits = 0
    start = time.perf_counter()
    for plate, twisted in queries:
        found = vehicles.match("big", twisted)
        assert found is not None
        hits += found.vehicle.plate == plate
    per_match_ms = (time.perf_counter() - start) / len(queries) * 1e3
    misses = random_plates(200, seed=99)
    start = time.perf_counter()
    for query in misses:
        vehicles.match("big", query[:-1] + "X")
    per_miss_ms = (time.perf_counter() - start) / len(misses) * 1e3
    with capsys.disabled():
        print(
            f"\nfuzzy match on 10,000 plates: {per_match_ms:.3f} ms per look-alike reading, "
            f"{per_miss_ms:.3f} ms per unknown reading ({hits}/{len(queries)} found the "
            "registered plate)"
        )
    assert hits >= 0.9 * len(queries)
