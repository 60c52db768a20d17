"""``smartgate cluster up`` and ``smartgate serve --cluster ADDRESS`` as a user runs them: real
processes (a two-node Ray cluster, a cluster frontend), then enrol and identify through the CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SMARTGATE = [sys.executable, "-m", "cluster.cli"]


def _env(models_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SMARTGATE_MODELS__CACHE_DIR": str(models_dir),
        "SMARTGATE_SERVER__METRICS_LISTEN": "",
        "SMARTGATE_CLUSTER__MIN_WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
    }


def _start(args: list[str], log_path: Path, models_dir: Path) -> subprocess.Popen[str]:
    with log_path.open("w") as log:
        return subprocess.Popen(
            [*SMARTGATE, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(models_dir),
        )


def _wait_line(proc: subprocess.Popen[str], log_path: Path, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(pattern, log_path.read_text())
        if m:
            return m.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{log_path.read_text()}")


def _stop(proc: subprocess.Popen[str], log_path: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log_path.read_text()


def test_cluster_up_then_serve_on_it(tmp_path: Path, faces_dir: Path, models_dir: Path) -> None:
    up_log, serve_log = tmp_path / "up.log", tmp_path / "serve.log"
    up = _start(["cluster", "up", "--nodes", "2", "--object-store-mb", "100"], up_log, models_dir)
    try:
        ray_address = _wait_line(up, up_log, r"serve --cluster (\S+)", 120)
        serve = _start(
            [
                *("serve", "--cluster", ray_address, "--listen", "127.0.0.1:0"),
                *("--data-dir", str(tmp_path / "data")),
            ],
            serve_log,
            models_dir,
        )
        try:
            address = _wait_line(serve, serve_log, r"serving on (\S+)", 180)
            client = ["--server", address, "--community", "c1"]
            photo = faces_dir / "examples_obama.jpg"
            enrol = subprocess.run(
                [*SMARTGATE, "enroll", *client, "--person", "obama", str(photo)],
                capture_output=True,
                text=True,
                timeout=120,
                env=_env(models_dir),
            )
            assert enrol.returncode == 0, enrol.stderr
            identify = subprocess.run(
                [*SMARTGATE, "identify", *client, "--json", str(faces_dir / "examples_obama2.jpg")],
                capture_output=True,
                text=True,
                timeout=120,
                env=_env(models_dir),
            )
            assert identify.returncode == 0, identify.stderr
            decision = json.loads(identify.stdout.splitlines()[0])
            assert decision["action"] == "OPEN"
            assert decision["faces"][0]["match"]["person_id"] == "obama"
        finally:
            _stop(serve, serve_log)
        # The registry is in the community's own store, under the frontend's data dir.
        assert (tmp_path / "data" / "communities" / "c1" / "registry.db").is_file()
    finally:
        _stop(up, up_log)
    assert "ray cluster down" in up_log.read_text()
