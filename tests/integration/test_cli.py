"""The ``smartgate`` command line as a user runs it: real processes, real server, real photos."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
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
        "SMARTGATE_CAPTURE__PER_GATE_LIMIT": "10000",  # bursts of frames, every one answered
        "SMARTGATE_CAPTURE__MAX_WAIT_MS": "600000",
        "SMARTGATE_SERVER__METRICS_LISTEN": "127.0.0.1:0",
        "PYTHONUNBUFFERED": "1",
    }


def _run(args: list[str], models_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SMARTGATE, *args], capture_output=True, text=True, timeout=180, env=_env(models_dir)
    )


def test_detect_prints_one_json_line_per_image(faces_dir: Path, models_dir: Path) -> None:
    files = [faces_dir / "examples_obama.jpg", faces_dir / "examples_two_people.jpg"]
    out = _run(["detect", "--json", *map(str, files)], models_dir)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [Path(r["file"]).name for r in rows] == [f.name for f in files]
    assert len(rows[0]["faces"]) >= 1
    assert len(rows[1]["faces"]) >= 2
    face = rows[0]["faces"][0]
    assert len(face["box"]) == 4 and len(face["landmarks"]) == 5
    assert set(face) >= {"box", "score", "landmarks", "quality", "match"}
    assert face["match"] is None


def test_detect_reports_bad_files_on_stderr(
    tmp_path: Path, faces_dir: Path, models_dir: Path
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    out = _run(["detect", "--json", str(bad), str(faces_dir / "examples_biden.jpg")], models_dir)
    assert out.returncode == 1
    assert "bad.jpg" in out.stderr and "JPEG" in out.stderr
    assert len(out.stdout.splitlines()) == 1  # the good file was still processed


@pytest.fixture
def served(tmp_path: Path, models_dir: Path) -> Iterator[str]:
    """``smartgate serve`` in its own process on a free port; yields its address."""
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*SMARTGATE, "serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"],
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
        yield address
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log_path.read_text()


def test_serve_enroll_identify_remove(served: str, faces_dir: Path, models_dir: Path) -> None:
    enroll = _run(
        [
            "enroll",
            "--server",
            served,
            "--community",
            "c1",
            "--person",
            "obama",
            "--name",
            "Barack Obama",
            str(faces_dir / "examples_obama.jpg"),
        ],
        models_dir,
    )
    assert enroll.returncode == 0, enroll.stderr
    assert json.loads(enroll.stdout)["templates"] == 1
    ident = _run(
        [
            "identify",
            "--server",
            served,
            "--community",
            "c1",
            "--json",
            str(faces_dir / "examples_obama2.jpg"),
            str(faces_dir / "examples_biden.jpg"),
        ],
        models_dir,
    )
    assert ident.returncode == 0, ident.stderr
    rows = [json.loads(line) for line in ident.stdout.splitlines()]
    assert [r["action"] for r in rows] == ["OPEN", "STRANGER"]
    assert rows[0]["faces"][0]["match"]["person_id"] == "obama"
    persons = _run(["persons", "--server", served, "--community", "c1"], models_dir)
    assert json.loads(persons.stdout)["person_id"] == "obama"
    missing = _run(
        [
            "identify",
            "--server",
            served,
            "--community",
            "nope",
            str(faces_dir / "examples_obama2.jpg"),
        ],
        models_dir,
    )
    assert missing.returncode == 1 and "community 'nope' does not exist" in missing.stderr
    removed = _run(
        ["remove", "--server", served, "--community", "c1", "--person", "obama"], models_dir
    )
    assert json.loads(removed.stdout)["templates_removed"] == 1
    again = _run(
        ["remove", "--server", served, "--community", "c1", "--person", "obama"], models_dir
    )
    assert again.returncode == 1 and "NOT_FOUND" in again.stderr


def test_missing_models_stop_start_up_with_the_fix(tmp_path: Path) -> None:
    out = _run(
        ["serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0"],
        tmp_path / "no-models",
    )
    assert out.returncode == 1
    assert "smartgate models fetch" in out.stderr


def test_detect_lists_plates_and_read_plate_reads_crops(
    shared_data: Path, models_dir: Path
) -> None:
    scene = shared_data / "plates" / "scenes" / "ccpd_00.jpg"
    out = _run(["detect", "--json", str(scene)], models_dir)
    assert out.returncode == 0, out.stderr
    plate = json.loads(out.stdout)["plates"][0]
    assert plate["text"] == "皖A0N718" and plate["color"] == "blue"
    assert set(plate) >= {"text", "raw_text", "score", "color", "corners", "box"}
    assert len(plate["corners"]) == 4
    crops = [shared_data / "plates" / "crops" / f"crop_00{i}.jpg" for i in range(3)]
    out = _run(["read-plate", "--json", *map(str, crops)], models_dir)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [Path(r["file"]).name for r in rows] == [c.name for c in crops]
    assert rows[0]["text"] == "川X90621"


def test_vehicle_commands_and_vehicle_lane(
    served: str, shared_data: Path, models_dir: Path
) -> None:
    add = _run(
        [
            "vehicle",
            "add",
            "--server",
            served,
            "--community",
            "c1",
            "--plate",
            "皖A0N718",
            "--owner",
            "unit 3-201",
        ],
        models_dir,
    )
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)["plate"] == "皖A0N718"
    listed = _run(["vehicle", "list", "--server", served, "--community", "c1"], models_dir)
    assert json.loads(listed.stdout)["owner"] == "unit 3-201"
    scene = shared_data / "plates" / "scenes" / "ccpd_00.jpg"
    ident = _run(
        [
            "identify",
            "--server",
            served,
            "--community",
            "c1",
            "--lane",
            "vehicle",
            "--json",
            str(scene),
        ],
        models_dir,
    )
    assert json.loads(ident.stdout)["action"] == "OPEN"
    removed = _run(
        ["vehicle", "remove", "--server", served, "--community", "c1", "--plate", "皖A0N718"],
        models_dir,
    )
    assert removed.returncode == 0


def test_stream_events_trajectory_and_alerts(
    served: str, faces_dir: Path, models_dir: Path, tmp_path: Path
) -> None:
    import cv2

    from benchmarks.scenes import PassageSpec, passage_frames

    def frames(photo: str, n: int) -> list[str]:
        paths = []
        for i, data in enumerate(
            passage_frames(cv2.imread(str(faces_dir / photo)), PassageSpec(frames=n))
        ):
            path = tmp_path / f"{Path(photo).stem}-{i:02d}.jpg"
            path.write_bytes(data)
            paths.append(str(path))
        return paths

    for person, photo, role in (
        ("obama", "examples_obama.jpg", "resident"),
        ("biden", "examples_biden.jpg", "watchlist"),
    ):
        out = _run(
            [
                "enroll",
                "--server",
                served,
                "--community",
                "c1",
                "--person",
                person,
                "--role",
                role,
                str(faces_dir / photo),
            ],
            models_dir,
        )
        assert out.returncode == 0, out.stderr
    out = _run(
        [
            "stream",
            "--server",
            served,
            "--community",
            "c1",
            "--gate",
            "door-1",
            "--fps",
            "25",
            *frames("examples_obama2.jpg", 10),
        ],
        models_dir,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 10
    assert [r["action"] for r in rows if r["action"] != "NONE"] == ["OPEN"]
    out = _run(
        [
            "stream",
            "--server",
            served,
            "--community",
            "c1",
            "--gate",
            "door-2",
            "--fps",
            "25",
            *frames("examples_knn_examples_train_biden_biden2.jpg", 4),
        ],
        models_dir,
    )
    assert json.loads(out.stdout.splitlines()[0])["action"] == "ALERT"
    time.sleep(2.5)  # both passages end (quiet time) and are recorded
    events = _run(["events", "--server", served, "--community", "c1", "--json"], models_dir)
    rows = [json.loads(line) for line in events.stdout.splitlines()]
    assert [(r["gate"], r["action"], r["person_id"]) for r in rows] == [
        ("door-2", "ALERT", "biden"),
        ("door-1", "OPEN", "obama"),
    ]
    assert set(rows[0]) >= {
        "id",
        "community",
        "gate",
        "kind",
        "action",
        "person_id",
        "plate",
        "score",
        "start",
        "end",
    }
    trajectory = _run(["trajectory", "--server", served, "--person", "obama"], models_dir)
    assert [json.loads(line)["gate"] for line in trajectory.stdout.splitlines()] == ["door-1"]
    alerts = subprocess.Popen(
        [*SMARTGATE, "alerts", "--server", served, "--community", "c1"],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(models_dir),
    )
    try:
        assert alerts.stdout is not None
        first = json.loads(alerts.stdout.readline())
        assert first["kind"] == "watchlist" and first["person_id"] == "biden"
    finally:
        alerts.kill()
        alerts.wait(timeout=10)
        if alerts.stdout is not None:
            alerts.stdout.close()


def test_models_fetch_also_derives_the_configured_variants(
    models_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "models"
    for name in ("retinaface-mnet025", "fr-feature", "fr-liveness", "plate-det", "plate-rec"):
        shutil.copytree(models_dir / name, cache / name)  # fetched already: only checked
    out = _run(["models", "fetch"], cache)
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    derived = {"retinaface-mnet025-int8", "fr-feature-fast", "fr-liveness-fast"}
    assert derived <= listed, out.stdout
    for name in derived:
        assert (cache / name / "manifest.json").is_file()
