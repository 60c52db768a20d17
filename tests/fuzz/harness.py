"""A small fuzz driver over hypothesis: bounded by examples or by seconds, counting the inputs
tried, and keeping each failing input (hypothesis's shrunk example) as a regression file.

A target is a name, a strategy of ``bytes`` and a check that raises on a bug. Every input is
bytes so that a kept failure is one file, ``regressions/<target>/<sha1 prefix>.bin``, replayed
by ``test_fuzz_regressions.py`` in the default suite.

Default suite: a few derandomized examples per target. ``make fuzz FUZZ_SECONDS=N`` sets
``SMARTGATE_FUZZ_SECONDS``: each target then runs for N seconds in batches with fresh seeds,
prints its figures and keeps the failures it finds.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
SECONDS_ENV = "SMARTGATE_FUZZ_SECONDS"
BATCH_EXAMPLES = 200


@dataclass(frozen=True)
class Target:
    name: str  # also the regressions sub-folder
    strategy: st.SearchStrategy[bytes]
    check: Callable[[bytes], None]  # raises on a bug


@dataclass(frozen=True)
class Failure:
    target: str
    error: str
    data: bytes
    path: Path | None


@dataclass
class Stats:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    batches: int = 0
    failures: list[Failure] = field(default_factory=list)

    def line(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0.0
        return (
            f"fuzz {self.target}: {self.inputs} inputs in {self.seconds:.1f} s "
            f"({rate:.1f}/s, {self.batches} batches), {len(self.failures)} failures"
        )


def fuzz_seconds() -> float | None:
    """``SMARTGATE_FUZZ_SECONDS`` as a positive number, or None (the short default run)."""
    text = os.environ.get(SECONDS_ENV, "").strip()
    if not text:
        return None
    value = float(text)
    if value <= 0:
        raise ValueError(f"{SECONDS_ENV} must be > 0, got {text!r}")
    return value


def keep(target: str, data: bytes, root: Path = REGRESSIONS) -> Path:
    """Write ``data`` as a regression input of ``target`` (idempotent)."""
    folder = root / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:16]}.bin"
    if not path.exists():
        path.write_bytes(data)
    return path


def regressions(target: str, root: Path = REGRESSIONS) -> list[Path]:
    """The kept inputs of ``target``, in name order."""
    folder = root / target
    return sorted(folder.glob("*.bin")) if folder.is_dir() else []


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:500] + "..."


def run_target(
    target: Target,
    *,
    max_examples: int = BATCH_EXAMPLES,
    seconds: float | None = None,
    seed: int = 0,
    save_to: Path | None = None,
) -> Stats:
    """Fuzz ``target``: one derandomized batch of ``max_examples`` without ``seconds``; with
    it, seeded batches until the time is up. Failures (shrunk) are returned and, with
    ``save_to``, kept there as regression files."""
    stats = Stats(target.name)
    last: list[tuple[bytes, BaseException]] = []

    def body(data: bytes) -> None:
        stats.inputs += 1
        try:
            target.check(data)
        except Exception as exc:
            last[:] = [(data, exc)]
            raise

    started = time.monotonic()
    seen: set[str] = set()
    for batch in _batches(seconds, started):
        config = settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=seconds is None,
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
        test = given(target.strategy)(body)
        test = config(test)
        if seconds is not None:
            test = hypothesis.seed(seed + batch)(test)
        stats.batches += 1
        last.clear()
        try:
            test()
        except Exception:  # hypothesis re-raises the shrunk example's error
            if not last:  # the strategy or hypothesis itself failed, not the target
                raise
            data, error = last[0]
            text = _error_text(error)
            if text in seen:
                continue
            seen.add(text)
            path = keep(target.name, data, save_to) if save_to is not None else None
            stats.failures.append(Failure(target.name, text, data, path))
    stats.seconds = time.monotonic() - started
    return stats


def _batches(seconds: float | None, started: float) -> Iterator[int]:
    batch = 0
    while True:
        yield batch
        batch += 1
        if seconds is None or time.monotonic() - started >= seconds:
            return
