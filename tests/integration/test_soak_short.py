"""A 20-second soak (``benchmarks/soak.py``): ``smartgate serve`` in its own process, real
1080p frames on 4 gate streams with 10 % corrupt frames, RSS sampled from ``/proc``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import soak

pytestmark = pytest.mark.integration

PNG = b"\x89PNG\r\n\x1a\n"


def test_short_soak_answers_every_corrupt_frame_and_keeps_memory_flat(
    models_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "soak"
    argv = ["--gates", "4", "--seconds", "20", "--fps", "1.5", "--corrupt", "0.1"]
    argv += ["--passages", "4", "--models-dir", str(models_dir), "--out", str(out), "--quiet"]
    code = soak.main(argv)
    report = json.loads((out / "soak.json").read_text(encoding="utf-8"))
    assert code == 0, report["problems"]
    totals = report["totals"]
    assert totals["sent"] >= 100 and totals["answered"] == totals["sent"]
    assert totals["corrupt_sent"] >= 5  # 10 % of ~120 frames, fixed seed
    assert totals["corrupt_invalid"] == totals["corrupt_sent"]
    assert totals["stream_errors"] == 0 and totals["good_errors"] == 0
    assert len(report["gates"]) == 4
    assert report["rss"]["ok"] and report["rss"]["samples_after_warmup"] >= 12
    assert report["run"]["node_exit_code"] == 0  # stopped cleanly by SIGTERM
    assert (out / "rss.png").read_bytes().startswith(PNG)
    assert "**PASS**" in (out / "soak.md").read_text(encoding="utf-8")


def test_a_node_that_does_not_start_is_an_error_with_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[capture]\nno_such_setting = 1\n", encoding="utf-8")
    argv = ["--gates", "1", "--seconds", "1", "--passages", "1", "--config", str(config)]
    assert soak.main([*argv, "--out", str(tmp_path / "soak"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error: smartgate serve exited with code 1" in err and "no_such_setting" in err
