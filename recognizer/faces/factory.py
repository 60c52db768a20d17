"""Build a ready ``FaceAnalyzer`` from the configuration: load, verify and warm the models."""

from __future__ import annotations

from recognizer.backends.base import BackendOptions
from recognizer.backends.onnxrt import OnnxRuntimeBackend
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
    options = BackendOptions(
        intra_op_threads=config.models.intra_op_threads,
        allow_spinning=config.models.allow_spinning,
    )
    names = [config.models.detector, config.models.embedder]
    if config.models.liveness:
        names.append(config.models.liveness)
    # One start-up check that reports every missing or altered model at once.
    loaded = store.verify_all(names)
    det_model, emb_model = loaded[0], loaded[1]
    live_model = loaded[2] if config.models.liveness else None
    detector = FaceDetector(
        OnnxRuntimeBackend(det_model, options),
        det_model.manifest,
        long_side=config.detect.long_side,
        score_threshold=config.detect.score_threshold,
        nms_iou=config.detect.nms_iou,
        max_faces=config.detect.max_faces,
    )
    embedder = FaceEmbedder(OnnxRuntimeBackend(emb_model, options), emb_model.manifest)
    liveness = (
        LivenessScorer(OnnxRuntimeBackend(live_model, options), live_model.manifest)
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
