"""Capacity model: how many nodes a county's communities need, from measured per-frame costs.

The gate harness (``smartgate bench``) measures what one frame costs on this machine; this
model scales it to a county. Every input says whether it was **measured** (and by which
command) or **assumed** (and why), and the report prints both, so a planner can replace an
assumption with a site survey or a measurement on the target hardware.

Load: each gate streams ``active_fps`` frames/s while something is in front of it; at the
busiest hour a gate is active ``peak_duty`` of the time. Compute: a CPU node of ``node_cores``
cores does ``1000 / face_frame_core_ms`` one-face frames/s per core (vehicle frames
likewise), derated to ``target_utilisation`` so latency stays low (the harness's 70 % run
is the evidence that p99 holds there). GPU nodes (Triton) take the model work off the CPU:
``gpu_frames_per_s`` per GPU was measured on one H200 with PyTorch (``benchmarks.gpu_models``:
fp16 CUDA graphs via onnx2torch, both models at batch 64), and the CPU cost that stays
(decode, align, tracking, gRPC) is measured as the per-frame cost minus the model time.
Index memory: bytes per template of each FAISS kind (exact: float32 vectors; PQ: 4-bit codes
plus the float32 vectors kept for exact re-scoring), ``templates_per_person`` each.

Run: ``python -m benchmarks.capacity [--report reports/bench-…/report.json] [--communities 500]``
(``--report`` takes the measured per-frame cost from a harness run at saturation).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

DIM = 512  # fr_feature embedding width


@dataclass(frozen=True)
class Input:
    """One figure of the model and where it comes from (``measured`` or ``assumed``)."""

    value: float
    source: str
    measured: bool = False


@dataclass(frozen=True)
class CommunityProfile:
    """A kind of community: how many of the county's communities are like it and its gates."""

    name: str
    share: float  # of the county's communities
    pedestrian_gates: int
    vehicle_gates: int
    residents: int


@dataclass(frozen=True)
class Model:
    communities: int = 500
    profiles: tuple[CommunityProfile, ...] = (
        CommunityProfile("small (old compound)", 0.5, 2, 1, 800),
        CommunityProfile("medium", 0.4, 6, 2, 3_000),
        CommunityProfile("large (new estate)", 0.1, 24, 6, 12_000),
    )
    active_fps: Input = Input(4.0, "harness default camera rate while a person is in view")
    peak_duty: Input = Input(0.35, "share of the busiest hour a gate has someone in front of it")
    face_frame_core_ms: Input = Input(
        16.9,
        "2 cores / saturation fps (median 118.0 of four runs of `smartgate bench --workload"
        " one-face --sweep auto --ceiling auto`, 30 Nov 2026), default models, region search,"
        " a decided face re-embedded every 8th frame",
        measured=True,
    )
    vehicle_frame_core_ms: Input = Input(
        33.0,
        "detection + one plate + full decode, `python -m benchmarks.plate_accuracy`",
        measured=True,
    )
    model_core_ms: Input = Input(
        9.8,
        "model stages a one-face frame at 70 % of saturation (detect 2.8 + detect_region 3.3"
        " + embed 2.6 + liveness 1.1 ms: whole-frame searches every 4th frame, carried"
        " embeddings);"
        " the models alone, one detection + one embedding a frame: 15.4 (`smartgate bench"
        " --limit`, 2 cores / 130)",
        measured=True,
    )
    node_cores: Input = Input(32.0, "a common 2-socket community/county server")
    target_utilisation: Input = Input(
        0.7, "chosen: the harness's 70 %-of-saturation run shows every gate's p99 in target there"
    )
    gpu_frames_per_s: Input = Input(
        12_855.0,
        "one-face frames/s (RetinaFace-mnet0.25 640x360 + one fr-feature 112x112 embedding) on"
        " one H200, PyTorch 2.11 fp16 CUDA graphs, channels-last, via onnx2torch, both models at"
        " batch 64 (`python -m benchmarks.gpu_models`, 29 Nov 2026): a batch a county's ~5,000"
        " frames/s fills in ~13 ms; at the best batches (detector 512, embedder 256) 15,678, with"
        " torch.compile ~31,700; model time only: JPEG decode, resize and alignment stay on the"
        " CPU, the frame's copy to the GPU (~18 µs) is not in it; vehicle frames are counted at"
        " the same cost (the plate models were not measured); Triton's overhead or TensorRT's"
        " kernels would give other figures, and a T4-class card a fraction of it",
        measured=True,
    )
    templates_per_person: Input = Input(3.0, "enrolment photos kept per person")
    exact_below: Input = Input(
        20_000, "IndexPolicy.exact_below (indexer/face_index.py)", measured=True
    )
    pq_code_bytes: Input = Input(
        64.0, "IndexPolicy.pq_m = 128 sub-quantizers of 4 bits", measured=True
    )

    def frames_per_s(self, profile: CommunityProfile) -> tuple[float, float]:
        """Peak face and vehicle frames/s of one community of ``profile``."""
        per_gate = self.active_fps.value * self.peak_duty.value
        return profile.pedestrian_gates * per_gate, profile.vehicle_gates * per_gate

    def index_bytes(self, profile: CommunityProfile) -> float:
        """Memory of one community's face index (bytes)."""
        templates = profile.residents * self.templates_per_person.value
        per_template = DIM * 4.0  # float32 vectors: the exact index, or PQ's re-scoring store
        if templates >= self.exact_below.value:
            per_template += self.pq_code_bytes.value
        return templates * (per_template + 8 + 1 / 8)  # + template id and live bit


