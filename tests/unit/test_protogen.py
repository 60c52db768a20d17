"""The committed wire code matches the .proto files."""

from __future__ import annotations

from pathlib import Path

from cluster.protogen import ROOT, generate


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    for generated in generate(tmp_path):
        rel = generated.relative_to(tmp_path)
        committed = ROOT / rel
        assert committed.is_file(), f"{rel} is not committed; run `make proto`"
        assert committed.read_bytes() == generated.read_bytes(), f"{rel} is stale; run `make proto`"
