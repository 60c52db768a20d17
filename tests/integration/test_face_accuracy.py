"""Recognition accuracy on the shared photos (the protocol in benchmarks/face_accuracy.py)."""

from __future__ import annotations

import pytest

from benchmarks.face_accuracy import evaluate
from cluster.engine import match_threshold

pytestmark = pytest.mark.integration


def test_rank1_and_open_set_on_real_photos(face_analyzer, base_config) -> None:  # type: ignore[no-untyped-def]
    threshold = match_threshold(base_config, face_analyzer)
    report = evaluate(face_analyzer, threshold, base_config.match.margin)
    print(report.table())
    assert not report.missing_labels, report.missing_labels
    assert report.probes >= 20
    assert report.rank1 >= 0.97, report.failures
    assert report.false_accepts == [], report.false_accepts
    assert report.background_accepts == [], report.background_accepts
    # The score distributions stay well apart at the operating threshold.
    assert report.genuine.mean() - report.impostor.mean() > 0.5
