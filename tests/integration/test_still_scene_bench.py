"""benchmarks.still_scene on a short run: an idle gate's still scene is searched whole only
when its sketch is due a refresh, and always without the sketch."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.still_scene import run, scene_frames
from smartgate.config import Config


def test_an_idle_gate_is_searched_whole_about_once_a_second(
    base_config: Config,
    face_analyzer,  # type: ignore[no-untyped-def]
) -> None:
    frames = scene_frames(person=False)[:4]
    on = run(base_config, face_analyzer, frames, n=30, fps=15.0)
    off_config = replace(base_config, tracking=replace(base_config.tracking, still_scene_diff=0.0))
    off = run(off_config, face_analyzer, frames, n=30, fps=15.0)
    # 30 frames at 15 fps: the first frame, then one refresh when the sketch is over 1 s old.
    assert on["whole_share"] == 2 / 30
    assert off["whole_share"] == 1.0
    assert on["cpu_ms_per_frame"] > 0 and off["cpu_ms_per_frame"] > 0
