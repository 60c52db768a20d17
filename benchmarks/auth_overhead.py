"""Overhead of mutual TLS and the auth interceptor on capture latency.

One real node (real models) behind two servers on free ports: a plain one (the open loopback
mode) and a secured one (TLS with client certificates, the devices file, tokens, the per-device
rate limit set high enough never to refuse). The same 1920×1080 one-face JPEG is sent one frame
at a time (each when the previous decision came back) to both, interleaved frame by frame in
rounds (the side that goes first alternates) so that drift of a shared, noisy machine falls on
both sides alike.

Two ways a camera sends, each measured on both servers:

* ``stream``: ``Capture/Stream`` over a device certificate: per-frame cost = TLS record
  encryption + the interceptor's frame check + the rate limiter;
* ``submit``: ``Capture/Submit`` with a gate token over mutual TLS: per-call cost = TLS + token
  signature check + the policy, on every frame.

Client-side latency (send → decision received) per side: p50, p99; the p50 difference (the
issue's budget: ≤ 1 ms) and, steadier on a shared machine, the median of the differences of
frames sent back to back, with a bootstrap 95 % interval; and the part of each frame's
latency spent outside the servicer (client latency minus the servicer's own ``total``: the
network stack, TLS, the interceptors), which the recognition's noise does not reach.

Run: ``python -m benchmarks.auth_overhead [--frames 100] [--rounds 10] [--mode stream submit]``
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np

from benchmarks.datasets import data_dir
from cluster.security import certs, tokens
from cluster.security.channel import open_channel
from smartgate.config import SecurityConfig, ServerConfig, load_config
from smartgate.v1 import capture_pb2, capture_pb2_grpc

PROBE = "examples_obama-1080p.jpg"
GALLERY = "examples_obama.jpg"
COMMUNITY, GATE, DEVICE = "bench", "g1", "cam-bench"

Sample = tuple[float, float]  # (client ms: send -> decision, server ms: the servicer's total)
Send = Callable[[int], Sample]


def _site(folder: Path) -> tuple[SecurityConfig, str]:
    """Certificates, devices file and a gate token for the secured server."""
    certs.init_ca(folder)
    certs.issue_server(folder)
    certs.issue_device(folder, DEVICE)
    (folder / "devices.toml").write_text(
        f'[devices.{DEVICE}]\ncommunity = "{COMMUNITY}"\ngates = ["{GATE}"]\n'
    )
    ring, _ = tokens.keygen(folder / "signing.key")
    token = tokens.issue(
        tokens.load_signing_key(folder / "signing.key"),
        subject=DEVICE,
        scopes=["gate"],
        communities=[COMMUNITY],
        gates=[GATE],
        ttl_s=3600,
    )
    security = SecurityConfig(
        tls_cert=folder / "server.pem",
        tls_key=folder / "server.key",
        client_ca=folder / "ca.pem",
        token_keys=ring,
        devices=folder / "devices.toml",
        device_fps=10_000.0,
        device_burst=10_000,
    )
    return security, token


def _frame(image: bytes, seq: int) -> capture_pb2.Frame:
    return capture_pb2.Frame(community=COMMUNITY, gate=GATE, device=DEVICE, seq=seq, image=image)


def _checked(decision: capture_pb2.Decision, seq: int) -> None:
    if decision.status.code or decision.frame_action != capture_pb2.ACTION_OPEN:
        raise RuntimeError(f"frame {seq}: expected OPEN, got {decision}")


def stream_sender(channel: grpc.Channel, image: bytes, stack: ExitStack) -> Send:
    """A long-lived ``Capture/Stream``; each call sends one frame and waits for its decision."""
    outbox: queue.Queue[capture_pb2.Frame | None] = queue.Queue()
    replies: Iterator[capture_pb2.Decision] = capture_pb2_grpc.CaptureStub(channel).Stream(
        iter(outbox.get, None)
    )
    stack.callback(outbox.put, None)

    def send(seq: int) -> Sample:
        sent = time.perf_counter()
        outbox.put(_frame(image, seq))
        decision = next(replies)
        elapsed = (time.perf_counter() - sent) * 1e3
        _checked(decision, seq)
        return elapsed, decision.timings_ms["total"]

    return send


def submit_sender(channel: grpc.Channel, image: bytes) -> Send:
    stub = capture_pb2_grpc.CaptureStub(channel)

    def send(seq: int) -> Sample:
        frame = _frame(image, seq)
        sent = time.perf_counter()
        decision = stub.Submit(frame, timeout=30)
        elapsed = (time.perf_counter() - sent) * 1e3
        _checked(decision, seq)
        return elapsed, decision.timings_ms["total"]

    return send


def interleave(
    sides: dict[str, Send], frames: int, rounds: int, warmup: int, seed: int = 0
) -> dict[str, list[Sample]]:
    """``frames`` per side, sent in pairs (one frame to each side, back to back) in ``rounds``
    blocks, so both sides see the same machine. Which side goes first in a pair is drawn at
    random: a fixed alternation would line up with periodic work of the node (an embedding
    reused for a few frames of a track, then computed afresh) and hand it all to one side."""
    names = list(sides)
    rng = np.random.default_rng(seed)
    seq = 0
    for name in names:  # warm both paths (connections, TLS sessions, caches)
        for _ in range(warmup):
            sides[name](seq)
            seq += 1
    out: dict[str, list[Sample]] = {name: [] for name in names}
    per_round = max(1, frames // rounds)
    for _ in range(rounds):
        for _ in range(per_round):
            for k in rng.permutation(len(names)):
                out[names[k]].append(sides[names[k]](seq))
                seq += 1
    return out


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {"p50": float(np.median(a)), "p99": float(np.percentile(a, 99)), "n": float(a.size)}


def paired_difference(
    a: list[float], b: list[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of ``a[i] - b[i]`` (frames sent back to back) and its bootstrap 95 % interval."""
    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(d, size=(resamples, d.size)), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(np.median(d)), float(low), float(high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--frames", type=int, default=100, help="measured frames per side")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--mode", nargs="+", choices=("stream", "submit"), default=["stream"])
    args = parser.parse_args(argv)

    from cluster.node import Node
    from cluster.server import start_server

    faces = data_dir() / "faces"
    image = (faces / PROBE).read_bytes()
    base = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="smartgate-auth-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        security, token = _site(folder / "pki")
        config = replace(base, data_dir=folder / "data")
        node = Node.open(config)
        stack.callback(node.close)
        node.engine.enroll(COMMUNITY, "obama", [(faces / GALLERY).read_bytes()])
        server_config = ServerConfig(listen="127.0.0.1:0", max_workers=8)
        plain = start_server(node, server_config)
        stack.callback(plain.stop, 0)
        secured = start_server(node, server_config, security)
        stack.callback(secured.stop, 0)
        pki = folder / "pki"
        plain_ch = stack.enter_context(open_channel(plain.address))
        device_ch = stack.enter_context(
            open_channel(
                secured.address,
                ca=pki / "ca.pem",
                cert=pki / "devices" / f"{DEVICE}.pem",
                key=pki / "devices" / f"{DEVICE}.key",
            )
        )
        token_ch = stack.enter_context(
            open_channel(
                secured.address,
                ca=pki / "ca.pem",
                cert=pki / "devices" / f"{DEVICE}.pem",
                key=pki / "devices" / f"{DEVICE}.key",
                token=token,
            )
        )
        print(
            f"{args.frames} frames per side of {PROBE} (1920x1080, one face), serial, "
            f"interleaved in {args.rounds} rounds; client-side ms\n"
        )
        print("| mode | side | client p50 | client p99 | servicer p50 | outside the servicer p50 |")
        print("|---|---|---|---|---|---|")
        summary = []
        for mode in args.mode:
            if mode == "stream":
                sides = {
                    "plain": stream_sender(plain_ch, image, stack),
                    "secured": stream_sender(device_ch, image, stack),
                }
                label = "Stream, device certificate"
            else:
                sides = {
                    "plain": submit_sender(plain_ch, image),
                    "secured": submit_sender(token_ch, image),
                }
                label = "Submit, gate token over mTLS"
            result = interleave(sides, args.frames, args.rounds, args.warmup)
            client = {k: [c for c, _ in v] for k, v in result.items()}
            outside = {k: float(np.median([c - s for c, s in v])) for k, v in result.items()}
            for side, samples in result.items():
                c = _stats(client[side])
                servicer = float(np.median([s for _, s in samples]))
                print(
                    f"| {label} | {side} | {c['p50']:.2f} | {c['p99']:.2f} | {servicer:.2f} "
                    f"| {outside[side]:.2f} |",
                    flush=True,
                )
            mid, low, high = paired_difference(client["secured"], client["plain"])
            p50 = _stats(client["secured"])["p50"] - _stats(client["plain"])["p50"]
            summary.append(
                f"| {label} | {p50:+.2f} | {mid:+.2f} [{low:+.2f}, {high:+.2f}] "
                f"| {outside['secured'] - outside['plain']:+.2f} |"
            )
        print(
            "\nsecured minus plain, ms:\n\n| mode | client p50 | paired, median [95 % CI] "
            "| outside the servicer p50 |\n|---|---|---|---|"
        )
        print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
