"""onnxruntime on the CPU: one InferenceSession per model, created once, shared by threads."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np
import onnxruntime as ort

from recognizer.backends.base import BackendOptions, zero_feeds
from recognizer.models.store import LoadedModel
from smartgate.errors import ModelError

PROVIDERS = ["CPUExecutionProvider"]


def session_options(options: BackendOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning threads of several sessions in one process steal each other's cores.
    so.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if options.allow_spinning else "0"
    )
    return so


class OnnxRuntimeBackend:
    """An ``InferenceBackend`` for a verified model file. ``run`` is thread-safe."""

    def __init__(self, model: LoadedModel, options: BackendOptions | None = None) -> None:
        self.model = model
        self.options = options or BackendOptions()
        self._lock = threading.Lock()
        name = model.manifest.name
        try:
            session = ort.InferenceSession(
                str(model.path), sess_options=session_options(self.options), providers=PROVIDERS
            )
        except Exception as exc:  # onnxruntime raises its own non-public exception types
            raise ModelError(
                f"model '{name}': onnxruntime cannot load {model.path}: {exc}"
            ) from exc
        self._input_names = tuple(i.name for i in session.get_inputs())
        self._output_names = tuple(o.name for o in session.get_outputs())
        manifest = model.manifest
        if manifest.input.name not in self._input_names:
            raise ModelError(
                f"model '{name}': its manifest names input '{manifest.input.name}', "
                f"the model has {list(self._input_names)}"
            )
        missing = [o for o in manifest.outputs if o not in self._output_names]
        if missing:
            raise ModelError(
                f"model '{name}': its manifest names output(s) {missing}, "
                f"the model has {list(self._output_names)}"
            )
        self._session: ort.InferenceSession | None = session

    @property
    def name(self) -> str:
        return self.model.manifest.name

    @property
    def input_names(self) -> Sequence[str]:
        return self._input_names

    @property
    def output_names(self) -> Sequence[str]:
        return self._output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session  # a local reference survives a concurrent close()
        if session is None:
            raise ModelError(f"model '{self.name}': the backend is closed")
        try:
            outputs = session.run(None, dict(feeds))
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException
            shapes = {k: tuple(np.shape(v)) for k, v in feeds.items()}
            raise ModelError(f"model '{self.name}': inference failed for {shapes}: {exc}") from exc
        return dict(zip(self._output_names, outputs, strict=True))

    def warm_up(self, feeds: Mapping[str, np.ndarray] | None = None, runs: int = 1) -> None:
        """Run once or more so that the first real request does not pay for allocation."""
        feeds = zero_feeds(self.model.manifest) if feeds is None else feeds
        for _ in range(runs):
            self.run(feeds)

    def close(self) -> None:
        with self._lock:
            self._session = None

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._session is None else "open"
        return f"OnnxRuntimeBackend({self.name!r}, {self.options}, {state})"
