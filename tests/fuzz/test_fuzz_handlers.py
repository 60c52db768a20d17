"""Fuzz every RPC through a real gRPC server (real models, real SQLite and FAISS).

Hostile field values, mutated and random request bytes, for every method of Capture, Registry
and Search: each call ends OK or with a clear non-INTERNAL status, the server keeps serving,
and a person enrolled before (in a community the fuzzer never names) is still listed and
recognised after. ``make fuzz FUZZ_SECONDS=N`` runs it for N seconds.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from harness import REGRESSIONS, fuzz_seconds, run_target
from targets import check_no_event_lost, check_sentinel, grpc_target, photo, plant_sentinel

from cluster.node import Node

pytestmark = pytest.mark.integration

DEFAULT_EXAMPLES = 60


def test_every_rpc_survives_hostile_requests(
    node: Node, channel: grpc.Channel, faces_dir: Path
) -> None:
    plant_sentinel(channel, photo(faces_dir, "examples_obama.jpg"))
    seconds = fuzz_seconds()
    stats = run_target(
        grpc_target(channel),
        max_examples=DEFAULT_EXAMPLES,
        seconds=seconds,
        save_to=REGRESSIONS if seconds else None,
    )
    print(stats.line())
    assert stats.inputs >= DEFAULT_EXAMPLES
    assert not stats.failures, "\n".join(f"{f.error} <- {f.data[:96]!r}" for f in stats.failures)
    check_sentinel(channel, photo(faces_dir, "examples_obama2.jpg"))
    check_no_event_lost(node)
