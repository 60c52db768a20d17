# cython: language_level=3, wraparound=False, cdivision=True
"""A track's vote over its last frames and its best shot (see ``native.vote_and_best``).

No allocation. The vote walks the window newest first and counts each key once, at its
newest entry (an O(window^2) scan: windows are a handful of frames), so a later key wins a
tie in count and its newest entry gives the action. The best shot is one pass over all
entries; a NaN product counts as -inf. Bounds and initialisation checks follow the build
switch in setup.py.
"""

from libc.math cimport INFINITY, isnan


def vote_and_best(
    const long long[::1] identity_keys,
    const signed char[::1] actions,
    const float[::1] quality,
    const float[::1] size,
    const float[::1] det_score,
    Py_ssize_t votes_needed,
    Py_ssize_t window,
):
    """Return ``(decided_key, decided_action, agree_count, best_index)`` as Python ints."""
    cdef Py_ssize_t n = identity_keys.shape[0]
    cdef Py_ssize_t start = n - window if n > window else 0
    cdef Py_ssize_t i, j, count
    cdef Py_ssize_t best_count = 0
    cdef Py_ssize_t best_index = -1
    cdef long long key
    cdef long long top_key = -1
    cdef signed char top_action = 0
    cdef bint counted
    cdef float value, best_value

    with nogil:
        for i in range(n - 1, start - 1, -1):
            key = identity_keys[i]
            if key < -1:
                continue  # unusable: takes a slot in the window, casts no vote
            counted = False
            for j in range(i + 1, n):
                if identity_keys[j] == key:
                    counted = True  # already counted at a newer entry
                    break
            if counted:
                continue
            count = 1
            for j in range(start, i):
                if identity_keys[j] == key:
                    count += 1
            if count > best_count:  # strictly: on a tie the newer key (seen first) stays
                best_count = count
                top_key = key
                top_action = actions[i]

        if n > 0:
            best_index = 0
            best_value = quality[0] * size[0] * det_score[0]
            if isnan(best_value):
                best_value = -INFINITY
            for i in range(1, n):
                value = quality[i] * size[i] * det_score[i]
                if value > best_value:  # NaN never compares greater; ties keep the earliest
                    best_value = value
                    best_index = i

    if best_count >= votes_needed and best_count > 0:
        return top_key, top_action, best_count, best_index
    return -1, 0, best_count, best_index
