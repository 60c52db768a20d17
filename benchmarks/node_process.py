"""``smartgate serve`` in its own process, for the harnesses that load a node.

A camera is a separate device at a real site, so the harnesses measure the node as its own
process: its CPU and memory are read from ``/proc/PID`` alone, and the load generator's gRPC
client threads do not compete with the node for its GIL. ``start_node`` runs
``python -m cluster.cli [--config FILE] serve`` on a free loopback port with a fresh temporary
data dir and the metrics endpoint off (no fixed port to collide on), and returns once the node
prints its ``smartgate serving on HOST:PORT`` line (models loaded and warm). The node's output
is read on a thread all along (a full pipe would block it) and kept, so a node that fails to
start is reported with the tail of its log.

Used by ``benchmarks.gates`` (``smartgate bench`` without ``--server``) and
``benchmarks.soak``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from smartgate.errors import UnavailableError

SERVE_TIMEOUT_S = 180.0  # loading and warming the models on a busy 2-core machine
STOP_TIMEOUT_S = 30.0  # after SIGTERM (the node drains for server.grace_seconds), then SIGKILL
READY_PREFIX = "smartgate serving on "
LOG_LINES = 2000  # lines of the node's output kept
TAIL_LINES = 30  # of them, in the error when it does not start


@dataclass
class NodeProcess:
    """A started ``smartgate serve``: its process, address, data dir and output so far."""

    process: subprocess.Popen[str]
    address: str
    data_dir: tempfile.TemporaryDirectory[str]
    log: list[str]
    pump: threading.Thread

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; removes the data dir. Returns the exit code
        (0: a clean shutdown; negative: the signal that ended it)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.pump.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.data_dir.cleanup()
        return self.process.returncode


def serve_command(
    data_dir: Path, config: Path | None = None, models_dir: Path | None = None
) -> list[str]:
    """The argv of ``smartgate serve`` on a free loopback port (``--config`` is the CLI's
    top-level flag, before the sub-command)."""
    cmd = [sys.executable, "-m", "cluster.cli"]
    if config is not None:
        cmd += ["--config", str(config)]
    cmd += ["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]
    if models_dir is not None:
        cmd += ["--models-dir", str(models_dir)]
    return cmd


def serve_environment(
    base: Mapping[str, str], max_workers: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (this process's environment) with the node's settings: no metrics endpoint,
    ``server.max_workers``, then ``extra`` (``SMARTGATE_SECTION__FIELD`` overrides, which win
    over the config file as they do for any ``smartgate serve``)."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    env = dict(base)
    env["SMARTGATE_SERVER__METRICS_LISTEN"] = ""
    env["SMARTGATE_SERVER__MAX_WORKERS"] = str(max_workers)
    env.update(extra or {})
    return env


def ready_address(line: str) -> str | None:
    """HOST:PORT from the node's ``smartgate serving on HOST:PORT (data in ...)`` line."""
    if not line.startswith(READY_PREFIX):
        return None
    rest = line[len(READY_PREFIX) :].split()
    return rest[0] if rest else None


def start_node(
    models_dir: Path | None = None,
    max_workers: int = 16,
    *,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = SERVE_TIMEOUT_S,
) -> NodeProcess:
    """Start ``smartgate serve`` and wait for its "serving on" line (models loaded and warm).

    ``config``: a TOML file (``smartgate --config``); ``models_dir``: the model cache
    (``--models-dir``, else the config's); ``env``: extra environment overrides. Raises
    ``UnavailableError`` with the tail of the node's output when it exits or does not get ready
    within ``timeout_s``.
    """
    data = tempfile.TemporaryDirectory(prefix="smartgate-node-")
    proc = subprocess.Popen(
        serve_command(Path(data.name), config, models_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=serve_environment(os.environ, max_workers, env),
        bufsize=1,
    )
    log: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:  # keep reading, or a full pipe would block the node
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(log) < LOG_LINES:
                log.append(line.rstrip())
            address = None if found else ready_address(line)
            if address is not None:
                found.append(address)
                ready.set()
        ready.set()  # the output ended: the node is gone

    reader = threading.Thread(target=pump, name="node-log", daemon=True)
    reader.start()
    if not ready.wait(timeout_s) or not found:
        exited = ready.is_set()  # its output ended before the "serving on" line
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10 if exited else 0)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        data.cleanup()
        why = (
            f"exited with code {proc.returncode}"
            if exited
            else f"was not serving after {timeout_s:g} s"
        )
        tail = "\n".join(log[-TAIL_LINES:]) or "(no output)"
        raise UnavailableError(f"smartgate serve {why}; its last output:\n{tail}")
    return NodeProcess(proc, found[0], data, log, reader)


@contextlib.contextmanager
def running_node(
    models_dir: Path | None = None,
    max_workers: int = 16,
    *,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = SERVE_TIMEOUT_S,
) -> Iterator[NodeProcess]:
    """``start_node`` for a ``with`` block; the node is stopped (and its data dir removed) when
    the block ends, however it ends."""
    node = start_node(models_dir, max_workers, config=config, env=env, timeout_s=timeout_s)
    try:
        yield node
    finally:
        node.stop()
