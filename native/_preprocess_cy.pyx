# cython: language_level=3, wraparound=False, cdivision=True
"""uint8 HWC images → normalised float32 NCHW planes (see ``native.hwc_to_nchw``).

One pass over the pixels: each interleaved ``(b, g, r)`` triple is read once and written to
the three output planes as ``(x - mean[c]) * (1 / std[c])`` in float32, the scale computed
once per channel as ``float(1.0 / std[c])`` (so the result equals the numpy reference bit
for bit). The BGR→RGB swap only changes which plane each source channel lands in. No
allocation; the GIL is released for the loop. Bounds and initialisation checks follow the
build switch in setup.py.
"""


cdef extern from *:
    """
    /* The stride-3 byte loads need a byte shuffle (SSSE3 pshufb) to vectorise, which the
       x86-64 baseline (SSE2) lacks, so GCC/Clang build AVX2 and SSSE3 clones of the loop
       as well and pick one at load time (ifunc). Elsewhere one plain build. */
    #if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
    #define SMARTGATE_CLONES __attribute__((target_clones("avx2", "ssse3", "default")))
    #else
    #define SMARTGATE_CLONES
    #endif
    SMARTGATE_CLONES
    static void smartgate_planes(
        const unsigned char *restrict src, float *restrict d0, float *restrict d1,
        float *restrict d2, Py_ssize_t pixels, const float *m, const float *s) {
        const float m0 = m[0], m1 = m[1], m2 = m[2], s0 = s[0], s1 = s[1], s2 = s[2];
        for (Py_ssize_t p = 0; p < pixels; p++) {
            d0[p] = ((float)src[3 * p] - m0) * s0;
            d1[p] = ((float)src[3 * p + 1] - m1) * s1;
            d2[p] = ((float)src[3 * p + 2] - m2) * s2;
        }
    }
    """
    void smartgate_planes(
        const unsigned char* src,
        float* d0,
        float* d1,
        float* d2,
        Py_ssize_t pixels,
        const float* m,
        const float* s,
    ) noexcept nogil


def hwc_to_nchw(
    const unsigned char[:, :, :, ::1] images,
    const double[::1] mean,
    const double[::1] std,
    bint swap_rb,
    float[:, :, :, ::1] out,
):
    """Fill ``out`` ``(n, 3, h, w)`` from ``images`` ``(n, h, w, 3)``; shapes already checked.

    ``d_k[p] = (src[3p + k] - m_k) * s_k``: source channel ``k`` goes to output plane
    ``plane[k]`` with that plane's mean and scale.
    """
    cdef Py_ssize_t n = images.shape[0]
    cdef Py_ssize_t pixels = images.shape[1] * images.shape[2]
    cdef Py_ssize_t i, k
    cdef Py_ssize_t plane[3]
    cdef float m[3]
    cdef float s[3]
    cdef float* dst

    for k in range(3):
        plane[k] = 2 - k if swap_rb else k
        m[k] = <float> mean[plane[k]]
        s[k] = <float> (1.0 / std[plane[k]])
    if n == 0 or pixels == 0:
        return
    with nogil:
        for i in range(n):
            dst = &out[i, 0, 0, 0]
            smartgate_planes(
                &images[i, 0, 0, 0],
                dst + plane[0] * pixels,
                dst + plane[1] * pixels,
                dst + plane[2] * pixels,
                pixels,
                m,
                s,
            )