@dataclass
class Plan:
    """The model's answer for the county."""

    communities: dict[str, int] = field(default_factory=dict)
    face_fps: float = 0.0
    vehicle_fps: float = 0.0
    cpu_cores: float = 0.0
    cpu_nodes: int = 0
    gpus: int = 0
    cpu_cores_with_gpus: float = 0.0
    cpu_nodes_with_gpus: int = 0
    index_gb: float = 0.0
    largest_index_mb: float = 0.0


def plan(model: Model) -> Plan:
    """Size the county: cores and nodes on CPU only, and with Triton GPUs for the models."""
    out = Plan()
    total_share = sum(p.share for p in model.profiles)
    util = model.target_utilisation.value
    cores = model.node_cores.value
    for p in model.profiles:
        n = round(model.communities * p.share / total_share)
        out.communities[p.name] = n
        face, vehicle = model.frames_per_s(p)
        out.face_fps += n * face
        out.vehicle_fps += n * vehicle
        index = model.index_bytes(p)
        out.index_gb += n * index / 1e9
        out.largest_index_mb = max(out.largest_index_mb, index / 1e6)
    face_ms, vehicle_ms = model.face_frame_core_ms.value, model.vehicle_frame_core_ms.value
    busy = (out.face_fps * face_ms + out.vehicle_fps * vehicle_ms) / 1000.0
    out.cpu_cores = busy / util
    out.cpu_nodes = math.ceil(out.cpu_cores / cores)
    # With Triton the model time moves to the GPUs; the rest of each frame stays on CPU.
    model_share = model.model_core_ms.value / face_ms
    gpu_load = (out.face_fps + out.vehicle_fps) / model.gpu_frames_per_s.value
    out.gpus = math.ceil(gpu_load / util)
    out.cpu_cores_with_gpus = busy * (1.0 - model_share) / util
    out.cpu_nodes_with_gpus = math.ceil(out.cpu_cores_with_gpus / cores)
    return out


def with_report(model: Model, report: dict[str, Any]) -> Model:
    """Take the measured per-frame cost from a harness report run with ``--sweep auto``."""
    saturation = report.get("saturation") or {}
    fps = saturation.get("fps") or saturation.get("throughput_fps")
    cpus = (report.get("machine") or {}).get("cpus")
    if not fps or not cpus:
        raise ValueError("the report has no saturation figure: run the harness with --sweep auto")
    ms = 1000.0 * float(cpus) / float(fps)
    source = f"{cpus} cores / {float(fps):.1f} frames/s at saturation (harness report)"
    return replace(model, face_frame_core_ms=Input(ms, source, measured=True))


def markdown(model: Model, result: Plan) -> str:
    lines = [
        f"## Capacity model: a county of {model.communities} communities",
        "",
        "| input | value | source |",
        "|---|---|---|",
    ]
    for name, value in asdict(model).items():
        if isinstance(value, dict) and "source" in value:
            kind = "measured/configured" if value["measured"] else "assumed"
            lines.append(f"| {name} | {value['value']:g} | {kind}: {value['source']} |")
    lines += ["", "| community kind | count | pedestrian gates | vehicle gates | residents |"]
    lines.append("|---|---|---|---|---|")
    for p in model.profiles:
        lines.append(
            f"| {p.name} | {result.communities[p.name]} | {p.pedestrian_gates} | "
            f"{p.vehicle_gates} | {p.residents} |"
        )
    cores = model.node_cores.value
    lines += [
        "",
        f"- peak load: {result.face_fps:,.0f} face frames/s + {result.vehicle_fps:,.0f} vehicle "
        "frames/s",
        f"- CPU only: {result.cpu_cores:,.0f} cores at {model.target_utilisation.value:.0%} "
        f"load = **{result.cpu_nodes} nodes** of {cores:g} cores",
        f"- with Triton: **{result.gpus} GPU{'' if result.gpus == 1 else 's'}** for the models"
        " (no spare for failover counted) + "
        f"{result.cpu_cores_with_gpus:,.0f} CPU cores = {result.cpu_nodes_with_gpus} CPU nodes"
        " for decode, tracking and gRPC",
        f"- face indexes: {result.index_gb:,.1f} GB in all; the largest community "
        f"{result.largest_index_mb:,.0f} MB (one index actor each, spread over the nodes)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity", description=__doc__)
    parser.add_argument("--report", type=Path, help="harness report.json (--sweep auto run)")
    parser.add_argument("--communities", type=int, default=500)
    parser.add_argument("--node-cores", type=float, help="cores per CPU node")
    parser.add_argument("--json", type=Path, help="write the plan as JSON too")
    args = parser.parse_args(argv)
    model = Model(communities=args.communities)
    if args.node_cores:
        model = replace(model, node_cores=Input(args.node_cores, "given on the command line"))
    if args.report:
        model = with_report(model, json.loads(args.report.read_text()))
    result = plan(model)
    sys.stdout.write(markdown(model, result))
    if args.json:
        args.json.write_text(json.dumps({"model": asdict(model), "plan": asdict(result)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
