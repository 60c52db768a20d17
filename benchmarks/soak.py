"""Soak run: G gates stream real 1080p frames for N minutes with a share of corrupt frames.

The node runs as its own process (``smartgate serve`` on a free port, a fresh data dir, no
metrics port: ``benchmarks.node_process``), so its memory is measured alone: VmRSS from
``/proc/PID/status`` every few seconds. The gates are ``benchmarks.gates`` cameras (the same
frame pool of face passages, empty frames and car scenes, the same enrolled identities and
registered plates), each on one ``Capture/Stream`` at a moderate rate, open loop. A frame is
corrupt with probability ``--corrupt``, in one of several ways each checked beforehand to be
undecodable (truncated, header overwritten, a declared size of 65500x65500, random bytes,
empty, a broken PNG).

Checked (exit 1 when any fails): no stream broke; every corrupt frame was answered with
INVALID_ARGUMENT (as many as were sent); no good frame got an error other than shedding; every
frame got its answer; the node's RSS grew at most ``--rss-growth-pct`` between the medians of the
first and last quarters after warm-up. Writes ``soak.json``, ``soak.md`` and ``rss.png``.

    python -m benchmarks.soak --gates 8 --minutes 10 --corrupt 0.01   # make soak
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.gates import (
    LANES,
    SHED_CODE,
    FramePool,
    GateSpec,
    build_pool,
    default_gates,
    prepare_community,
)
from benchmarks.node_process import NodeProcess, start_node
from recognizer.image import DecodeLimits, decode
from smartgate.errors import DecodeError, UnavailableError
from smartgate.v1 import capture_pb2, capture_pb2_grpc

OK_CODE = 0
INVALID_CODE = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NO_REPLY = -1
CORRUPTIONS = ("truncated", "header", "bomb", "random", "empty", "png")


# -- corrupt frames -------------------------------------------------------------------------


def corrupt(frame: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """``frame`` (a JPEG) broken in the way ``kind`` names."""
    if kind == "truncated":
        return frame[: int(len(frame) * rng.uniform(0.2, 0.8))]
    if kind == "header":
        return bytes(rng.integers(0, 256, 16, dtype=np.uint8)) + frame[16:]
    if kind == "bomb":
        i = frame.index(b"\xff\xc0")
        return frame[: i + 5] + (65500).to_bytes(2, "big") * 2 + frame[i + 9 :]
    if kind == "random":
        return bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8))
    if kind == "empty":
        return b""
    if kind == "png":
        return b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 64, dtype=np.uint8))
    raise ValueError(f"unknown corruption {kind!r}; one of {CORRUPTIONS}")


def corrupt_variants(frames: Sequence[bytes], count: int, seed: int) -> list[tuple[str, bytes]]:
    """``count`` corrupt frames, every kind in turn, each checked to be undecodable here."""
    rng = np.random.default_rng(seed)
    limits = DecodeLimits()
    out: list[tuple[str, bytes]] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 50 * count:
            raise RuntimeError("cannot make undecodable frames")
        kind = CORRUPTIONS[len(out) % len(CORRUPTIONS)]
        data = corrupt(frames[int(rng.integers(len(frames)))], kind, rng)
        try:
            decode(data, limits)
        except DecodeError:
            out.append((kind, data))
    return out


# -- gates ----------------------------------------------------------------------------------


@dataclass
class SoakGate:
    """One camera on one stream: its frames on its own clock, some corrupt, and the replies."""

    spec: GateSpec
    frames: list[bytes]
    bad: list[tuple[str, bytes]]
    community: str
    start: float  # perf_counter of the first frame
    end: float
    seq_base: int
    corrupt_share: float
    seed: int
    scheduled: np.ndarray = field(init=False)
    corrupt_kind: list[str | None] = field(init=False)
    status: np.ndarray = field(init=False)
    sent: int = 0
    stream_error: str | None = None
    unmatched: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        n = max(0, math.ceil((self.end - self.start) * self.spec.fps))
        self.scheduled = self.start + np.arange(n) / self.spec.fps
        rng = np.random.default_rng(self.seed)
        picks = rng.random(n) < self.corrupt_share
        self._bad_index = [int(rng.integers(len(self.bad))) if p else -1 for p in picks]
        self.corrupt_kind = [self.bad[i][0] if i >= 0 else None for i in self._bad_index]
        self.status = np.full(n, NO_REPLY, dtype=np.int32)
        self._offset = int(rng.integers(len(self.frames)))

    def requests(self) -> Iterator[capture_pb2.Frame]:
        lane = LANES[self.spec.lane]
        for i, due in enumerate(self.scheduled):
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                return
            if self._stop.is_set():
                return
            k = self._bad_index[i]
            image = self.bad[k][1] if k >= 0 else self.frames[(self._offset + i) % len(self.frames)]
            self.sent = i + 1
            yield capture_pb2.Frame(
                community=self.community,
                gate=self.spec.name,
                device=self.spec.name,
                seq=self.seq_base + i,
                image=image,
                lane=lane,
            )

    def read(self, replies: Iterator[capture_pb2.Decision]) -> None:
        try:
            for d in replies:
                i = d.seq - self.seq_base
                if not 0 <= i < len(self.status) or self.status[i] != NO_REPLY:
                    self.unmatched += 1
                    continue
                self.status[i] = d.status.code
        except grpc.RpcError as exc:
            if not (self._stop.is_set() and exc.code() == grpc.StatusCode.CANCELLED):
                self.stream_error = f"{exc.code().name}: {exc.details()}"

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> dict[str, Any]:
        n = self.sent
        status = self.status[:n]
        is_bad = np.array([k is not None for k in self.corrupt_kind[:n]], dtype=bool)
        good, bad = status[~is_bad], status[is_bad]
        return {
            "gate": self.spec.name,
            "lane": self.spec.lane,
            "fps": self.spec.fps,
            "sent": int(n),
            "answered": int(np.count_nonzero(status != NO_REPLY)),
            "ok": int(np.count_nonzero(good == OK_CODE)),
            "shed": int(np.count_nonzero(good == SHED_CODE)),
            "corrupt_sent": int(is_bad.sum()),
            "corrupt_invalid": int(np.count_nonzero(bad == INVALID_CODE)),
            "corrupt_other": int(np.count_nonzero((bad != INVALID_CODE) & (bad != NO_REPLY))),
            "good_errors": int(
                np.count_nonzero((good != OK_CODE) & (good != SHED_CODE) & (good != NO_REPLY))
            ),
            "missing": int(np.count_nonzero(status == NO_REPLY)),
            "unmatched": self.unmatched,
            "stream_error": self.stream_error,
        }


# -- the node's memory ----------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MiB (``VmRSS``), None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler:
    """Samples ``rss_mb(pid)`` every ``interval`` seconds on its own thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while True:
            value = rss_mb(self.pid)
            if value is not None:
                self.samples.append((time.perf_counter() - self._t0, value))
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- the run --------------------------------------------------------------------------------


