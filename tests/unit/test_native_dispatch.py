"""``native`` backend selection: Cython by default, ``SMARTGATE_NATIVE=reference``, no fallback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import native
from native import reference

REPO = Path(__file__).resolve().parents[2]


def test_reference_backend_uses_the_numpy_references() -> None:
    backend = native._load_backend("reference")
    assert backend.name == "reference"
    assert backend.decode_detections is reference.decode_detections_ref
    assert backend.match_identities is reference.match_identities_ref
    assert backend.ctc_greedy_decode is reference.ctc_greedy_decode_ref
    assert backend.vote_and_best is reference.vote_and_best_ref


def test_unknown_backend_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"SMARTGATE_NATIVE must be one of .* got 'fast'"):
        native._load_backend("fast")


@pytest.mark.parametrize(
    "module", ["native._detect_cy", "native._match_cy", "native._ctc_cy", "native._track_cy"]
)
def test_missing_extension_raises_import_error(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail like a missing .so
    with pytest.raises(ImportError, match=r"run `pip install -e \.`"):
        native._load_backend("cython")


@pytest.mark.parametrize(("env", "expected"), [(None, "cython"), ("reference", "reference")])
def test_environment_selects_and_logs_backend(env: str | None, expected: str) -> None:
    environ = {k: v for k, v in os.environ.items() if k != native.ENV_VAR}
    if env is not None:
        environ[native.ENV_VAR] = env
    code = (
        "import logging; logging.basicConfig(level=logging.INFO, format='%(message)s'); "
        "import native; print(native.BACKEND)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == expected
    assert f"{expected} backend loaded" in result.stderr


def test_public_functions_agree_with_both_backends() -> None:
    rng = np.random.default_rng(0)
    priors = native.prior_boxes(64, 96)
    p = priors.shape[0]
    head = (
        rng.normal(0, 1, (p, 4)).astype(np.float32),
        (rng.permutation(p) / p).astype(np.float32),
        rng.normal(0, 1, (p, 10)).astype(np.float32),
        priors,
    )
    probs = rng.random((2, 10, 30), dtype=np.float32)
    sims = rng.random((4, 6), dtype=np.float32)
    keys = rng.integers(-1, 3, (4, 6))
    for name in ("cython", "reference"):
        backend = native._load_backend(name)
        det = backend.decode_detections(*head, score_threshold=0.6, nms_iou=0.4)
        np.testing.assert_allclose(
            native.decode_detections(*head, score_threshold=0.6, nms_iou=0.4).boxes,
            det.boxes,
            rtol=1e-5,
            atol=1e-4,
        )
        ctc = backend.ctc_greedy_decode(probs, 0)
        np.testing.assert_array_equal(native.ctc_greedy_decode(probs).labels, ctc.labels)
        match = backend.match_identities(sims, keys, 0.5, 0.1)
        np.testing.assert_array_equal(
            native.match_identities(sims, keys, 0.5, 0.1).person, match.person
        )
