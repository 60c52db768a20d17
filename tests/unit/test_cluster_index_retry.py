"""Retried writes of a community's index (``CommunityIndex`` with ``retry=True``), on a real
SQLite store in tmp_path, without Ray: the index is closed and reopened from its store between
the lost attempt and the retry, as a restarted actor is. A retry succeeds only where the store
already holds exactly what the write asked for. Pure logic over fakes: the frontend's removals
answer with what was there before the call (``ClusterRegistry`` / ``ClusterVehicles``), and its
retry loop (``IndexDirectory.write``) marks retries, gives up after ``index_wait_s``. The real
thing, with Ray and SIGKILL: ``tests/integration/test_cluster_faults.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray.exceptions as rex

from cluster.distributed import calls, directory
from cluster.distributed.engine import ClusterRegistry, ClusterVehicles
from cluster.distributed.idempotent import same_enrolment
from cluster.distributed.index import CommunityIndex
from indexer.crypto import KeyRing
from indexer.types import Person, Role, Vehicle, VehicleMatch
from smartgate.config import ClusterConfig, PrivacyConfig
from smartgate.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)

DIM = 16
COMMUNITY = "c1"


def _unit(rows: int, seed: int) -> np.ndarray:
    """``rows`` random L2-normalised float32 vectors ``(rows, DIM)``."""
    v = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class Site:
    """One community's store, opened as an index actor opens it (and reopened: a restart)."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.privacy = PrivacyConfig(key_file=tmp_path / "keys" / "data.key")
        self.index = CommunityIndex(self.data_dir, COMMUNITY, DIM, self.privacy, create=True)

    def restart(self) -> CommunityIndex:
        self.index.close()
        self.index = CommunityIndex(self.data_dir, COMMUNITY, DIM, self.privacy)
        return self.index


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.index.close()


def _enroll(index: CommunityIndex, emb: np.ndarray, retry: bool, **kw: Any) -> Person:
    args: dict[str, Any] = {
        "name": "Li Lei",
        "role": "visitor",
        "expires_at": 1_900_000_000.5,
        "replace": False,
    }
    args.update(kw)
    return index.enroll(
        "p1",
        emb,
        args["name"],
        args["role"],
        args["expires_at"],
        args["replace"],
        0.9,
        retry=retry,
    )


def test_retried_enrolment_that_committed_returns_the_person(site: Site) -> None:
    emb = _unit(3, 0)
    first = _enroll(site.index, emb, retry=False)  # committed; its answer was lost
    index = site.restart()
    again = _enroll(index, emb.copy(), retry=True)
    assert again == first
    assert again.template_count == 3
    assert index.info()["templates"] == 3  # nothing added twice
    assert np.array_equal(index.person_embeddings("p1"), emb)
    match = index.match(emb[:1], 0.5, 0.0, 5, [], 1.0)[0][0]
    assert match.person is not None and match.person.person_id == "p1"


def test_retried_enrolment_that_never_ran_enrols(site: Site) -> None:
    person = _enroll(site.index, _unit(2, 1), retry=True)
    assert person.template_count == 2 and site.index.info()["templates"] == 2


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Han Meimei"},
        {"role": "resident", "expires_at": None},
        {"expires_at": 1_900_000_001.5},
        {"emb": "one bit"},
        {"emb": "fewer"},
        {"emb": "more"},
        {"emb": "reordered"},
    ],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)
def test_retried_enrolment_meeting_another_enrolment_still_conflicts(
    site: Site, change: dict[str, Any]
) -> None:
    emb = _unit(3, 2)
    _enroll(site.index, emb, retry=False)
    index = site.restart()
    other = emb.copy()
    kind = change.pop("emb", None)
    if kind == "one bit":  # still a unit vector: differs only in the last bit of one value
        other[1, 4] = np.nextafter(other[1, 4], np.float32(2.0))
    elif kind == "fewer":
        other = emb[:2].copy()
    elif kind == "more":
        other = np.concatenate([emb, _unit(1, 3)])
    elif kind == "reordered":
        other = emb[::-1].copy()
    with pytest.raises(AlreadyExistsError):
        _enroll(index, other, retry=True, **change)
    assert np.array_equal(index.person_embeddings("p1"), emb)  # untouched
    assert index.info()["templates"] == 3