def run_gates(
    address: str,
    specs: Sequence[GateSpec],
    pool: FramePool,
    bad: list[tuple[str, bytes]],
    *,
    community: str,
    seconds: float,
    corrupt_share: float,
    seed: int,
    progress: bool,
) -> list[SoakGate]:
    """Every gate streams for ``seconds``; returns when every reply is in (or 30 s later)."""
    channels = [grpc.insecure_channel(address) for _ in specs]
    try:
        for ch in channels:
            grpc.channel_ready_future(ch).result(timeout=15)
        start = time.perf_counter() + 0.3
        seq_base = time.time_ns() // 1000
        gates = [
            SoakGate(
                spec,
                pool.frames[spec.lane],
                bad,
                community,
                start + k / (len(specs) * spec.fps),
                start + seconds,
                seq_base,
                corrupt_share,
                seed * 1000 + k,
            )
            for k, spec in enumerate(specs)
        ]
        calls, readers = [], []
        for gate, ch in zip(gates, channels, strict=True):
            call = capture_pb2_grpc.CaptureStub(ch).Stream(gate.requests(), wait_for_ready=True)
            calls.append(call)
            reader = threading.Thread(target=gate.read, args=(call,), name=f"soak-{gate.spec.name}")
            reader.start()
            readers.append(reader)
        deadline = start + seconds + 30.0
        last_print = 0.0
        while any(r.is_alive() for r in readers) and time.perf_counter() < deadline:
            time.sleep(0.5)
            elapsed = time.perf_counter() - start
            if progress and elapsed - last_print >= 10.0:
                last_print = elapsed
                sent = sum(g.sent for g in gates)
                answered = sum(int(np.count_nonzero(g.status != NO_REPLY)) for g in gates)
                print(f"  soak {elapsed:6.0f}s sent {sent} answered {answered}", file=sys.stderr)
        for gate in gates:
            gate.stop()
        for call in calls:
            call.cancel()
        for reader in readers:
            reader.join(timeout=10)
        return gates
    finally:
        for ch in channels:
            ch.close()


