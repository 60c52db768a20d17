"""The gate simulator (``smartgate bench``) on a short load: real node, real gRPC, real photos."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compute_limit, gates
from smartgate.config import ModelsConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
GATE_KEYS = {"gate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "sent", "answered", "shed"}


def _site(path: Path, p99_ms: float, duration: float = 2.0) -> Path:
    path.write_text(
        f"duration = {duration}\nwarmup = 0.5\n\n"
        f'[[gate]]\nname = "door"\nlane = "pedestrian"\nfps = 2\np99_ms = {p99_ms}\n'
        "max_shed_pct = 50\n\n"
        f'[[gate]]\nname = "barrier"\nlane = "vehicle"\nfps = 1\np99_ms = {p99_ms}\n'
        "max_shed_pct = 50\n",
        encoding="utf-8",
    )
    return path


def test_short_load_writes_json_markdown_and_plots(server, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "bench"
    argv = ["--server", server.address, "--server-pid", str(os.getpid())]
    argv += ["--gates", "2", "--vehicle-gates", "1", "--fps", "2", "--duration", "2.5"]
    argv += ["--warmup", "0.5", "--sweep", "0.5,1", "--passages", "2", "--plots", str(out)]
    assert gates.main([*argv, "--quiet"]) == 0

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert len(report["gates"]) == 2
    assert [g["lane"] for g in report["gates"]] == ["pedestrian", "vehicle"]
    for g in report["gates"]:
        assert set(g) >= GATE_KEYS | {"client_p99_ms", "errors", "stream_error"}
        assert g["sent"] >= 4 and g["answered"] > 0 and g["stream_error"] is None
        assert g["answered"] + g["shed"] + g["errors"] + g["missing"] == g["sent"]
        assert 0 < g["p50_ms"] <= g["p95_ms"] <= g["p99_ms"] <= g["max_ms"]
        # The camera sees at least what the server spent.
        assert g["client_p50_ms"] >= g["p50_ms"]
        assert sum(g["frame_actions"].values()) == g["answered"]
    stages = report["node"]["stages_mean_ms_by_lane"]
    assert stages["pedestrian"]["detect"] > 0 and stages["vehicle"]["plates"] > 0
    node = report["node"]
    assert {"throughput_fps", "offered_fps", "shed_fps", "cpu", "p99_ms"} <= set(node)
    assert node["offered_fps"] == 4.0 and node["throughput_fps"] > 0
    assert node["cpu"]["process_cores"] > 0 and node["stream_errors"] == 0
    # The test's server runs in this process: the gates' client threads are taken out of it.
    assert report["node_process"] == {
        "pid": os.getpid(),
        "bench_pid": os.getpid(),
        "own_process": False,
        "started_by_bench": False,
    }
    cpu = node["cpu"]
    assert cpu["client_cores"] is not None and cpu["load_generator_cores"] == cpu["client_cores"]
    assert cpu["node_cores"] == pytest.approx(cpu["process_cores"] - cpu["client_cores"], abs=2e-3)
    assert [s["factor"] for s in report["sweep"]] == [0.5, 1.0]
    assert report["main"]["label"] == "1x"

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| door-01 | pedestrian |" in markdown and "| barrier-02 | vehicle |" in markdown
    assert "offered load:" in markdown and markdown in capsys.readouterr().out
    for name in ("latency_cdf.png", "load.png", "stages.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert sorted(Path(p).name for p in report["files"]["plots"]) == [
        "latency_cdf.png",
        "load.png",
        "stages.png",
    ]


def test_site_acceptance_passes_on_a_generous_target(server, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    site = _site(tmp_path / "site.toml", p99_ms=30_000)
    out = tmp_path / "out"
    argv = ["--server", server.address, "--site", str(site), "--plots", str(out), "--no-plots"]
    assert gates.main([*argv, "--passages", "2", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "site: PASS (2/2 gates)" in text
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["site"]["result"] == "PASS"
    assert [r["result"] for r in report["site"]["gates"]] == ["PASS", "PASS"]


def test_site_acceptance_fails_an_impossible_target_with_exit_1(
    tmp_path: Path, models_dir: Path
) -> None:
    """Through the real command, with its own embedded node."""
    site = _site(tmp_path / "site.toml", p99_ms=0.001, duration=1.5)
    env = {**os.environ, "SMARTGATE_MODELS__CACHE_DIR": str(models_dir)}
    command = [sys.executable, "-m", "cluster.cli", "--log-level", "WARNING", "bench"]
    command += ["--site", str(site), "--plots", str(tmp_path / "out"), "--passages", "2"]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "site: FAIL (2 of 2 gates failed)" in out.stdout
    assert "server p99" in out.stdout and "> 0.001 ms" in out.stdout
    assert "starting an embedded node in its own process" in out.stderr  # progress is shown
    assert (tmp_path / "out" / "latency_cdf.png").read_bytes().startswith(PNG)
    # The node ran as its own process, not the bench's (nor this test's), and is gone.
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    proc = report["node_process"]
    assert proc["own_process"] is True and proc["started_by_bench"] is True
    assert proc["pid"] not in (proc["bench_pid"], os.getpid(), None)
    assert not Path(f"/proc/{proc['pid']}").exists()  # stopped with the bench
    assert f"embedded node in its own process (`smartgate serve`, pid {proc['pid']})" in out.stdout
    cpu = report["node"]["cpu"]
    assert cpu["node_cores"] > 0 and cpu["node_cores"] == cpu["process_cores"]
    assert cpu["client_cores"] is None and cpu["load_generator_cores"] > 0
    assert cpu["other_processes_cores"] is not None  # everything but the node, the bench too
    assert "(of which the load generator " in out.stdout


def test_a_node_that_does_not_start_is_an_error_with_its_output(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bench's --config goes to the started node, whose last output names the problem."""
    config = tmp_path / "node.toml"
    config.write_text('[models]\ndetector = "no-such-detector"\n', encoding="utf-8")
    argv = ["--config", str(config), "--models-dir", str(models_dir), "--gates", "1"]
    argv += ["--duration", "1", "--passages", "1", "--plots", str(tmp_path), "--no-plots"]
    assert gates.main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error: smartgate serve exited with code 1" in err
    assert f"loading models from {models_dir}" in err and "'no-such-detector'" in err
    assert not (tmp_path / "report.json").exists()


