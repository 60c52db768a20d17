"""The Triton backend: the ``InferenceBackend`` interface over a Triton server's gRPC API.

The server serves each model under its manifest's name with the manifest's input and output
names (``smartgate triton export`` writes such a repository for a GPU server;
``recognizer/backends/triton_serve.py`` serves the cached ONNX files through PyTriton), so the
face and plate pipelines run unchanged against either backend.

Construction checks that the server answers, that the model is loaded, and that its metadata
has the manifest's input and outputs; it raises ``UnavailableError`` when the server cannot be
reached and ``ModelError`` when the model is not served or does not match. Each call has one
time budget (``timeout_s``, retries included); only ``UNAVAILABLE`` is retried, with an
exponential backoff. One gRPC client per backend, shared by threads (tritonclient's gRPC
client is thread-safe).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from recognizer.backends.base import zero_feeds
from recognizer.models.manifest import ModelManifest
from smartgate.config import ModelsConfig
from smartgate.errors import ModelError, UnavailableError

T = TypeVar("T")

# Unlimited messages (a 640×640 detector input is 4.9 MB); a lost server is retried within a
# second of its return instead of gRPC's default backoff of up to two minutes.
CHANNEL_ARGS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class TritonClientOptions:
    """How the client talks to the server.

    ``timeout_s``: the budget of one call (construction checks, one ``run``), retries included.
    ``retries``: further attempts after an ``UNAVAILABLE`` answer, ``backoff_s`` × 2^k apart.
    """

    timeout_s: float = 5.0
    retries: int = 2
    backoff_s: float = 0.05

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {self.backoff_s}")

    @classmethod
    def from_config(cls, models: ModelsConfig) -> TritonClientOptions:
        return cls(timeout_s=models.triton_timeout_s, retries=models.triton_retries)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor in the server's model metadata; ``shape`` has -1 for dynamic sides."""

    name: str
    datatype: str  # Triton's: "FP32", "INT64" ...
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(triton_to_np_dtype(self.datatype))


def _status(exc: InferenceServerException) -> str:
    """``"UNAVAILABLE"``, ``"NOT_FOUND"`` ... or ``""`` for errors raised by the client."""
    return str(exc.status() or "").removeprefix("StatusCode.")