def rss_verdict(
    samples: Sequence[tuple[float, float]], warmup_s: float, growth_pct: float
) -> dict[str, Any]:
    """Medians of the first and last quarters of the samples after ``warmup_s``."""
    after = [mb for t, mb in samples if t >= warmup_s]
    if len(after) < 4:
        return {"ok": False, "reason": f"only {len(after)} RSS samples after warm-up"}
    q = len(after) // 4
    first, last = float(np.median(after[:q])), float(np.median(after[-q:]))
    growth = 100.0 * (last - first) / first
    return {
        "ok": growth <= growth_pct,
        "first_quarter_median_mb": round(first, 1),
        "last_quarter_median_mb": round(last, 1),
        "growth_pct": round(growth, 2),
        "bound_pct": growth_pct,
        "min_mb": round(min(after), 1),
        "max_mb": round(max(after), 1),
        "samples_after_warmup": len(after),
    }


def verdict(gates: list[dict[str, Any]], rss: dict[str, Any]) -> list[str]:
    """What went wrong (empty: the soak passed)."""
    problems = []
    for g in gates:
        name = g["gate"]
        if g["stream_error"]:
            problems.append(f"{name}: stream broke ({g['stream_error']})")
        if g["corrupt_invalid"] != g["corrupt_sent"]:
            problems.append(
                f"{name}: {g['corrupt_sent']} corrupt frames sent, "
                f"{g['corrupt_invalid']} answered INVALID_ARGUMENT"
            )
        if g["good_errors"]:
            problems.append(f"{name}: {g['good_errors']} good frames answered with an error")
        if g["missing"]:
            problems.append(f"{name}: {g['missing']} frames never answered")
    if not rss["ok"]:
        reason = rss.get("reason") or (
            f"RSS grew {rss['growth_pct']} % (bound {rss['bound_pct']} %) between the first "
            "and last quarters after warm-up"
        )
        problems.append(f"memory: {reason}")
    return problems


