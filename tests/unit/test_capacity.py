"""benchmarks.capacity: the county sizing arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest

from benchmarks.capacity import DIM, CommunityProfile, Input, Model, main, plan, with_report


def _model() -> Model:
    return Model(
        communities=10,
        profiles=(CommunityProfile("only", 1.0, 4, 1, 10_000),),
        active_fps=Input(5.0, "t"),
        peak_duty=Input(0.5, "t"),
        face_frame_core_ms=Input(40.0, "t"),
        vehicle_frame_core_ms=Input(40.0, "t"),
        model_core_ms=Input(30.0, "t"),
        node_cores=Input(8.0, "t"),
        target_utilisation=Input(0.5, "t"),
        gpu_frames_per_s=Input(10.0, "t"),
        templates_per_person=Input(1.0, "t"),
    )


def test_cores_nodes_and_gpus_follow_from_the_load() -> None:
    result = plan(_model())
    # 10 communities × 5 gates × 5 fps × 0.5 duty = 125 frames/s; 40 ms each = 5 busy cores.
    assert result.face_fps == pytest.approx(100.0) and result.vehicle_fps == pytest.approx(25.0)
    assert result.cpu_cores == pytest.approx(10.0)  # at 50 % load
    assert result.cpu_nodes == 2
    assert result.gpus == 25  # 125 / 10 per GPU, at 50 %
    assert result.cpu_cores_with_gpus == pytest.approx(2.5)  # a quarter of each frame stays
    assert result.cpu_nodes_with_gpus == 1


def test_index_memory_counts_vectors_and_pq_codes_above_the_exact_limit() -> None:
    model = _model()
    exact = plan(model).index_gb
    assert exact == pytest.approx(10 * 10_000 * (DIM * 4 + 8 + 1 / 8) / 1e9)
    big = replace(model, templates_per_person=Input(3.0, "t"))  # 30k templates: PQ
    per = DIM * 4 + 64 + 8 + 1 / 8
    assert plan(big).largest_index_mb == pytest.approx(30_000 * per / 1e6)


def test_a_harness_report_supplies_the_measured_frame_cost() -> None:
    report = {"machine": {"cpus": 2}, "saturation": {"throughput_fps": 50.0}}
    model = with_report(_model(), report)
    assert model.face_frame_core_ms.value == pytest.approx(40.0)
    assert model.face_frame_core_ms.measured
    with pytest.raises(ValueError, match="saturation"):
        with_report(_model(), {"machine": {"cpus": 2}})


def test_the_command_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--communities", "500"]) == 0
    out = capsys.readouterr().out
    assert "nodes" in out and "GPU" in out and "assumed" in out


def test_the_gpu_figure_is_marked_measured_with_its_runtime() -> None:
    gpu = Model().gpu_frames_per_s
    assert gpu.measured
    assert "H200" in gpu.source and "PyTorch" in gpu.source and "TensorRT" in gpu.source
