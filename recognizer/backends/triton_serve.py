"""A real Triton server (PyTriton) serving the cached ONNX models, for tests and benchmarks.

Runs inside ``.venv-triton`` (``make triton-venv``: ``nvidia-pytriton``, ``onnxruntime`` and
``numpy<2``), never in the project's environment, so it imports nothing from the project: it
reads each model's manifest JSON itself, checks the model file's sha256 against it, and binds one
PyTriton callable per model under the manifest's name with the manifest's input and output names.
The callable runs onnxruntime on the CPU over the same file the in-process backend loads, with
Triton's dynamic batching in front (requests of one shape are concatenated along the batch axis).

    .venv-triton/bin/python recognizer/backends/triton_serve.py \\
        --models-dir ~/.cache/smartgate/models --model fr-feature --model retinaface-mnet025 \\
        --grpc-port 8001 --http-port 8000 --metrics-port 8002 --workspace /tmp/triton-ws

When every model is loaded it prints one line ``SMARTGATE_TRITON_READY grpc=HOST:PORT
http=HOST:PORT metrics=HOST:PORT``; SIGINT stops it cleanly (SIGTERM leaves a server copy in
PyTriton's cache). For GPU servers use ``smartgate triton export`` and the real onnxruntime or
TensorRT backends instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_PREFIX = "SMARTGATE_TRITON_READY"
MANIFEST_FILE = "manifest.json"

Requests = Sequence[Any]  # PyTriton ``Request`` objects: mappings of input name → array


@dataclass(frozen=True)
class ServedModel:
    """One model to bind: its manifest's name, file, input and outputs."""

    name: str
    path: Path
    input_name: str
    outputs: tuple[str, ...]


def resolve_manifest(models_dir: Path, ref: str) -> Path:
    """A model name (``<models_dir>/<name>/manifest.json``) or a manifest path."""
    if ref.endswith(".json") or "/" in ref:
        return Path(ref).expanduser()
    return models_dir / ref / MANIFEST_FILE


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_served_model(manifest_path: Path) -> ServedModel:
    """Read a manifest and verify its model file; ``SystemExit`` with the reason otherwise."""
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"triton_serve: cannot read manifest {manifest_path}: {exc}") from exc
    try:
        name, file, sha = data["name"], data["file"], data["sha256"]
        input_name, outputs = data["input"]["name"], tuple(data["outputs"])
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"triton_serve: manifest {manifest_path} lacks {exc}") from exc
    path = manifest_path.parent / file
    if not path.is_file():
        raise SystemExit(f"triton_serve: model '{name}': {path} is missing")
    actual = sha256_file(path)
    if actual != sha:
        raise SystemExit(
            f"triton_serve: model '{name}' at {path} is altered: sha256 expected {sha}, "
            f"actual {actual}"
        )
    return ServedModel(name=name, path=path, input_name=input_name, outputs=outputs)


def make_infer(
    run: Callable[[dict[str, Any]], list[Any]], output_names: Sequence[str]
) -> Callable[[Requests], list[dict[str, Any]]]:
    """A PyTriton callable over ``run`` (onnxruntime's ``session.run(names, feeds)``).

    Triton hands over the requests its dynamic batcher gathered; requests whose inputs have
    the same shapes (all but the batch axis) are concatenated, run once and split back.
    """
    import numpy as np

    def infer(requests: Requests) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, request in enumerate(requests):
            key = tuple((k, np.shape(request[k])[1:]) for k in sorted(request.keys()))
            groups.setdefault(key, []).append(i)
        answers: list[dict[str, Any]] = [{} for _ in requests]
        for members in groups.values():
            names = sorted(requests[members[0]].keys())
            feeds = {k: np.concatenate([requests[i][k] for i in members]) for k in names}
            outputs = run(feeds)
            start = 0
            for i in members:
                n = int(np.shape(requests[i][names[0]])[0])
                answers[i] = {o: outputs[j][start : start + n] for j, o in enumerate(output_names)}
                start += n
        return answers

    return infer


def bind_model(triton: Any, model: ServedModel, args: argparse.Namespace) -> None:
    """Load ``model`` into an onnxruntime session and bind it to ``triton``."""
    import numpy as np
    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model.path), so, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    if model.input_name not in inputs:
        raise SystemExit(
            f"triton_serve: model '{model.name}': manifest input '{model.input_name}' is not in "
            f"the graph {sorted(inputs)}"
        )
    missing = [o for o in model.outputs if o not in outputs]
    if missing:
        raise SystemExit(f"triton_serve: model '{model.name}': graph lacks outputs {missing}")
    # Every graph output is served (the in-process backend returns them all too).
    out_names = [o.name for o in session.get_outputs()]

    def dims(shape: Sequence[Any]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in shape[1:])

    def run(feeds: dict[str, Any]) -> list[Any]:
        return list(session.run(out_names, feeds))

    preferred = [s for s in args.preferred if s <= args.max_batch]
    triton.bind(
        model_name=model.name,
        infer_func=make_infer(run, out_names),
        inputs=[
            Tensor(name=i.name, dtype=np.float32, shape=dims(i.shape)) for i in inputs.values()
        ],
        outputs=[Tensor(name=o, dtype=np.float32, shape=dims(outputs[o].shape)) for o in out_names],
        config=ModelConfig(
            batching=True,
            max_batch_size=args.max_batch,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=args.queue_delay_us,
                preferred_batch_size=preferred or None,
            ),
        ),
        strict=True,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, required=True, help="the smartgate model cache")
    p.add_argument(
        "--model", action="append", required=True, help="a model name or manifest path (repeat)"
    )
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--workspace", type=Path, required=True, help="must not exist yet")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--preferred", type=int, nargs="*", default=[4, 8])
    p.add_argument("--queue-delay-us", type=int, default=500)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    p.add_argument("--log-verbose", type=int, default=0)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    models = [load_served_model(resolve_manifest(args.models_dir, m)) for m in args.model]
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        http_address=args.address,
        http_port=args.http_port,
        grpc_address=args.address,
        grpc_port=args.grpc_port,
        metrics_address=args.address,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
        exit_on_error=True,
        strict_readiness=True,
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        for model in models:
            bind_model(triton, model, args)
        triton.run()
        print(
            f"{READY_PREFIX} grpc={args.address}:{args.grpc_port} "
            f"http={args.address}:{args.http_port} metrics={args.address}:{args.metrics_port} "
            f"models={','.join(m.name for m in models)}",
            flush=True,
        )
        triton.serve()  # until SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
