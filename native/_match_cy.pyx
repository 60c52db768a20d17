# cython: language_level=3, wraparound=False, cdivision=True
"""Collapse top-k template hits into one identity per query (see ``native.match_identities``).

Two passes per row, no allocation: the best slot gives the best person (its max is the
max over all slots; ties go to the lower key), then the best slot of any other person
gives the runner-up. Bounds and initialisation checks follow the build switch in setup.py.
"""

from libc.math cimport INFINITY

import numpy as np


def match_identities(
    const float[:, ::1] similarities,
    const long long[:, ::1] person_keys,
    float threshold,
    float margin,
):
    """Return ``(person (q,) int64, score (q,), runner_up (q,), accepted (q,) bool)``."""
    cdef Py_ssize_t q = similarities.shape[0]
    cdef Py_ssize_t k = similarities.shape[1]
    cdef Py_ssize_t row, j
    cdef long long key, best_key
    cdef float s, best, second
    cdef bint has_second

    person = np.full(q, -1, dtype=np.int64)
    score = np.full(q, -1.0, dtype=np.float32)
    runner_up = np.full(q, -1.0, dtype=np.float32)
    accepted = np.zeros(q, dtype=np.uint8)
    cdef long long[::1] person_v = person
    cdef float[::1] score_v = score
    cdef float[::1] runner_v = runner_up
    cdef unsigned char[::1] accepted_v = accepted

    with nogil:
        for row in range(q):
            best_key = -1
            best = -INFINITY
            for j in range(k):
                key = person_keys[row, j]
                s = similarities[row, j]
                # NaN and -inf fail `s > -INFINITY`: such a slot is no candidate.
                if key < 0 or not s > -INFINITY:
                    continue
                if best_key < 0 or s > best or (s == best and key < best_key):
                    best = s
                    best_key = key
            if best_key < 0:
                continue
            has_second = False
            second = -1
            for j in range(k):
                key = person_keys[row, j]
                s = similarities[row, j]
                if key < 0 or key == best_key or not s > -INFINITY:
                    continue
                if not has_second or s > second:
                    second = s
                    has_second = True
            if not has_second:
                second = -1
            person_v[row] = best_key
            score_v[row] = best
            runner_v[row] = second
            accepted_v[row] = best >= threshold and best - second >= margin
    return person, score, runner_up, accepted.view(np.bool_)