def test_enrolment_without_retry_still_conflicts_on_the_same_content(site: Site) -> None:
    emb = _unit(2, 4)
    _enroll(site.index, emb, retry=False)
    with pytest.raises(AlreadyExistsError):
        _enroll(site.index, emb, retry=False)


def test_retried_replace_is_idempotent(site: Site) -> None:
    _enroll(site.index, _unit(2, 5), retry=False)
    new = _unit(4, 6)
    first = _enroll(site.index, new, retry=False, replace=True, name="Han Meimei")
    index = site.restart()
    again = _enroll(index, new, retry=True, replace=True, name="Han Meimei")
    assert (again.key, again.created_at, again.name, again.template_count) == (
        first.key,
        first.created_at,
        "Han Meimei",
        4,
    )
    assert index.info()["templates"] == 4  # swapped again, not added
    assert np.array_equal(index.person_embeddings("p1"), new)


def test_retried_remove_of_a_person_already_gone_succeeds(site: Site) -> None:
    _enroll(site.index, _unit(3, 7), retry=False)
    assert site.index.remove("p1") == 3  # committed; its answer was lost
    index = site.restart()
    assert index.remove("p1", retry=True) is None  # gone: the frontend answers 3
    with pytest.raises(NotFoundError):
        index.remove("p1")  # not a retry: as ever
    assert index.info()["templates"] == 0


def test_retried_remove_that_never_ran_removes(site: Site) -> None:
    _enroll(site.index, _unit(2, 8), retry=False)
    assert site.index.remove("p1", retry=True) == 2


def test_retried_vehicle_writes(site: Site) -> None:
    car = site.index.add_vehicle("皖A·0N718", "visitor", "unit 3", 1_900_000_000.0, False)
    index = site.restart()
    assert (
        index.add_vehicle("皖a0n718", "visitor", "unit 3", 1_900_000_000.0, False, retry=True)
        == car
    )
    changed: list[tuple[Role, str, float | None]] = [
        ("visitor", "unit 4", 1_900_000_000.0),
        ("visitor", "unit 3", 1_900_000_001.0),
        ("resident", "unit 3", None),
    ]
    for role, owner, expires in changed:
        with pytest.raises(AlreadyExistsError):
            index.add_vehicle("皖A0N718", role, owner, expires, False, retry=True)
    with pytest.raises(AlreadyExistsError):
        index.add_vehicle("皖A0N718", "visitor", "unit 3", 1_900_000_000.0, False)
    # replace: a retry leaves the one registration as asked
    moved = index.add_vehicle("皖A0N718", "resident", "unit 9", None, True)
    assert index.add_vehicle("皖A0N718", "resident", "unit 9", None, True, retry=True) == moved
    assert index.remove_vehicle("皖A0N718") == moved
    index = site.restart()
    assert index.remove_vehicle("皖A0N718", retry=True) is None
    with pytest.raises(NotFoundError):
        index.remove_vehicle("皖A0N718")
    assert index.list_vehicles(None, 10, None) == []


def test_retries_still_refuse_bad_input(site: Site) -> None:
    with pytest.raises(InvalidInputError):
        _enroll(site.index, _unit(2, 9) * 2.0, retry=True)  # not normalised
    with pytest.raises(InvalidInputError):
        site.index.add_vehicle("A" * 40, "resident", "", None, False, retry=True)


def test_same_enrolment_compares_float32_bits() -> None:
    emb = _unit(2, 10)
    person = Person(1, COMMUNITY, "p1", "n", "resident", None, 0.0, 2)
    assert same_enrolment(person, emb.copy(), emb, "n", "resident", None, DIM)
    assert not same_enrolment(person, emb.astype(np.float64), emb, "n", "resident", None, DIM)
    assert not same_enrolment(person, emb, emb, "n", "resident", 5.0, DIM)


# -- the frontend's removals (pure logic over a fake directory) --------------------------------


class FakeDirectory:
    """Answers reads from ``reads`` and writes with ``written`` (None: a retry found it gone)."""

    def __init__(self, reads: dict[str, Any], written: Any) -> None:
        self.reads, self.written = reads, written
        self.calls: list[str] = []

    def read(self, community: str, method: str, *args: Any) -> Any:
        self.calls.append(method)
        found = self.reads[method]
        if isinstance(found, Exception):
            raise found
        return found

    def write(self, community: str, method: str, *args: Any, create: bool = False) -> Any:
        self.calls.append(method)
        return self.written


