"""Build a ready ``FaceAnalyzer`` from the configuration: load, verify and warm the models."""

from __future__ import annotations

from recognizer.backends.factory import make_backend
from recognizer.faces.analyzer import FaceAnalyzer
from recognizer.faces.detector import FaceDetector
from recognizer.faces.embedder import FaceEmbedder
from recognizer.faces.liveness import LivenessScorer
from recognizer.faces.quality import QualityThresholds
from recognizer.models.store import ModelStore
from smartgate.config import Config


def build_face_analyzer(config: Config, warm: bool = True) -> FaceAnalyzer:
    """Load the detector, embedder and liveness models named in ``config.models``.

    Raises ``ModelError`` (with the command that fixes it) when a model is missing or altered.
    """
    store = ModelStore(config.models.cache_dir)
    names = [config.models.detector, config.models.embedder]
    if config.models.liveness:
        names.append(config.models.liveness)
    # One start-up check that reports every missing or altered model at once.
    loaded = store.verify_all(names)
    det_model, emb_model = loaded[0], loaded[1]
    live_model = loaded[2] if config.models.liveness else None
    detector = FaceDetector(
        make_backend(det_model, config.models),
        det_model.manifest,
        long_side=config.detect.long_side,
        score_threshold=config.detect.score_threshold,
        nms_iou=config.detect.nms_iou,
        max_faces=config.detect.max_faces,
    )
    embedder = FaceEmbedder(make_backend(emb_model, config.models), emb_model.manifest)
    liveness = (
        LivenessScorer(make_backend(live_model, config.models), live_model.manifest)
        if live_model is not None
        else None
    )
    q = config.quality
    analyzer = FaceAnalyzer(
        detector,
        embedder,
        liveness,
        QualityThresholds(q.min_face_px, q.min_sharpness, q.max_yaw_ratio),
        parallel_liveness=config.models.parallel_liveness,
    )
    if warm:
        analyzer.warm_up()
    return analyzer
