/*
 * The one-pass GLM kernel of neuroprobe.glm.stats, compiled: every sufficient statistic
 * of a block of columns of Y is accumulated while the block's rows are in cache, so Y is
 * read from memory exactly once.
 *
 * For the columns c0 <= j < c1 of Y [T, ld] (float64 or float32, row-major, row stride ld
 * elements) and v[t, j] = Y[t, j] - shift[j] (shift may be NULL), in float64:
 *
 *   lin[p, j]     = sum_t A[p, t] v[t, j]             p < k        (A row-major [k, T])
 *   lin[k + s, j] = sum_{t: sid[t] == s} v[t, j]     s < n_seg    (sid may be NULL)
 *   yy[j]         = sum_t v[t, j]^2
 *   lag[j]        = sum_{t >= 1} v[t, j] v[t - 1, j]               (lag may be NULL)
 *   kept[i, j]    = v[keep[i], j]                                  i < n_keep
 *
 * keep holds increasing row numbers (the few rows the fit needs whole: the first, the last,
 * the segment edges), copied while they are in cache.  lin and kept have row stride ldo.
 * Columns are processed in blocks of `width`; within a block the rows are taken in groups
 * of NP_GROUP rows of one segment, whose combined contributions are added to each
 * accumulator row in one sweep (a quarter of the accumulator traffic of a row-by-row
 * sweep).  The caller splits the columns over threads (ctypes releases the GIL).  Loaded
 * with ctypes; the module init only makes it importable as an extension module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NP_CLONES
#endif

/* rows of Y taken together: their sums enter the accumulators once per group, so the
 * accumulators are read and written a quarter as often as row by row */
#define NP_GROUP 4

NP_CLONES
int np_glm_fused_stats(const void *Y, int is_f32, int64_t T, int64_t ld, int64_t c0,
                       int64_t c1, const double *A, int64_t k, const int64_t *sid,
                       int64_t n_seg, const double *shift, int64_t width, double *lin,
                       int64_t ldo, double *yy, double *lag, const int64_t *keep,
                       int64_t n_keep, double *kept)
{
    if (width < 1) width = 1;
    const int64_t rows = k + n_seg;
    const int direct = !is_f32 && shift == NULL;
    /* accumulators, yy, lag, a zero row, and two sets of NP_GROUP converted rows */
    const int64_t n_buf = rows + 3 + (direct ? 0 : 2 * NP_GROUP);
    double *acc = (double *)calloc((size_t)n_buf * (size_t)width, sizeof(double));
    if (acc == NULL) return -1;
    double *restrict yyl = acc + rows * width;
    double *restrict lagl = yyl + width;
    const double *zero = lagl + width;
    double *conv = (double *)zero + width;

    for (int64_t jb = c0; jb < c1; jb += width) {
        const int64_t w = (c1 - jb < width) ? c1 - jb : width;
        memset(acc, 0, (size_t)(rows + 2) * (size_t)width * sizeof(double));
        const double *sh = shift ? shift + jb : NULL;
        const double *prev = zero; /* row t - 1 (zero before the first row) */
        int64_t next = 0;             /* the next entry of keep */
        int set = 0;               /* which set of converted rows this group uses */
        for (int64_t t = 0; t < T;) {
            /* a group: up to NP_GROUP rows of one segment */
            int64_t u = (T - t < NP_GROUP) ? T - t : NP_GROUP;
            if (sid) while (u > 1 && sid[t + u - 1] != sid[t]) --u;
            const double *r[NP_GROUP];
            for (int64_t i = 0; i < u; ++i) {
                if (direct) {
                    r[i] = (const double *)Y + (t + i) * ld + jb;
                } else {
                    double *restrict vb = conv + (set * NP_GROUP + i) * width;
                    if (is_f32) {
                        const float *restrict y = (const float *)Y + (t + i) * ld + jb;
                        if (sh) { for (int64_t j = 0; j < w; ++j) vb[j] = (double)y[j] - sh[j]; }
                        else { for (int64_t j = 0; j < w; ++j) vb[j] = (double)y[j]; }
                    } else {
                        const double *restrict y = (const double *)Y + (t + i) * ld + jb;
                        for (int64_t j = 0; j < w; ++j) vb[j] = y[j] - sh[j];
                    }
                    r[i] = vb;
                }
                if (next < n_keep && keep[next] == t + i)
                    memcpy(kept + (next++) * ldo + jb, r[i], (size_t)w * sizeof(double));
            }
            double *restrict os = sid ? acc + (k + sid[t]) * width : NULL;
            if (u == NP_GROUP) {
                const double *restrict a0 = r[0], *restrict a1 = r[1], *restrict a2 = r[2],
                             *restrict a3 = r[3], *restrict pv = prev;
                for (int64_t j = 0; j < w; ++j)
                    yyl[j] += a0[j] * a0[j] + a1[j] * a1[j] + a2[j] * a2[j] + a3[j] * a3[j];
                if (lag)
                    for (int64_t j = 0; j < w; ++j)
                        lagl[j] += a0[j] * pv[j] + a1[j] * a0[j] + a2[j] * a1[j] + a3[j] * a2[j];
                if (os)
                    for (int64_t j = 0; j < w; ++j) os[j] += (a0[j] + a1[j]) + (a2[j] + a3[j]);
                for (int64_t p = 0; p < k; ++p) {
                    const double *ap = A + p * T + t;
                    const double x0 = ap[0], x1 = ap[1], x2 = ap[2], x3 = ap[3];
                    if (x0 == 0.0 && x1 == 0.0 && x2 == 0.0 && x3 == 0.0) continue;
                    double *restrict o = acc + p * width;
                    for (int64_t j = 0; j < w; ++j)
                        o[j] += x0 * a0[j] + x1 * a1[j] + x2 * a2[j] + x3 * a3[j];
                }
            } else {
                for (int64_t i = 0; i < u; ++i) {
                    const double *restrict v = r[i], *restrict pv = i ? r[i - 1] : prev;
                    for (int64_t j = 0; j < w; ++j) yyl[j] += v[j] * v[j];
                    if (lag) for (int64_t j = 0; j < w; ++j) lagl[j] += v[j] * pv[j];
                    if (os) for (int64_t j = 0; j < w; ++j) os[j] += v[j];
                    for (int64_t p = 0; p < k; ++p) {
                        const double x = A[p * T + t + i];
                        if (x == 0.0) continue;
                        double *restrict o = acc + p * width;
                        for (int64_t j = 0; j < w; ++j) o[j] += x * v[j];
                    }
                }
            }
            prev = r[u - 1];
            set ^= 1;
            t += u;
        }
        for (int64_t q = 0; q < rows; ++q)
            memcpy(lin + q * ldo + jb, acc + q * width, (size_t)w * sizeof(double));
        memcpy(yy + jb, yyl, (size_t)w * sizeof(double));
        if (lag) memcpy(lag + jb, lagl, (size_t)w * sizeof(double));
    }
    free(acc);
    return 0;
}

static struct PyModuleDef fused_module = {
    PyModuleDef_HEAD_INIT, "_fused",
    "neuroprobe's compiled one-pass GLM kernel (called through ctypes).", -1, NULL,
};

PyMODINIT_FUNC PyInit__fused(void) { return PyModule_Create(&fused_module); }