def test_frontend_remove_answers_with_the_count_read_before(tmp_path: Path) -> None:
    keys = KeyRing.from_config(PrivacyConfig(key_file=tmp_path / "data.key"))
    d = FakeDirectory({"person_embeddings": _unit(3, 11)}, None)
    assert ClusterRegistry(d, keys).remove(COMMUNITY, "p1") == 3  # type: ignore[arg-type]
    assert d.calls == ["person_embeddings", "remove"]
    d = FakeDirectory({"person_embeddings": _unit(3, 11)}, 3)
    assert ClusterRegistry(d, keys).remove(COMMUNITY, "p1") == 3  # type: ignore[arg-type]
    d = FakeDirectory({"person_embeddings": NotFoundError("no p1")}, 0)
    with pytest.raises(NotFoundError):
        ClusterRegistry(d, keys).remove(COMMUNITY, "p1")  # type: ignore[arg-type]
    assert d.calls == ["person_embeddings"]  # nothing sent


def test_frontend_remove_vehicle_answers_with_the_vehicle_read_before() -> None:
    car = Vehicle(7, COMMUNITY, "皖A0N718", "resident", "u", None, 1.0)
    d = FakeDirectory({"search_plates": [VehicleMatch(car, 0.0, False)]}, None)
    assert ClusterVehicles(d).remove(COMMUNITY, "皖A0N718") == car  # type: ignore[arg-type]
    d = FakeDirectory({"search_plates": []}, None)  # not there before; the retry found none
    with pytest.raises(NotFoundError):
        ClusterVehicles(d).remove(COMMUNITY, "皖A0N718")  # type: ignore[arg-type]
    d = FakeDirectory({"search_plates": [VehicleMatch(car, 0.0, False)]}, car)
    assert ClusterVehicles(d).remove(COMMUNITY, "皖A0N718") == car  # type: ignore[arg-type]


# -- the frontend's retry loop (IndexDirectory._changing over a fake actor, no Ray) ------------


class FakeActor:
    """An actor handle whose ``enroll`` answers from ``script``: an exception is raised by the
    ``ray.get`` of that call (a lost actor), anything else is the answer."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.sent: list[bool] = []  # the retry flag of each call
        self.enroll = self

    def remote(self, *args: Any, retry: bool) -> Any:
        self.sent.append(retry)
        return self.script.pop(0)


def _directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, actor: FakeActor, wait: float
) -> directory.IndexDirectory:
    def get(ref: Any, timeout: float) -> Any:
        if isinstance(ref, BaseException):
            raise ref
        return ref

    monkeypatch.setattr(calls, "get", get)
    monkeypatch.setattr(directory, "RETRY_PAUSE_S", 0.01)
    d = directory.IndexDirectory(
        ClusterConfig(index_wait_s=wait), tmp_path, DIM, PrivacyConfig(key_file=tmp_path / "k")
    )
    monkeypatch.setattr(d, "handle", lambda community, create=False, timeout=None: actor)
    return d


def test_a_lost_write_is_retried_marked_as_a_retry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    actor = FakeActor([rex.ActorDiedError(), rex.ActorUnavailableError("gone", None), "done"])
    d = _directory(monkeypatch, tmp_path, actor, wait=5.0)
    assert d.write(COMMUNITY, "enroll", "p1") == "done"
    assert actor.sent == [False, True, True]
    assert (d.stats.lost, d.stats.retried, d.stats.failed, d.stats.in_flight) == (1, 2, 0, 0)


def test_a_write_whose_actor_does_not_come_back_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    actor = FakeActor([rex.ActorDiedError() for _ in range(1000)])
    d = _directory(monkeypatch, tmp_path, actor, wait=0.2)
    with pytest.raises(UnavailableError, match="may or may not have been applied"):
        d.write(COMMUNITY, "enroll", "p1")
    assert actor.sent[0] is False and all(actor.sent[1:]) and len(actor.sent) >= 3
    assert (d.stats.lost, d.stats.failed, d.stats.in_flight) == (1, 1, 0)


def test_a_write_that_fails_in_the_actor_is_not_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    actor = FakeActor([AlreadyExistsError("p1 exists")])
    d = _directory(monkeypatch, tmp_path, actor, wait=5.0)
    with pytest.raises(AlreadyExistsError):
        d.write(COMMUNITY, "enroll", "p1")
    assert actor.sent == [False] and d.stats.lost == 0
