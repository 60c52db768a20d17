"""The one place a backend is chosen: ``models.backend`` names onnxruntime or Triton."""

from __future__ import annotations

from recognizer.backends.base import BackendOptions, InferenceBackend
from recognizer.models.store import LoadedModel
from smartgate.config import ModelsConfig

BACKENDS = ("onnxruntime", "triton")


def make_backend(model: LoadedModel, models: ModelsConfig) -> InferenceBackend:
    """A backend for a verified model, as ``models.backend`` says.

    ``"triton"`` connects to ``models.triton_url`` and checks that the server serves the model
    under its manifest's name with the manifest's tensors (``ModelError`` otherwise,
    ``UnavailableError`` when the server does not answer).
    """
    if models.backend == "triton":
        from recognizer.backends.triton import TritonBackend, TritonClientOptions

        return TritonBackend(
            model.manifest, models.triton_url, TritonClientOptions.from_config(models)
        )
    from recognizer.backends.onnxrt import OnnxRuntimeBackend

    return OnnxRuntimeBackend(model, BackendOptions.from_config(models))
