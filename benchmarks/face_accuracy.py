"""Face recognition accuracy on the shared photos.

Protocol: enrol one photo per identity (its first labelled photo), identify every other
labelled face (never against a re-encoding of its own gallery photo): rank-1 correct and
accepted. Open set: for each identity, remove it from the gallery and check none of its faces
is accepted as anyone; unlabelled background faces must match nobody either. Also prints the
genuine/impostor cosine table over all independent pairs.

Run: ``python -m benchmarks.face_accuracy`` (``make bench-accuracy``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.datasets import LabelledFace, data_dir, face_labels, related, subjects_per_file
from indexer.registry import FaceRegistry
from recognizer.faces.analyzer import FaceAnalyzer, FaceObservation
from recognizer.image import DecodeLimits, decode


@dataclass(frozen=True)
class Sample:
    label: LabelledFace
    face: FaceObservation


@dataclass
class AccuracyReport:
    threshold: float
    margin: float
    probes: int = 0
    rank1_correct: int = 0
    failures: list[str] = field(default_factory=list)
    open_set_trials: int = 0
    false_accepts: list[str] = field(default_factory=list)
    background_faces: int = 0
    background_accepts: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)
    genuine: np.ndarray = field(default_factory=lambda: np.zeros(0))
    impostor: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def rank1(self) -> float:
        return self.rank1_correct / self.probes if self.probes else 0.0

    def table(self) -> str:
        g, i = self.genuine, self.impostor
        d_prime = (
            (g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2) if g.size and i.size else 0
        )
        lines = [
            f"threshold {self.threshold:.3f}, margin {self.margin:.3f}",
            f"rank-1 identification: {self.rank1_correct}/{self.probes} = {100 * self.rank1:.1f} %",
            f"open set (identity left out): {len(self.false_accepts)} false accepts "
            f"in {self.open_set_trials} faces",
            f"background faces: {len(self.background_accepts)} accepted of {self.background_faces}",
            "",
            "| pairs | n | mean | std | min | max |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in (("genuine", g), ("impostor", i)):
            if s.size:
                lines.append(
                    f"| {name} | {s.size} | {s.mean():.3f} | {s.std():.3f} | {s.min():.3f} "
                    f"| {s.max():.3f} |"
                )
        lines.append(f"\nd' = {d_prime:.2f}")
        if g.size and i.size:
            fr = int((g < self.threshold).sum())
            fa = int((i >= self.threshold).sum())
            lines.append(f"at the threshold: {fr} genuine pairs below, {fa} impostor pairs above")
        for title, rows in (
            ("rank-1 failures", self.failures),
            ("false accepts", self.false_accepts + self.background_accepts),
            ("labelled faces not found", self.missing_labels),
        ):
            if rows:
                lines.append(f"\n{title}:")
                lines.extend(f"  {r}" for r in rows)
        return "\n".join(lines)


def collect(
    analyzer: FaceAnalyzer, root: Path, labels: list[LabelledFace]
) -> tuple[list[Sample], list[tuple[str, FaceObservation]], list[str]]:
    """Analyse every labelled photo: the labelled faces, the usable background faces and the
    labels whose face was not found."""
    counts = subjects_per_file(labels)
    samples: list[Sample] = []
    background: list[tuple[str, FaceObservation]] = []
    missing: list[str] = []
    limits = DecodeLimits()
    for file in dict.fromkeys(lab.file for lab in labels):
        image = decode((root / "faces" / file).read_bytes(), limits, 640)
        faces = analyzer.analyze(image, embed_all=True)
        n = counts[file]
        biggest = sorted(faces, key=lambda f: -f.quality.size_px)[:n]
        by_x = sorted(biggest, key=lambda f: float(f.box[0] + f.box[2]))
        for lab in (lab for lab in labels if lab.file == file):
            if len(by_x) < n:
                missing.append(lab.key)
                continue
            samples.append(Sample(lab, by_x[lab.position or 0]))
        chosen = {id(f) for f in biggest}
        background += [(file, f) for f in faces if id(f) not in chosen and f.quality.usable]
    return samples, background, missing


def evaluate(
    analyzer: FaceAnalyzer, threshold: float, margin: float, root: Path | None = None
) -> AccuracyReport:
    root = root or data_dir()
    labels = face_labels(root)
    samples, background, missing = collect(analyzer, root, labels)
    report = AccuracyReport(threshold, margin, missing_labels=missing)
    gallery: dict[str, Sample] = {}
    for s in samples:
        gallery.setdefault(s.label.identity, s)
    probes = [
        s
        for s in samples
        if not related(s.label.file, gallery[s.label.identity].label.file, labels)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        registry = _registry(Path(tmp) / "all", gallery, analyzer.embedder.dim)
        for s in probes:
            ident = registry.identify("eval", _vec(s.face), threshold, margin)[0]
            who = ident.person.person_id if ident.person else None
            report.probes += 1
            if who == s.label.identity:
                report.rank1_correct += 1
            else:
                best = ident.candidate.person_id if ident.candidate else None
                report.failures.append(
                    f"{s.label.key} ({s.label.identity}): best {best} {ident.score:.3f}, "
                    f"accepted {ident.accepted}"
                )
        for file, face in background:
            ident = registry.identify("eval", _vec(face), threshold, margin)[0]
            report.background_faces += 1
            if ident.accepted and ident.person:
                report.background_accepts.append(
                    f"background face in {file} → {ident.person.person_id} {ident.score:.3f}"
                )
        for left_out in gallery:
            others = {k: v for k, v in gallery.items() if k != left_out}
            reg = _registry(Path(tmp) / f"without-{left_out}", others, analyzer.embedder.dim)
            for s in (s for s in samples if s.label.identity == left_out):
                ident = reg.identify("eval", _vec(s.face), threshold, margin)[0]
                report.open_set_trials += 1
                if ident.accepted and ident.person:
                    report.false_accepts.append(
                        f"{s.label.key} ({left_out}, not enrolled) → "
                        f"{ident.person.person_id} {ident.score:.3f}"
                    )
    report.genuine, report.impostor = _pair_scores(samples, labels)
    return report


def _vec(face: FaceObservation) -> np.ndarray:
    if face.embedding is None:
        raise ValueError("face has no embedding")
    return face.embedding[None, :]


def _registry(path: Path, gallery: dict[str, Sample], dim: int) -> FaceRegistry:
    registry = FaceRegistry(path, dim)
    registry.create_community("eval")
    for identity, s in gallery.items():
        registry.enroll("eval", identity, _vec(s.face))
    return registry


def _pair_scores(
    samples: list[Sample], labels: list[LabelledFace]
) -> tuple[np.ndarray, np.ndarray]:
    genuine: list[float] = []
    impostor: list[float] = []
    for a in range(len(samples)):
        for b in range(a + 1, len(samples)):
            sa, sb = samples[a], samples[b]
            if related(sa.label.file, sb.label.file, labels):
                continue
            score = float(_vec(sa.face)[0] @ _vec(sb.face)[0])
            (genuine if sa.label.identity == sb.label.identity else impostor).append(score)
    return np.array(genuine), np.array(impostor)


def main(argv: list[str] | None = None) -> int:
    from cluster.engine import match_threshold
    from recognizer.faces.factory import build_face_analyzer
    from smartgate.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--threshold", type=float)
    args = parser.parse_args(argv)
    config = load_config(args.config)
    analyzer = build_face_analyzer(config)
    threshold = args.threshold or match_threshold(config, analyzer)
    report = evaluate(analyzer, threshold, config.match.margin)
    print(report.table())
    return 0 if report.rank1 >= 0.97 and not report.false_accepts else 1


if __name__ == "__main__":
    sys.exit(main())