def test_example_site_file_and_bad_site_files(tmp_path: Path) -> None:
    site = gates.load_site(ROOT / "benchmarks" / "site_example.toml")
    assert {g.lane for g in site.gates} == {"pedestrian", "vehicle", "both"}
    assert all(g.p99_ms and g.fps > 0 for g in site.gates)
    bad = tmp_path / "bad.toml"
    bad.write_text('[[gate]]\nname = "x"\nlane = "tram"\nfps = 1\np99_ms = 100\n')
    with pytest.raises(ValueError, match="lane must be one of"):
        gates.load_site(bad)
    bad.write_text('[[gate]]\nname = "x"\nlane = "vehicle"\nfps = 1\n')
    with pytest.raises(ValueError, match="missing 'p99_ms'"):
        gates.load_site(bad)
    assert gates.main(["--site", str(bad)]) == 2


def test_cpu_split_with_the_node_in_its_own_process_and_in_this_one() -> None:
    """Pure: CPU seconds over 10 s of wall on 2 cores."""
    own = gates._cpu_split(
        wall=10.0, ncpu=2, busy=18.0, node_process=14.0, generator=3.0, client_threads=None
    )
    assert own["node_cores"] == own["process_cores"] == 1.4 and own["client_cores"] is None
    assert own["machine_busy_pct"] == 90.0 and own["node_pct"] == 70.0
    # Other processes: all but the node, so the load generator (0.3) and 0.1 of strangers.
    assert own["other_processes_cores"] == 0.4 and own["load_generator_cores"] == 0.3
    assert gates._contention_warning(own) == []  # 0.1 foreign cores: no warning
    text = gates._other_text(own)
    assert text == ", other processes 0.40 cores (of which the load generator 0.30)"
    busy = gates._cpu_split(
        wall=10.0, ncpu=2, busy=19.0, node_process=12.0, generator=3.0, client_threads=None
    )
    assert "used 0.40 of the 2 cores" in "".join(gates._contention_warning(busy))

    inproc = gates._cpu_split(
        wall=10.0, ncpu=2, busy=18.0, node_process=17.0, generator=None, client_threads=3.0
    )
    assert inproc["process_cores"] == 1.7 and inproc["client_cores"] == 0.3
    assert inproc["node_cores"] == 1.4 and inproc["load_generator_cores"] == 0.3
    assert inproc["other_processes_cores"] == 0.1
    assert gates._other_text(inproc) == ", other processes 0.10 cores"
    unknown = gates._cpu_split(
        wall=10.0, ncpu=2, busy=None, node_process=None, generator=3.0, client_threads=None
    )
    assert set(unknown) == {"cores", "wall_s", "load_generator_cores"}
    assert gates._other_text(unknown) == "" and gates._contention_warning(unknown) == []


def test_compute_limit_measures_the_models(models_dir: Path) -> None:
    settings = (compute_limit.SETTINGS[0], compute_limit.SETTINGS[3])
    report = compute_limit.run(models_dir, seconds=0.3, settings=settings, progress=False)
    assert [s["label"] for s in report["settings"]] == [s.label for s in settings]
    assert all(s["fps"] > 0 for s in report["settings"])
    assert report["best"]["fps"] == max(s["fps"] for s in report["settings"])
    # The service's default models (the ceiling is the node's own models alone).
    models = ModelsConfig()
    assert {c["model"] for c in report["per_call"]} == {models.detector, models.embedder}
    assert "ceiling:" in compute_limit.markdown(report)


def test_the_ceiling_is_a_figure_or_measured_in_the_run(models_dir: Path) -> None:
    parser = gates.build_parser()
    assert parser.parse_args(["--ceiling", "130.1"]).ceiling == 130.1
    assert parser.parse_args(["--ceiling", "auto"]).ceiling == "auto"
    for bad in ("fast", "0", "-3"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--ceiling", bad])
    assert gates.main(["--ceiling", "auto", "--sweep", "1"]) == 2  # only with --sweep auto
    args = parser.parse_args(["--models-dir", str(models_dir), "--limit-seconds", "0.2", "--quiet"])
    assert gates.measure_ceiling(args) > 0
