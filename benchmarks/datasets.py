"""The shared real photos (``../shared/data``, or ``$SMARTGATE_DATA_DIR``) and their labels.

Used by the benchmarks and the tests; never copied into the repository.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Where the shared photos live; raises FileNotFoundError with the fix if absent."""
    path = Path(os.environ.get("SMARTGATE_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "faces" / "labels.csv").is_file():
        raise FileNotFoundError(
            f"shared photos not found at {path}; set SMARTGATE_DATA_DIR to the data folder"
        )
    return path


@dataclass(frozen=True)
class LabelledFace:
    file: str
    position: int | None  # left-to-right among the labelled subjects; None: the largest face
    identity: str
    same_photo_as: str | None

    @property
    def key(self) -> str:
        return self.file if self.position is None else f"{self.file}#{self.position}"


def face_labels(root: Path | None = None) -> list[LabelledFace]:
    """Rows of ``faces/labels.csv``."""
    path = (root or data_dir()) / "faces" / "labels.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            LabelledFace(
                file=row["file"],
                position=int(row["face_position"]) if row["face_position"] else None,
                identity=row["identity"],
                same_photo_as=row["same_photo_as"] or None,
            )
            for row in csv.DictReader(fh)
        ]


def subjects_per_file(labels: list[LabelledFace]) -> dict[str, int]:
    """How many labelled subjects each file has (1 for single-subject photos)."""
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab.file] = counts.get(lab.file, 0) + 1
    return counts


def related(a: str, b: str, labels: list[LabelledFace]) -> bool:
    """Whether two files are the same photo (one is a re-encoding or resize of the other)."""
    source = {lab.file: lab.same_photo_as or lab.file for lab in labels}
    return source.get(a, a) == source.get(b, b)
