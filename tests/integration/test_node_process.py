"""``benchmarks.node_process``: ``smartgate serve`` started in its own process by the harnesses
(real subprocess, real models, real gRPC health check and metrics endpoint)."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.node_process import (
    ready_address,
    running_node,
    serve_command,
    serve_environment,
    start_node,
)
from smartgate.errors import UnavailableError

pytestmark = pytest.mark.integration


def test_serve_command_puts_config_before_the_subcommand(tmp_path: Path) -> None:
    cmd = serve_command(tmp_path / "d", tmp_path / "c.toml", tmp_path / "m")
    assert cmd[:3] == [sys.executable, "-m", "cluster.cli"]
    assert cmd[3:] == [
        "--config",
        str(tmp_path / "c.toml"),
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "127.0.0.1:0",
        "--models-dir",
        str(tmp_path / "m"),
    ]
    bare = ["serve", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"]
    assert serve_command(tmp_path)[3:] == bare


def test_serve_environment_disables_metrics_and_lets_extra_win() -> None:
    env = serve_environment({"PATH": "/bin", "SMARTGATE_SERVER__MAX_WORKERS": "3"}, 12)
    assert env == {
        "PATH": "/bin",
        "SMARTGATE_SERVER__METRICS_LISTEN": "",
        "SMARTGATE_SERVER__MAX_WORKERS": "12",
    }
    extra = {"SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0"}
    assert serve_environment({}, 4, extra)["SMARTGATE_SERVER__METRICS_LISTEN"] == "127.0.0.1:0"
    with pytest.raises(ValueError, match="max_workers must be >= 1"):
        serve_environment({}, 0)


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("smartgate serving on 127.0.0.1:40123 (data in /tmp/x)\n", "127.0.0.1:40123"),
        ("smartgate serving on [::1]:5\n", "[::1]:5"),
        ("smartgate listening on 127.0.0.1:40123; loading models from /m\n", None),
        ("smartgate serving on \n", None),
        ("INFO smartgate serving on 1.2.3.4:5\n", None),
    ],
)
def test_ready_address(line: str, address: str | None) -> None:
    assert ready_address(line) == address


def test_a_node_runs_in_its_own_process_and_stops_cleanly(models_dir: Path) -> None:
    # The extra environment wins over the default "no metrics": the node prints its port.
    extra = {"SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0"}
    with running_node(models_dir, 6, env=extra) as node:
        assert node.pid != os.getpid() and Path(f"/proc/{node.pid}").exists()
        data_dir = Path(node.data_dir.name)
        assert data_dir.is_dir()
        with grpc.insecure_channel(node.address) as ch:
            reply = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        url = next(line.split()[2] for line in node.log if line.startswith("metrics on "))
        with urllib.request.urlopen(url, timeout=10) as page:
            assert page.status == 200 and b"# TYPE" in page.read()
    assert node.process.returncode == 0  # SIGTERM: a clean shutdown
    assert not data_dir.exists()


def test_a_node_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nno_such_setting = 1\n", encoding="utf-8")
    with pytest.raises(UnavailableError, match="exited with code 1") as info:
        start_node(None, 4, config=config)
    assert "no_such_setting" in str(info.value)  # the config error, from the log's tail


def _serve_children() -> list[int]:
    """This process's children running ``cluster.cli serve``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"cluster.cli" in cmdline and b"serve" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_node_that_is_not_ready_in_time_is_killed(models_dir: Path) -> None:
    assert _serve_children() == []
    with pytest.raises(UnavailableError, match=r"was not serving after 0\.2 s"):
        start_node(models_dir, 4, timeout_s=0.2)
    assert _serve_children() == []  # killed and reaped
