"""When is the half-scale decode good enough to align a face for its embedding?

The frame is decoded at half scale for detection (``recognizer.image.decode``); a face that is
small in it is aligned from a second, full-resolution decode (~5 ms for 1080p). This measures
what that buys: single-subject shared photos are pasted into a 1920x1080 JPEG frame at several
sizes, each face is aligned from both decodes and embedded, and the cosine between the two
embeddings is reported against the face's size in the half-scale image as a share of the
embedder's crop (``face_size * scale / crop``). ``recognizer.faces.analyzer.FULL_RES_BELOW`` is
chosen from this table: above it the two embeddings agree so closely (cosine >= 0.99 on
average) that the full decode changes no decision (genuine pairs score ~0.8, the threshold is
0.45).

Run: ``python -m benchmarks.align_scale [--photos 25]``.
"""

from __future__ import annotations

import argparse
import sys

import cv2
import numpy as np
import simplejpeg

from benchmarks.datasets import data_dir, face_labels, subjects_per_file
from benchmarks.scenes import composite
from recognizer.faces.align import align_face
from recognizer.faces.factory import build_face_analyzer
from recognizer.faces.quality import face_size
from recognizer.image import DecodeLimits, decode
from smartgate.config import load_config

FACE_HEIGHTS = (160, 240, 320, 420, 540, 700)  # subject photo height in the frame, pixels
BINS = ((0.0, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.8), (0.8, 1.0), (1.0, 99.0))


def measure(photos: int) -> list[tuple[float, float]]:
    """``(face share of the crop at half scale, cosine full vs half)`` per detected face."""
    config = load_config()
    analyzer = build_face_analyzer(config)
    d = config.decode
    limits = DecodeLimits(d.max_bytes, d.max_pixels, d.max_side)
    root = data_dir()
    labels = face_labels(root)
    single = subjects_per_file(labels)
    files = [lab.file for lab in labels if single[lab.file] == 1][:photos]
    crop = analyzer.embedder.input_size
    out = []
    for name in files:
        photo = cv2.imread(str(root / "faces" / name))
        if photo is None:
            continue
        for height in FACE_HEIGHTS:
            s = height / photo.shape[0]
            subject = cv2.resize(
                photo,
                (max(8, round(photo.shape[1] * s)), max(8, round(photo.shape[0] * s))),
                interpolation=cv2.INTER_AREA,
            )
            frame = composite(subject, 1920, 1080, 800, 300)
            jpeg = simplejpeg.encode_jpeg(frame, quality=85, colorspace="BGR")
            image = decode(jpeg, limits, config.detect.long_side)
            dets = analyzer.detector.detect(image.scaled, image.scale)
            if len(dets) == 0:
                continue
            marks = dets.landmarks[0]
            full = align_face(image.full(), marks, crop, 1.0)
            half = align_face(image.scaled, marks, crop, image.scale)
            emb = analyzer.embedder.embed(np.stack([full, half]))
            out.append((face_size(marks) * image.scale / crop, float(emb[0] @ emb[1])))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.align_scale", description=__doc__)
    parser.add_argument("--photos", type=int, default=25)
    args = parser.parse_args(argv)
    rows = measure(args.photos)
    print("| face size at half scale / crop | faces | cosine mean | cosine min |")
    print("|---|---|---|---|")
    for lo, hi in BINS:
        cos = [c for share, c in rows if lo <= share < hi]
        if cos:
            label = f"{lo:.1f}–{hi:.1f}" if hi < 99 else f">= {lo:.1f}"
            print(f"| {label} | {len(cos)} | {np.mean(cos):.4f} | {np.min(cos):.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
