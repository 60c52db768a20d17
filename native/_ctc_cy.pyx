# cython: language_level=3, wraparound=False, cdivision=True
"""Greedy (best-path) CTC decode (see ``native.ctc_greedy_decode``).

One pass per time step: argmax (first index on ties), then collapse runs and drop the
blank, keeping the max probability over each emitted label's run. Bounds and
initialisation checks follow the build switch in setup.py.
"""

import numpy as np


cdef extern from *:
    """
    /* Max of 64 floats. SSE maxps(a, m) is exactly `a > m ? a : m`, which compilers will
       not vectorise as a reduction without fast-math, so spell it out; x86-64 always has
       SSE. Elsewhere a plain loop. NaN never wins (inputs are NaN-free by contract). */
    #if defined(__SSE__) || defined(_M_X64)
    #include <xmmintrin.h>
    static inline float smartgate_max64(const float *p) {
        __m128 m0 = _mm_loadu_ps(p), m1 = _mm_loadu_ps(p + 4);
        __m128 m2 = _mm_loadu_ps(p + 8), m3 = _mm_loadu_ps(p + 12);
        float lanes[4], top;
        for (int i = 16; i < 64; i += 16) {
            m0 = _mm_max_ps(_mm_loadu_ps(p + i), m0);
            m1 = _mm_max_ps(_mm_loadu_ps(p + i + 4), m1);
            m2 = _mm_max_ps(_mm_loadu_ps(p + i + 8), m2);
            m3 = _mm_max_ps(_mm_loadu_ps(p + i + 12), m3);
        }
        _mm_storeu_ps(lanes, _mm_max_ps(_mm_max_ps(m0, m1), _mm_max_ps(m2, m3)));
        top = lanes[0];
        for (int i = 1; i < 4; i++) top = lanes[i] > top ? lanes[i] : top;
        return top;
    }
    #else
    static inline float smartgate_max64(const float *p) {
        float top = p[0];
        for (int i = 1; i < 64; i++) top = p[i] > top ? p[i] : top;
        return top;
    }
    #endif
    """
    float smartgate_max64(const float* p) noexcept nogil


cdef enum:
    BLOCK = 64  # floats per smartgate_max64 call


cdef inline Py_ssize_t _argmax(const float* row, Py_ssize_t c) noexcept nogil:
    """First index of the max of ``row[:c]`` (``c >= 1``), as ``np.argmax`` for NaN-free rows.

    A compare-and-update loop is one long dependency chain (~5x slower than numpy's SIMD
    argmax at c=6625). Instead take each 64-float block's max with SIMD, remember the
    first block holding the overall max, scan only that block, then the tail.
    """
    cdef Py_ssize_t n_blocks = c // BLOCK
    cdef Py_ssize_t b, i, best_block = -1, best = 0
    cdef float top = row[0]
    cdef float block_top
    for b in range(n_blocks):
        block_top = smartgate_max64(row + b * BLOCK)
        if best_block < 0 or block_top > top:
            top = block_top
            best_block = b
    if best_block >= 0:
        for i in range(best_block * BLOCK, best_block * BLOCK + BLOCK):
            if row[i] == top:
                best = i
                break
    for i in range(n_blocks * BLOCK, c):
        if row[i] > top:
            top = row[i]
            best = i
    return best


def ctc_greedy_decode(const float[:, :, ::1] probs, Py_ssize_t blank):
    """Return ``(labels (n, t) int32, confidences (n, t) float32, lengths (n,) int32)``."""
    cdef Py_ssize_t n = probs.shape[0]
    cdef Py_ssize_t t = probs.shape[1]
    cdef Py_ssize_t c = probs.shape[2]
    cdef Py_ssize_t row, step, label, previous, length
    cdef float prob

    labels = np.full((n, t), -1, dtype=np.int32)
    confidences = np.zeros((n, t), dtype=np.float32)
    lengths = np.zeros(n, dtype=np.int32)
    cdef int[:, ::1] labels_v = labels
    cdef float[:, ::1] conf_v = confidences
    cdef int[::1] lengths_v = lengths

    with nogil:
        for row in range(n):
            previous = -1
            length = 0
            for step in range(t):
                label = _argmax(&probs[row, step, 0], c)
                prob = probs[row, step, label]
                if label == previous:
                    if label != blank and prob > conf_v[row, length - 1]:
                        conf_v[row, length - 1] = prob
                    continue
                previous = label
                if label != blank:
                    labels_v[row, length] = <int> label
                    conf_v[row, length] = prob
                    length += 1
            lengths_v[row] = <int> length
    return labels, confidences, lengths