def markdown(report: dict[str, Any]) -> str:
    r, rss = report["run"], report["rss"]
    lines = [
        f"# Soak run {report['started']}",
        "",
        f"{r['gates']} gates × {r['fps']} fps for {r['seconds']:.0f} s, "
        f"{100 * r['corrupt']:.1f} % corrupt frames; node pid {r['node_pid']} "
        f"(`smartgate serve`), {r['cores']} cores.",
        "",
        "| gate | lane | sent | answered | ok | shed | corrupt sent | corrupt INVALID_ARGUMENT "
        "| other errors | missing | stream |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in report["gates"]:
        lines.append(
            f"| {g['gate']} | {g['lane']} | {g['sent']} | {g['answered']} | {g['ok']} | "
            f"{g['shed']} | {g['corrupt_sent']} | {g['corrupt_invalid']} | "
            f"{g['good_errors'] + g['corrupt_other']} | {g['missing']} | "
            f"{'broken: ' + g['stream_error'] if g['stream_error'] else 'open'} |"
        )
    t = report["totals"]
    lines += [
        f"| **all** | | {t['sent']} | {t['answered']} | {t['ok']} | {t['shed']} | "
        f"{t['corrupt_sent']} | {t['corrupt_invalid']} | {t['good_errors'] + t['corrupt_other']} "
        f"| {t['missing']} | {t['stream_errors']} broken |",
        "",
    ]
    if rss.get("samples_after_warmup"):
        lines.append(
            f"Node RSS after {r['warmup_s']:.0f} s warm-up: first-quarter median "
            f"{rss['first_quarter_median_mb']} MiB, last-quarter median "
            f"{rss['last_quarter_median_mb']} MiB ({rss['growth_pct']:+.2f} %, bound "
            f"{rss['bound_pct']} %); min {rss['min_mb']}, max {rss['max_mb']} MiB over "
            f"{rss['samples_after_warmup']} samples every {r['rss_interval_s']} s."
        )
    lines += ["", "**PASS**" if not report["problems"] else "**FAIL**"]
    lines += [f"- {p}" for p in report["problems"]]
    return "\n".join(lines) + "\n"


def plot_rss(samples: Sequence[tuple[float, float]], warmup_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t for t, _ in samples], [mb for _, mb in samples], lw=1.2)
    ax.axvline(warmup_s, color="grey", ls="--", lw=0.8, label="end of warm-up")
    ax.set_xlabel("seconds")
    ax.set_ylabel("node RSS (MiB)")
    ax.set_title("smartgate serve: resident memory during the soak")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("--gates", type=int, default=8, help="gates streaming (default 8)")
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument("--seconds", type=float, help="run length in seconds (overrides --minutes)")
    p.add_argument("--fps", type=float, default=2.0, help="frames/s per gate (default 2)")
    p.add_argument("--corrupt", type=float, default=0.01, help="share of corrupt frames")
    p.add_argument("--warmup", type=float, help="seconds of RSS not judged (default: 10 %%)")
    p.add_argument("--rss-interval", type=float, help="seconds between RSS samples (default 5)")
    p.add_argument("--rss-growth-pct", type=float, default=10.0, help="allowed growth (10)")
    p.add_argument("--server", help="HOST:PORT of a running node (default: start one)")
    p.add_argument("--server-pid", type=int, help="its process id, for its RSS")
    p.add_argument("--models-dir", type=Path, help="model cache of the started node")
    p.add_argument("--config", type=Path, help="TOML configuration of the started node")
    p.add_argument("--passages", type=int, default=8, help="face passages in the frame pool")
    p.add_argument("--community", default="soak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="output folder (default reports/soak-<time>/)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60.0 * args.minutes
    if args.gates < 1 or args.fps <= 0 or seconds <= 0 or not 0 <= args.corrupt <= 1:
        print(
            "error: --gates, --fps, the length must be > 0 and --corrupt in [0, 1]", file=sys.stderr
        )
        return 2
    if args.server and not args.server_pid:
        print("error: --server needs --server-pid (its RSS is what is measured)", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else 0.1 * seconds
    interval = args.rss_interval or (5.0 if seconds >= 120 else 1.0)
    started = datetime.now()
    out = args.out or Path("reports") / f"soak-{started:%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    log("building frames ...")
    pool = build_pool("mixed", args.passages, args.seed)
    bad = corrupt_variants(pool.frames["pedestrian"] + pool.frames["vehicle"], 24, args.seed)
    specs = default_gates(args.gates, args.fps)
    node: NodeProcess | None = None
    if args.server:
        address, pid = args.server, args.server_pid
    else:
        log("starting smartgate serve ...")
        try:
            node = start_node(args.models_dir, args.gates + 8, config=args.config)
        except UnavailableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        address, pid = node.address, node.pid
    sampler = RssSampler(pid, interval)
    try:
        with grpc.insecure_channel(address) as ch:
            grpc.channel_ready_future(ch).result(timeout=15)
            prepare_community(ch, args.community, pool)
        sampler.start()
        log(f"soak: {args.gates} gates × {args.fps} fps for {seconds:.0f} s on {address}")
        gates = run_gates(
            address,
            specs,
            pool,
            bad,
            community=args.community,
            seconds=seconds,
            corrupt_share=args.corrupt,
            seed=args.seed,
            progress=not args.quiet,
        )
        sampler.stop()
        node_alive = rss_mb(pid) is not None
    finally:
        sampler.stop()
        exit_code = node.stop() if node is not None else None
    summaries = [g.summary() for g in gates]
    totals = {
        k: sum(g[k] for g in summaries) for k in summaries[0] if isinstance(summaries[0][k], int)
    }
    totals["stream_errors"] = sum(1 for g in summaries if g["stream_error"])
    rss = rss_verdict(sampler.samples, warmup, args.rss_growth_pct)
    problems = verdict(summaries, rss)
    if not node_alive:
        problems.append("the node process was gone at the end of the run")
    files = {"json": str(out / "soak.json"), "markdown": str(out / "soak.md")}
    if sampler.samples:
        plot_rss(sampler.samples, warmup, out / "rss.png")
        files["plot"] = str(out / "rss.png")
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "run": {
            "gates": args.gates,
            "fps": args.fps,
            "seconds": seconds,
            "corrupt": args.corrupt,
            "warmup_s": warmup,
            "rss_interval_s": interval,
            "node_pid": pid,
            "node_exit_code": exit_code,
            "cores": os.cpu_count(),
            "corruptions": sorted({k for k, _ in bad}),
        },
        "gates": summaries,
        "totals": totals,
        "rss": rss,
        "rss_samples": [[round(t, 2), round(mb, 1)] for t, mb in sampler.samples],
        "problems": problems,
        "files": files,
    }
    (out / "soak.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    text = markdown(report)
    (out / "soak.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
