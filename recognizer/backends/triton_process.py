"""Start and stop a local Triton server (``triton_serve.py`` in ``.venv-triton``) from Python.

Used by the tests and ``benchmarks/triton_overhead.py``: free loopback ports, the server's
output in a log file, readiness from its ``SMARTGATE_TRITON_READY`` line, stop with SIGINT
(PyTriton then stops ``tritonserver`` and removes its workspace; SIGTERM would leave a copy in
its cache), SIGKILL of the whole process group only if that does not end it in time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from smartgate.errors import UnavailableError

REPO_ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV = REPO_ROOT / ".venv-triton"
SERVE_SCRIPT = Path(__file__).with_name("triton_serve.py")
READY_PREFIX = "SMARTGATE_TRITON_READY"  # printed by triton_serve.py


def triton_python(venv: Path = TRITON_VENV) -> Path | None:
    """The interpreter of the Triton virtualenv (``make triton-venv``), or None if absent."""
    python = venv / "bin" / "python"
    return python if python.exists() else None


def runtime_env(python: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for ``python``: with ``LD_LIBRARY_PATH`` on its base interpreter's
    ``lib`` folder when that holds a ``libpython`` (a pyenv interpreter: PyTriton's backend
    stub would otherwise load the system's libpython and fail to load models)."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONPATH", None)
    cfg = python.parent.parent / "pyvenv.cfg"
    home = None
    if cfg.is_file():
        for line in cfg.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                home = Path(value.strip())
    if home is not None:
        lib = home.parent / "lib"
        if any(lib.glob("libpython3*.so*")):
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p
            )
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TritonEndpoints:
    grpc: str  # HOST:PORT, for tritonclient.grpc and ``models.triton_url``
    http: str
    metrics: str  # Prometheus text on http://<metrics>/metrics


class TritonServerProcess:
    """One local Triton server serving ``models`` (names in ``models_dir`` or manifest paths).

    ``start()`` returns its endpoints once every model is loaded; ``stop()`` ends it; a
    ``start()`` after ``stop()`` comes back on the same ports. Also a context manager.
    """

    def __init__(
        self,
        models_dir: Path,
        models: Sequence[str],
        *,
        python: Path | None = None,
        host: str = "127.0.0.1",
        max_batch: int = 16,
        preferred: Sequence[int] = (4, 8),
        queue_delay_us: int = 500,
        threads: int = 1,
        work_dir: Path | None = None,
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        found = python or triton_python()
        if found is None:
            raise UnavailableError(f"no Triton virtualenv at {TRITON_VENV}; run `make triton-venv`")
        self.python = found
        self.models_dir = Path(models_dir)
        self.models = tuple(models)
        self.host = host
        self.max_batch = max_batch
        self.preferred = tuple(preferred)
        self.queue_delay_us = queue_delay_us
        self.threads = threads
        self.ports = ports  # (grpc, http, metrics); None: free ones, chosen at start
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="smartgate-triton-"))
        self.log_path = self.work_dir / "triton.log"
        self.endpoints: TritonEndpoints | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self, ports: tuple[int, int, int]) -> list[str]:
        grpc_port, http_port, metrics_port = ports
        cmd = [str(self.python), str(SERVE_SCRIPT), "--models-dir", str(self.models_dir)]
        for model in self.models:
            cmd += ["--model", model]
        cmd += [
            "--address", self.host,
            "--grpc-port", str(grpc_port),
            "--http-port", str(http_port),
            "--metrics-port", str(metrics_port),
            "--workspace", str(self.work_dir / "workspace"),
            "--max-batch", str(self.max_batch),
            "--preferred", *(str(p) for p in self.preferred),
            "--queue-delay-us", str(self.queue_delay_us),
            "--threads", str(self.threads),
        ]  # fmt: skip
        return cmd

    def start(self, timeout_s: float = 90.0) -> TritonEndpoints:
        """Launch and wait for the ready line; ``UnavailableError`` with the log's tail if the
        server exits or is not ready within ``timeout_s``."""
        if self._proc is not None:
            raise RuntimeError("the Triton server is already started")
        ports = self.ports or (free_port(self.host), free_port(self.host), free_port(self.host))
        self.ports = ports  # a restart comes back on the same ports
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.command(ports),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=runtime_env(self.python),
                start_new_session=True,  # our SIGINT reaches only the server, not our group
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ready_line() is not None:
                self.endpoints = TritonEndpoints(*(f"{self.host}:{p}" for p in ports))
                return self.endpoints
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise UnavailableError(
                    f"the Triton server exited with {code} before it was ready:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.stop()
        raise UnavailableError(
            f"the Triton server was not ready within {timeout_s:g} s:\n{self.log_tail()}"
        )

    def _ready_line(self) -> str | None:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        for line in text.splitlines():
            if line.startswith(READY_PREFIX):
                return line
        return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGINT, wait; SIGKILL the process group if it outlives ``timeout_s``. Its exit code."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            code = proc.returncode
            self._reap_group(proc.pid)
        shutil.rmtree(self.work_dir / "workspace", ignore_errors=True)
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        return code

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Kill what is left of the server's session (a stray ``tritonserver`` or stub)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> TritonServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
