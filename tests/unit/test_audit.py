"""The audit log (``cluster.audit.log``) on a real SQLite file: records, the hash chain, and
``verify`` (and ``smartgate audit verify``) finding a changed field, a removed record and
reordered records; the servicer hook (``cluster.audit.rpc``) with its reason rule."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.audit.log import DB_FILENAME, GENESIS, AuditLog, read_records, record_hash, verify
from cluster.audit.rpc import audited
from cluster.cli import main
from cluster.security.principal import Principal, bound
from smartgate.errors import ConfigError, InvalidInputError, NotFoundError
from smartgate.v1 import registry_pb2, search_pb2


def _fill(data: Path, n: int = 5) -> None:
    log = AuditLog(data)
    try:
        for i in range(n):
            log.append(
                actor=f"token:ops-{i}",
                method="SearchFace",
                communities=["c2", "c1"] if i % 2 else ["c1"],
                target="",
                reason=f"case {i}",
                now=1000.0 + i,
            )
    finally:
        log.close()


def _raw(data: Path) -> sqlite3.Connection:
    """Direct access, triggers dropped: what an attacker with the file can do."""
    con = sqlite3.connect(data / DB_FILENAME, isolation_level=None)
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("DROP TRIGGER audit_no_delete")
    return con


def test_records_are_chained(tmp_path: Path) -> None:
    _fill(tmp_path)
    records = read_records(tmp_path)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert records[1].communities == ("c1", "c2") and records[1].reason == "case 1"
    first = records[0]
    assert first.hash == record_hash(
        1, 1000.0, "token:ops-0", "SearchFace", '["c1"]', "", "case 0", "OK", "", GENESIS
    )
    result = verify(tmp_path)
    assert result.ok and result.records == 5 and result.head_hash == records[-1].hash
    assert AuditLog(tmp_path).append(actor="a", method="m", communities=[]).communities == ("*",)


def test_the_database_refuses_updates_and_deletes(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    con = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE audit SET reason = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM audit WHERE seq = 2")
    con.close()


@pytest.mark.parametrize(
    ("tamper", "broken", "why"),
    [
        ("UPDATE audit SET reason = 'nothing to see' WHERE seq = 3", 3, "altered"),
        ("UPDATE audit SET actor = 'local:local' WHERE seq = 1", 1, "altered"),
        ("UPDATE audit SET time = time + 1 WHERE seq = 4", 4, "altered"),
        ("UPDATE audit SET communities = '[\"c1\"]' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM audit WHERE seq = 3", 3, "removed"),
        ("DELETE FROM audit WHERE seq = 1", 1, "removed"),
    ],
)
def test_verify_finds_the_first_broken_record(
    tmp_path: Path, tamper: str, broken: int, why: str
) -> None:
    _fill(tmp_path)
    con = _raw(tmp_path)
    con.execute(tamper)
    con.close()
    result = verify(tmp_path)
    assert not result.ok and result.broken_seq == broken and why in (result.problem or "")
    assert result.records == broken - 1


def test_verify_finds_reordered_and_renumbered_records(tmp_path: Path) -> None:
    _fill(tmp_path)
    con = _raw(tmp_path)
    # Swap records 2 and 4 (all their fields, hashes included) under their seqs.
    con.execute("UPDATE audit SET seq = -2 WHERE seq = 2")
    con.execute("UPDATE audit SET seq = 2 WHERE seq = 4")
    con.execute("UPDATE audit SET seq = 4 WHERE seq = -2")
    con.close()
    result = verify(tmp_path)
    assert not result.ok and result.broken_seq == 2

    _fill(tmp_path / "b")
    con = _raw(tmp_path / "b")
    # Delete record 3 and renumber the rest to hide the gap.
    con.execute("DELETE FROM audit WHERE seq = 3")
    con.execute("UPDATE audit SET seq = seq - 1 WHERE seq > 3")
    con.close()
    result = verify(tmp_path / "b")
    assert not result.ok and result.broken_seq == 3 and "prev_hash" in (result.problem or "")


def test_smartgate_audit_verify_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(tmp_path)
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 0
    assert "5 records" in capsys.readouterr().out
    assert main(["audit", "list", "--data-dir", str(tmp_path), "--after", "3"]) == 0
    assert capsys.readouterr().out.count('"method": "SearchFace"') == 2
    con = _raw(tmp_path)
    con.execute("UPDATE audit SET target = 'person:x' WHERE seq = 2")
    con.close()
    assert main(["audit", "verify", "--data-dir", str(tmp_path)]) == 1
    assert "BROKEN at record 2" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no audit log"):
        verify(tmp_path / "none")


# -- the servicer hook -------------------------------------------------------------------------


class _Servicer:
    """Just what ``audited`` needs of a servicer: ``node.audit``."""

    def __init__(self, log: AuditLog | None) -> None:
        self.node = SimpleNamespace(audit=log)

    @audited("SearchFace")
    def SearchFace(self, request: Any, context: Any) -> str:  # noqa: N802
        return "hits"

    @audited("RemovePerson")
    def RemovePerson(self, request: Any, context: Any) -> str:  # noqa: N802
        raise NotFoundError("no such person")


def test_hook_records_caller_communities_reason_and_outcome(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    servicer = _Servicer(log)
    ops = Principal(subject="ops-1", kind="token")
    with bound(ops):
        assert servicer.SearchFace(search_pb2.SearchFaceRequest(communities=["c1"]), None)
        with pytest.raises(InvalidInputError, match="needs a reason"):
            servicer.SearchFace(search_pb2.SearchFaceRequest(communities=["c1", "c2"]), None)
        servicer.SearchFace(
            search_pb2.SearchFaceRequest(communities=["c1", "c2"], reason="case 42"), None
        )
    with pytest.raises(NotFoundError):
        servicer.RemovePerson(
            registry_pb2.RemovePersonRequest(community="c1", person_id="p9", reason="left"), None
        )
    rows = [
        (r.actor, r.method, r.communities, r.target, r.reason, r.outcome) for r in log.records()
    ]
    assert rows == [
        ("token:ops-1", "SearchFace", ("c1",), "", "", "OK"),
        ("token:ops-1", "SearchFace", ("c1", "c2"), "", "", "INVALID_ARGUMENT"),
        ("token:ops-1", "SearchFace", ("c1", "c2"), "", "case 42", "OK"),
        ("local:local", "RemovePerson", ("c1",), "person:p9", "left", "NOT_FOUND"),
    ]
    log.close()
    assert _Servicer(None).SearchFace(search_pb2.SearchFaceRequest(communities=["a", "b"]), None)
