"""Cluster mode against embedded mode at the same offered load (the gate harness of
``benchmarks.gates``), and the recovery from a killed recognizer worker.

Runs, one after the other, in this process: the embedded node; then, on a local Ray instance,
the cluster frontend with 1 and with 2 recognizer workers. Each gets the same open-loop load
(``--gates`` pedestrian gates at ``--fps``, one-face 1080p passages) for ``--duration`` seconds
after ``--warmup``. Prints a Markdown table: throughput, its ratio to embedded mode, shed frames,
server/client p99 and each gate's client p99. With ``--kill`` the 2-worker run SIGKILLs one
worker half-way and reports the time until throughput is back to 90 % of its rate before the
kill (0.5 s buckets), and whether any stream broke. With ``--then-share 0.7`` each mode runs
again at 70 % of the throughput it reached: with ``--fps`` above saturation, that is 70 % of
each mode's own saturation (the "70 % load" of the latency target).

    python -m benchmarks.cluster_scaling --gates 4 --fps 8 --duration 20 --kill
    python -m benchmarks.cluster_scaling --gates 8 --fps 8 --workers 2 --then-share 0.7

The machine is shared and has 2 cores: the frontend, the workers and the load generator
compete for them, so run it a few times and read the ratios, not single figures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gates import (
    FramePool,
    GateSpec,
    RunResult,
    build_pool,
    prepare_community,
    run_load,
    summarize_run,
)
from smartgate.config import ClusterConfig, Config, load_config

COMMUNITY = "bench"
BUCKET_S = 0.5


@contextlib.contextmanager
def serve(config: Config, workers: int | None) -> Iterator[tuple[str, Any]]:
    """A node (embedded with ``workers`` None, else cluster mode with that many workers) and
    its gRPC server on a free port; yields (address, node)."""
    from cluster.node import Node
    from cluster.server import start_server

    with tempfile.TemporaryDirectory(prefix="smartgate-cluster-bench-") as tmp:
        cfg = replace(config, data_dir=Path(tmp))
        if workers is None:
            node = Node.open(cfg)
        else:
            from cluster.distributed.runtime import open_cluster_node

            cluster = replace(
                cfg.cluster, address="local", min_workers=workers, max_workers=workers
            )
            node = open_cluster_node(replace(cfg, cluster=cluster))
        running = start_server(node, cfg.server)
        try:
            yield running.address, node
        finally:
            running.stop(1.0)
            node.close()


def ok_times(r: RunResult) -> np.ndarray:
    """Arrival times (perf_counter) of every frame answered OK, sorted."""
    times = [g.received[(g.status == 0) & ~np.isnan(g.received)] for g in r.gates]
    return np.sort(np.concatenate(times)) if times else np.empty(0)


def recovery_s(r: RunResult, killed: float) -> float | None:
    """Seconds from ``killed`` until two 0.5 s buckets in a row reach 90 % of the OK rate
    before the kill; None if that never happened within the run."""
    times = ok_times(r)
    before = times[(times >= r.measure_from) & (times < killed)]
    if killed - r.measure_from < 1.0 or len(before) == 0:
        return None
    target = 0.9 * len(before) / (killed - r.measure_from)
    edges = np.arange(killed, r.end + BUCKET_S, BUCKET_S)
    rates = np.histogram(times, edges)[0] / BUCKET_S
    for i in range(len(rates) - 1):
        if rates[i] >= target and rates[i + 1] >= target:
            return float(edges[i] - killed)
    return None


def at_share(specs: Sequence[GateSpec], throughput_fps: float, share: float) -> list[GateSpec]:
    """``specs`` with the load spread evenly so the gates offer ``share`` of ``throughput_fps``."""
    fps = share * throughput_fps / len(specs)
    return [replace(spec, fps=fps) for spec in specs]


def run_mode(
    config: Config,
    workers: int | None,
    specs: Sequence[GateSpec],
    pool: FramePool,
    args: argparse.Namespace,
    kill: bool,
) -> list[dict[str, Any]]:
    """One mode's run at the offered load, and with ``--then-share`` a second run on the same
    node at that share of the throughput the first one reached (its saturation, when the first
    load was above it)."""
    label = "embedded" if workers is None else f"cluster, {workers} worker(s)"
    with serve(config, workers) as (address, node):
        import grpc

        with grpc.insecure_channel(address) as channel:
            prepare_community(channel, COMMUNITY, pool)
        killed: list[float] = []
        timer = None
        if kill and workers:
            at = args.warmup + args.duration / 2

            def kill_one() -> None:
                infos = node.engine.pool.live_infos()
                victim = sorted(infos.values(), key=lambda i: i.pid)[0]
                killed.append(time.perf_counter())
                os.kill(victim.pid, signal.SIGKILL)

            timer = threading.Timer(at, kill_one)
            timer.start()
        result = run_load(
            address,
            specs,
            pool,
            community=COMMUNITY,
            duration=args.duration,
            warmup=args.warmup,
            label=label,
            progress=False,
        )
        if timer is not None:
            timer.cancel()
        summary = summarize_run(result)
        rows = [summary]
        if args.then_share:
            share = args.then_share
            reached = summary["node"]["throughput_fps"]
            summary["label"] = f"{label} (offered {summary['node']['offered_fps']:.0f} fps)"
            second = run_load(
                address,
                at_share(specs, reached, share),
                pool,
                community=COMMUNITY,
                duration=args.duration,
                warmup=args.warmup,
                label=f"{label} at {share:.0%} of {reached:.1f} fps",
                progress=False,
            )
            rows.append(summarize_run(second))
    if killed:
        summary["kill"] = {
            "recovered_after_s": recovery_s(result, killed[0]),
            "stream_errors": summary["node"]["stream_errors"],
            "unavailable": int(sum(int(np.sum(g.status == 14)) for g in result.gates)),
        }
    return rows


def markdown(rows: list[dict[str, Any]], per_mode: int = 1) -> str:
    """The table; ``per_mode`` rows per mode (2 with ``--then-share``), each compared with the
    embedded node's row of the same kind."""
    bases = [r["node"]["throughput_fps"] or float("nan") for r in rows[:per_mode]]
    lines = [
        "| mode | offered fps | throughput fps | vs embedded | shed fps | server p99 ms | "
        "client p99 ms | per-gate client p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(rows):
        n = row["node"]
        base = bases[i % per_mode]
        gates = ", ".join(f"{g['client_p99_ms']:.0f}" for g in row["gates"] if g["client_p99_ms"])
        lines.append(
            f"| {row['label']} | {n['offered_fps']:.1f} | {n['throughput_fps']:.1f} | "
            f"{n['throughput_fps'] / base:.0%} | {n['shed_fps']:.1f} | {n['p99_ms']} | "
            f"{n['client_p99_ms']} | {gates} |"
        )
    for row in rows:
        if "kill" in row:
            k = row["kill"]
            after = k["recovered_after_s"]
            lines.append(
                f"\n{row['label']}: one worker SIGKILLed mid-run; throughput back to 90 % "
                f"after {'not within the run' if after is None else f'{after:.1f} s'}; "
                f"{k['unavailable']} frame(s) answered UNAVAILABLE; {k['stream_errors']} "
                "device stream(s) broken."
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--gates", type=int, default=4)
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second per gate")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kill", action="store_true", help="kill a worker in the 2-worker run")
    parser.add_argument("--object-store-mb", type=int, default=200)
    parser.add_argument(
        "--then-share",
        type=float,
        default=None,
        metavar="S",
        help="after each mode's run, run it again at S (e.g. 0.7) of the throughput it reached: "
        "offer more than saturation with --fps to measure each mode at S of its own saturation",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args.config)
    config = replace(
        config,
        server=replace(config.server, listen="127.0.0.1:0", metrics_listen=""),
        cluster=replace(
            ClusterConfig(), num_cpus=os.cpu_count() or 2, object_store_mb=args.object_store_mb
        ),
    )
    specs = [GateSpec(f"door-{i + 1:02d}", "pedestrian", args.fps) for i in range(args.gates)]
    pool = build_pool("one-face")
    rows = run_mode(config, None, specs, pool, args, kill=False)
    import ray

    from cluster.distributed.runtime import connect

    connect(replace(config.cluster, address="local"))
    try:
        for n in args.workers:
            rows += run_mode(config, n, specs, pool, args, kill=args.kill and n == 2)
    finally:
        ray.shutdown()
    print(markdown(rows, 2 if args.then_share else 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
