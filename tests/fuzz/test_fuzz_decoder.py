"""Fuzz the image decoder: random bytes, mutated real JPEG/PNG files and bombs.

Default suite: a derandomized batch; ``make fuzz FUZZ_SECONDS=N`` runs it for N seconds and
keeps what fails under ``regressions/decode/``.
"""

from __future__ import annotations

from harness import REGRESSIONS, fuzz_seconds, run_target
from targets import decode_target

DEFAULT_EXAMPLES = 300


def test_decoder_only_decodes_or_raises_decode_error() -> None:
    seconds = fuzz_seconds()
    stats = run_target(
        decode_target(),
        max_examples=DEFAULT_EXAMPLES,
        seconds=seconds,
        save_to=REGRESSIONS if seconds else None,
    )
    print(stats.line())
    assert stats.inputs >= DEFAULT_EXAMPLES
    assert not stats.failures, "\n".join(f"{f.error} <- {f.data[:64]!r}" for f in stats.failures)
