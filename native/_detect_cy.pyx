# cython: language_level=3, wraparound=False, cdivision=True
"""Decode RetinaFace-style regressions and greedy-NMS them (see ``native.decode_detections``).

Only the priors whose score passes the threshold are decoded (few do, so the score scan is
kept branch-free and vectorised); candidates are ordered by (score descending, prior index
ascending) with ``qsort``, and NMS compares each candidate with the boxes kept so far,
which is the same greedy result as suppressing forward.
Bounds and initialisation checks follow the build switch in ``setup.py``.
"""

from libc.math cimport expf
from libc.stdlib cimport free, malloc, qsort

import numpy as np


ctypedef struct Candidate:
    float score
    Py_ssize_t index


cdef int _by_score_desc(const void* a, const void* b) noexcept nogil:
    cdef const Candidate* x = <const Candidate*> a
    cdef const Candidate* y = <const Candidate*> b
    if x.score > y.score:
        return -1
    if x.score < y.score:
        return 1
    return (x.index > y.index) - (x.index < y.index)


cdef inline float _iou(const float* a, float area_a, const float* b, float area_b) noexcept nogil:
    cdef float iw = min(a[2], b[2]) - max(a[0], b[0])
    cdef float ih = min(a[3], b[3]) - max(a[1], b[1])
    cdef float inter, union
    if iw <= 0 or ih <= 0:
        return 0
    inter = iw * ih
    union = area_a + area_b - inter
    if union > 0:
        return inter / union
    return 0


def decode_detections(
    const float[:, ::1] loc,
    const float[::1] scores,
    const float[:, ::1] points,
    const float[:, ::1] priors,
    float score_threshold,
    float nms_iou,
    float v0,
    float v1,
    Py_ssize_t max_candidates,
    Py_ssize_t max_out,
):
    """Return ``(boxes (n, 4), scores (n,), points (n, 2L))`` float32 arrays, best first."""
    cdef Py_ssize_t p = scores.shape[0]
    cdef Py_ssize_t n_coords = points.shape[1]
    cdef Py_ssize_t i, j, m = 0, c, n_kept = 0, src, start, stop
    cdef int hits
    cdef float cx, cy, w, h, pw, ph, s
    cdef bint suppressed

    with nogil:
        for i in range(p):
            m += scores[i] >= score_threshold
    c = min(m, max_candidates)
    cdef Py_ssize_t cap = min(c, max_out)

    out_boxes = np.empty((cap, 4), dtype=np.float32)
    out_scores = np.empty(cap, dtype=np.float32)
    out_points = np.empty((cap, n_coords), dtype=np.float32)
    cdef float[:, ::1] ob = out_boxes
    cdef float[::1] os_ = out_scores
    cdef float[:, ::1] op = out_points
    if cap == 0:
        return out_boxes, out_scores, out_points

    cdef Candidate* cand = <Candidate*> malloc(m * sizeof(Candidate))
    cdef float* areas = <float*> malloc(cap * sizeof(float))
    cdef Py_ssize_t* kept = <Py_ssize_t*> malloc(cap * sizeof(Py_ssize_t))
    if cand == NULL or areas == NULL or kept == NULL:
        free(cand)
        free(areas)
        free(kept)
        raise MemoryError()
    try:
        with nogil:
            # ~0.1 % of priors pass: test 16 scores at a time (vectorised), and look at
            # them one by one only when one of them passed.
            j = 0
            for start in range(0, p, 16):
                stop = min(start + 16, p)
                hits = 0
                for i in range(start, stop):
                    hits |= scores[i] >= score_threshold
                if hits == 0:
                    continue
                for i in range(start, stop):
                    s = scores[i]
                    if s >= score_threshold:
                        cand[j].score = s
                        cand[j].index = i
                        j += 1
            qsort(cand, m, sizeof(Candidate), _by_score_desc)

            for j in range(c):
                src = cand[j].index
                pw = priors[src, 2]
                ph = priors[src, 3]
                cx = priors[src, 0] + loc[src, 0] * v0 * pw
                cy = priors[src, 1] + loc[src, 1] * v0 * ph
                w = pw * expf(loc[src, 2] * v1)
                h = ph * expf(loc[src, 3] * v1)
                # Decode into the next free output row; it stays only if NMS keeps it.
                ob[n_kept, 0] = cx - w / 2
                ob[n_kept, 1] = cy - h / 2
                ob[n_kept, 2] = cx + w / 2
                ob[n_kept, 3] = cy + h / 2
                areas[n_kept] = (ob[n_kept, 2] - ob[n_kept, 0]) * (ob[n_kept, 3] - ob[n_kept, 1])
                suppressed = False
                for i in range(n_kept):
                    if _iou(&ob[i, 0], areas[i], &ob[n_kept, 0], areas[n_kept]) > nms_iou:
                        suppressed = True
                        break
                if suppressed:
                    continue
                kept[n_kept] = src
                os_[n_kept] = cand[j].score
                n_kept += 1
                if n_kept == cap:
                    break

            for j in range(n_kept):
                src = kept[j]
                for i in range(n_coords // 2):
                    op[j, 2 * i] = priors[src, 0] + points[src, 2 * i] * v0 * priors[src, 2]
                    op[j, 2 * i + 1] = (
                        priors[src, 1] + points[src, 2 * i + 1] * v0 * priors[src, 3]
                    )
    finally:
        free(cand)
        free(areas)
        free(kept)
    return out_boxes[:n_kept], out_scores[:n_kept], out_points[:n_kept]
