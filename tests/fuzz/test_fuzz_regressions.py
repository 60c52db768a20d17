"""Replay every kept fuzz failure (``regressions/<target>/*.bin``) in the default suite.

Each file is an input that once crashed or misbehaved; the fix made it pass, and this keeps it
passing. ``make fuzz`` adds files here when it finds a new failure.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from harness import REGRESSIONS, regressions
from targets import (
    check_decode,
    check_no_event_lost,
    check_sentinel,
    grpc_target,
    photo,
    plant_sentinel,
)

from cluster.node import Node

KNOWN_TARGETS = {"decode", "grpc"}


def test_every_regression_folder_has_a_replayer() -> None:
    folders = {p.name for p in REGRESSIONS.iterdir() if p.is_dir()}
    assert folders <= KNOWN_TARGETS, f"no replayer for {sorted(folders - KNOWN_TARGETS)}"
    assert regressions("grpc"), "the kept malformed-request inputs are missing"


# No decoder input has failed yet; the replayer appears with the first one ``make fuzz`` keeps
# (an empty parametrisation would only show up as a permanent skip).
if regressions("decode"):

    @pytest.mark.parametrize("path", regressions("decode"), ids=lambda p: p.name)
    def test_kept_decoder_inputs(path: Path) -> None:
        check_decode(path.read_bytes())


@pytest.mark.integration
def test_kept_rpc_inputs(node: Node, channel: grpc.Channel, faces_dir: Path) -> None:
    plant_sentinel(channel, photo(faces_dir, "examples_obama.jpg"))
    check = grpc_target(channel).check
    failures = []
    for path in regressions("grpc"):
        try:
            check(path.read_bytes())
        except AssertionError as exc:
            failures.append(f"{path.name}: {exc}")
    assert not failures, "\n".join(failures)
    check_sentinel(channel, photo(faces_dir, "examples_obama2.jpg"))
    check_no_event_lost(node)