class TritonBackend:
    """An ``InferenceBackend`` for one model on a Triton server (``url`` is ``HOST:PORT``).

    ``model_name`` defaults to the manifest's name. ``run`` is thread-safe; batches larger
    than the server's ``max_batch_size`` are sent in slices and joined.
    """

    def __init__(
        self,
        manifest: ModelManifest,
        url: str,
        options: TritonClientOptions | None = None,
        model_name: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.url = url
        self.options = options or TritonClientOptions()
        self.model_name = model_name or manifest.name
        self._lock = threading.Lock()
        self._client: grpcclient.InferenceServerClient | None = grpcclient.InferenceServerClient(
            url, channel_args=CHANNEL_ARGS
        )
        try:
            self._inputs, self._outputs, self.max_batch_size = self._describe()
        except BaseException:
            self.close()
            raise
        self._input_names = tuple(t.name for t in self._inputs)
        self._output_names = tuple(t.name for t in self._outputs)

    # --- construction checks ----------------------------------------------------------------

    def _describe(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], int]:
        """Server live, model ready, metadata matching the manifest; the model's tensors."""
        client = self._require_client()
        if not self._call("liveness check", lambda t: client.is_server_live(client_timeout=t)):
            raise UnavailableError(f"Triton server at {self.url} is not live")
        ready = self._call(
            "readiness check", lambda t: client.is_model_ready(self.model_name, client_timeout=t)
        )
        if not ready:
            raise ModelError(
                f"model '{self.model_name}' is not loaded on the Triton server at {self.url}; "
                "serve it there (`smartgate triton export DIR` writes a model repository)"
            )
        meta = self._call(
            "metadata request",
            lambda t: client.get_model_metadata(self.model_name, as_json=True, client_timeout=t),
        )
        config = self._call(
            "config request",
            lambda t: client.get_model_config(self.model_name, as_json=True, client_timeout=t),
        )
        inputs = tuple(_spec(t) for t in meta.get("inputs", []))
        outputs = tuple(_spec(t) for t in meta.get("outputs", []))
        self._check_names(inputs, outputs)
        max_batch = int(config.get("config", {}).get("max_batch_size", 0) or 0)
        return inputs, outputs, max_batch

    def _check_names(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
        names_in = [t.name for t in inputs]
        names_out = [t.name for t in outputs]
        if self.manifest.input.name not in names_in:
            raise ModelError(
                f"model '{self.model_name}' on Triton at {self.url}: its manifest names input "
                f"'{self.manifest.input.name}', the served model has {names_in}"
            )
        missing = [o for o in self.manifest.outputs if o not in names_out]
        if missing:
            raise ModelError(
                f"model '{self.model_name}' on Triton at {self.url}: its manifest names "
                f"output(s) {missing}, the served model has {names_out}"
            )

    # --- InferenceBackend -------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def input_names(self) -> Sequence[str]:
        return self._input_names

    @property
    def output_names(self) -> Sequence[str]:
        return self._output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs (batch first) → every named output of the model (batch first).

        Raises ``ModelError`` for inputs the model refuses and ``UnavailableError`` when the
        server does not answer within ``options.timeout_s``.
        """
        arrays = self._checked_feeds(feeds)
        n = int(next(iter(arrays.values())).shape[0]) if arrays else 0
        step = self.max_batch_size
        if step <= 0 or n <= step:
            return self._infer(arrays)
        parts = [
            self._infer({k: v[i : i + step] for k, v in arrays.items()}) for i in range(0, n, step)
        ]
        return {o: np.concatenate([p[o] for p in parts]) for o in self._output_names}

    def _checked_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        by_name = {t.name: t for t in self._inputs}
        unknown = [k for k in feeds if k not in by_name]
        if unknown:
            raise ModelError(
                f"model '{self.name}': no input(s) named {unknown} (inputs: {list(by_name)})"
            )
        arrays: dict[str, np.ndarray] = {}
        for key, value in feeds.items():
            arr = np.asarray(value)
            if arr.dtype != by_name[key].dtype:
                raise ModelError(
                    f"model '{self.name}': input '{key}' must be {by_name[key].dtype}, "
                    f"got {arr.dtype}"
                )
            arrays[key] = np.ascontiguousarray(arr)
        return arrays

    def _infer(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        client = self._require_client()
        datatypes = {t.name: t.datatype for t in self._inputs}
        inputs = []
        for key, arr in arrays.items():
            tensor = grpcclient.InferInput(key, list(arr.shape), datatypes[key])
            tensor.set_data_from_numpy(arr)
            inputs.append(tensor)
        wanted = [grpcclient.InferRequestedOutput(o) for o in self._output_names]
        result = self._call(
            "inference",
            lambda t: client.infer(self.model_name, inputs, outputs=wanted, client_timeout=t),
            shapes={k: tuple(v.shape) for k, v in arrays.items()},
        )
        # as_numpy views the response's bytes read-only; callers get their own arrays, as
        # from onnxruntime.
        return {o: np.array(result.as_numpy(o)) for o in self._output_names}

    def health(self) -> bool:
        """Whether the server is live and this model ready (one quick attempt, never raises)."""
        client = self._client
        if client is None:
            return False
        timeout = min(1.0, self.options.timeout_s)
        try:
            return bool(
                client.is_server_live(client_timeout=timeout)
                and client.is_model_ready(self.model_name, client_timeout=timeout)
            )
        except InferenceServerException:
            return False

    def warm_up(self, feeds: Mapping[str, np.ndarray] | None = None, runs: int = 1) -> None:
        """Run once or more (the server side allocates on the first request too)."""
        feeds = zero_feeds(self.manifest) if feeds is None else feeds
        for _ in range(runs):
            self.run(feeds)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> TritonBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._client is None else "open"
        return f"TritonBackend({self.model_name!r}, {self.url!r}, {self.options}, {state})"

    # --- calls, retries and errors ----------------------------------------------------------

    def _require_client(self) -> grpcclient.InferenceServerClient:
        client = self._client  # a local reference survives a concurrent close()
        if client is None:
            raise ModelError(f"model '{self.name}': the backend is closed")
        return client

    def _call(
        self,
        what: str,
        fn: Callable[[float], T],
        shapes: Mapping[str, tuple[int, ...]] | None = None,
    ) -> T:
        """``fn(seconds_left)`` within the time budget, retrying ``UNAVAILABLE`` answers."""
        opts = self.options
        deadline = time.monotonic() + opts.timeout_s
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UnavailableError(
                    f"Triton server at {self.url}: no answer to the {what} for model "
                    f"'{self.model_name}' within {opts.timeout_s:g} s ({attempt} attempts)"
                )
            try:
                return fn(left)
            except InferenceServerException as exc:
                attempt += 1
                if _status(exc) == "UNAVAILABLE" and attempt <= opts.retries:
                    time.sleep(min(opts.backoff_s * 2 ** (attempt - 1), max(0.0, left)))
                    continue
                raise self._error(what, exc, attempt, shapes) from exc

    def _error(
        self,
        what: str,
        exc: InferenceServerException,
        attempts: int,
        shapes: Mapping[str, tuple[int, ...]] | None,
    ) -> Exception:
        status = _status(exc)
        where = f"Triton server at {self.url}"
        model = f"model '{self.model_name}'"
        if status == "UNAVAILABLE":
            return UnavailableError(
                f"{where} is unavailable ({what} for {model}, {attempts} attempts within "
                f"{self.options.timeout_s:g} s): {exc.message()}"
            )
        if status == "DEADLINE_EXCEEDED":
            return UnavailableError(
                f"{where}: no answer to the {what} for {model} within {self.options.timeout_s:g} s"
            )
        if status == "NOT_FOUND":
            return ModelError(f"{model} is not served by the {where}: {exc.message()}")
        detail = f" for {dict(shapes)}" if shapes else ""
        return ModelError(f"{model} on {where}: {what} failed{detail}: {exc.message()}")


def _spec(tensor: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(
        name=str(tensor["name"]),
        datatype=str(tensor["datatype"]),
        shape=tuple(int(d) for d in tensor.get("shape", [])),
    )
