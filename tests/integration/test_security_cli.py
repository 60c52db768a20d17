"""A site secured the way the README says, with the ``smartgate`` command in real processes:
``certs`` and ``token`` make the credentials, ``serve --config`` listens with mutual TLS and
tokens, the client commands connect with ``--tls-ca --cert --key --token``."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SMARTGATE = [sys.executable, "-m", "cluster.cli"]


def _env(models_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SMARTGATE_MODELS__CACHE_DIR": str(models_dir),
        "SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0",
        "PYTHONUNBUFFERED": "1",
    }


def _run(args: list[str], models_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTGATE, *args], capture_output=True, text=True, timeout=180, env=_env(models_dir)
    )


def _ok(args: list[str], models_dir: Path) -> str:
    out = _run(args, models_dir)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def site(tmp_path: Path, models_dir: Path) -> Path:
    """The site's certificates, signing key, tokens, devices file and configuration."""
    pki = tmp_path / "pki"
    _ok(["certs", "init", str(pki)], models_dir)
    _ok(["certs", "server", str(pki), "--host", "gate.example"], models_dir)
    _ok(["certs", "device", str(pki), "cam-1"], models_dir)
    _ok(["certs", "platform", str(pki), "ops"], models_dir)
    _ok(["token", "keygen", str(pki / "signing.key")], models_dir)
    for scope in ("operator", "county"):
        community = ["--community", "c1"] if scope == "operator" else []
        issue = ["token", "issue", "--key", str(pki / "signing.key"), "--scope", scope]
        subject = ["--subject", f"{scope}-1", "--ttl", "1h"]
        token = _ok([*issue, *community, *subject], models_dir).strip()
        (pki / f"{scope}.token").write_text(token + "\n")
    (pki / "devices.toml").write_text('[devices.cam-1]\ncommunity = "c1"\ngates = ["g1"]\n')
    (tmp_path / "site.toml").write_text(
        "[security]\n"
        f'tls_cert = "{pki / "server.pem"}"\n'
        f'tls_key = "{pki / "server.key"}"\n'
        f'client_ca = "{pki / "ca.pem"}"\n'
        f'token_keys = "{pki / "signing.key.pub"}"\n'
        f'devices = "{pki / "devices.toml"}"\n'
    )
    return tmp_path


@pytest.fixture
def served(site: Path, models_dir: Path) -> Iterator[str]:
    log_path = site / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                *SMARTGATE,
                *("--config", str(site / "site.toml"), "serve"),
                *("--data-dir", str(site / "data"), "--listen", "127.0.0.1:0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(models_dir),
        )
    try:
        deadline = time.monotonic() + 120
        address = None
        while address is None and time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"serving on (\S+)", log_path.read_text())
            address = m.group(1) if m else None
            time.sleep(0.1)
        assert address, f"server did not start:\n{log_path.read_text()}"
        assert "metrics on https://" in log_path.read_text()
        yield address
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log_path.read_text()


def test_certs_and_keys_are_laid_out_and_private(site: Path) -> None:
    pki = site / "pki"
    for key in ("ca.key", "server.key", "devices/cam-1.key", "platforms/ops.key", "signing.key"):
        assert stat.S_IMODE(os.stat(pki / key).st_mode) == 0o600, key
    assert (pki / "operator.token").read_text().count(".") == 2


def test_a_secured_site_end_to_end(
    site: Path, served: str, faces_dir: Path, models_dir: Path
) -> None:
    pki = site / "pki"
    tls = ["--server", served, "--tls-ca", str(pki / "ca.pem")]
    platform = [
        *tls,
        "--cert",
        str(pki / "platforms/ops.pem"),
        "--key",
        str(pki / "platforms/ops.key"),
    ]
    device = [
        *tls,
        "--cert",
        str(pki / "devices/cam-1.pem"),
        "--key",
        str(pki / "devices/cam-1.key"),
    ]
    operator = [*platform, "--token", f"@{pki / 'operator.token'}"]
    photo = str(faces_dir / "examples_obama.jpg")

    enrolled = _ok(
        ["enroll", *operator, "--community", "c1", "--person", "obama", photo], models_dir
    )
    assert json.loads(enrolled)["templates"] == 1

    denied = _run(["enroll", *operator, "--community", "c2", "--person", "x", photo], models_dir)
    assert denied.returncode == 1
    assert "PERMISSION_DENIED" in denied.stderr

    county = [*platform, "--token", f"@{pki / 'county.token'}"]
    removal = _run(["remove", *county, "--community", "c1", "--person", "obama"], models_dir)
    assert removal.returncode == 1 and "PERMISSION_DENIED" in removal.stderr

    no_token = _run(["persons", *platform, "--community", "c1"], models_dir)
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr

    lines = _ok(
        ["stream", *device, "--community", "c1", "--gate", "g1", "--device", "cam-1", photo],
        models_dir,
    ).splitlines()
    assert json.loads(lines[0])["frame_action"] == "OPEN"

    other_gate = _run(
        ["stream", *device, "--community", "c1", "--gate", "g2", "--device", "cam-1", photo],
        models_dir,
    )
    assert other_gate.returncode == 1 and "PERMISSION_DENIED" in other_gate.stderr


def test_serve_refuses_an_open_listener_off_loopback(tmp_path: Path, models_dir: Path) -> None:
    out = _run(["serve", "--data-dir", str(tmp_path / "data"), "--listen", "0.0.0.0:0"], models_dir)
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0:0 without TLS and authentication" in out.stderr
