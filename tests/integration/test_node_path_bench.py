"""benchmarks.node_path on a short pool: every frame is decoded and matched, whole-frame
searches alternate with region searches, and the table names each stage."""

from __future__ import annotations

from benchmarks.gates import build_pool
from benchmarks.node_path import markdown, run
from smartgate.config import Config


def test_a_short_pool_goes_through_the_node_path(
    base_config: Config,
    face_analyzer,  # type: ignore[no-untyped-def]
) -> None:
    pool = build_pool("one-face", passages=2)
    report = run(base_config, face_analyzer, pool, repeat=1)
    assert report.frames == len(pool.frames["pedestrian"])
    assert report.stages["decode"].share == 1.0 and report.stages["match"].share == 1.0
    whole, region = report.stages["detect"].share, report.stages["detect_region"].share
    assert 0.0 < whole < 1.0 and region > 0.0  # the first frame whole, then regions
    assert report.stages["embed"].share < 1.0  # a decided resident's embedding is carried
    assert report.cpu_ms_per_frame > 0 and report.observe_median_ms > 0
    assert "| detect_region |" in markdown(report)
