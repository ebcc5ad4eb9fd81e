/*
 * The one-pass GLM kernel of neuroprobe.glm.stats, compiled: every sufficient statistic
 * of a block of columns of Y is accumulated while each row of the block is in the core's
 * L1 cache, so Y is read from memory exactly once.
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
 * the segment edges), copied while they are in cache.  lin and kept have row stride ldo.  Columns are processed in blocks of `width` (a few KiB per row);
 * the caller splits the columns over threads (ctypes releases the GIL).  Loaded with
 * ctypes; the module init only makes it importable as an extension module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NP_CLONES
#endif

NP_CLONES
int np_glm_fused_stats(const void *Y, int is_f32, long T, long ld, long c0, long c1,
                       const double *A, long k, const long *sid, long n_seg,
                       const double *shift, long width, double *lin, long ldo, double *yy,
                       double *lag, const long *keep, long n_keep, double *kept)
{
    if (width < 1) width = 1;
    const long rows = k + n_seg;
    double *acc = (double *)calloc((size_t)(rows + 4) * (size_t)width, sizeof(double));
    if (acc == NULL) return -1;
    double *restrict yyl = acc + rows * width;
    double *restrict lagl = yyl + width;
    double *restrict vb = lagl + width;      /* this row, as float64 */
    double *restrict pb = vb + width;        /* the previous row */
    const int direct = !is_f32 && shift == NULL;

    for (long jb = c0; jb < c1; jb += width) {
        const long w = (c1 - jb < width) ? c1 - jb : width;
        memset(acc, 0, (size_t)(rows + 2) * (size_t)width * sizeof(double));
        const double *sh = shift ? shift + jb : NULL;
        long next = 0; /* the next entry of keep */
        for (long t = 0; t < T; ++t) {
            const double *restrict v;
            if (direct) {
                v = (const double *)Y + t * ld + jb;
            } else {
                if (is_f32) {
                    const float *restrict y = (const float *)Y + t * ld + jb;
                    if (sh) { for (long j = 0; j < w; ++j) vb[j] = (double)y[j] - sh[j]; }
                    else { for (long j = 0; j < w; ++j) vb[j] = (double)y[j]; }
                } else {
                    const double *restrict y = (const double *)Y + t * ld + jb;
                    for (long j = 0; j < w; ++j) vb[j] = y[j] - sh[j];
                }
                v = vb;
            }
            if (next < n_keep && keep[next] == t)
                memcpy(kept + (next++) * ldo + jb, v, (size_t)w * sizeof(double));
            for (long j = 0; j < w; ++j) yyl[j] += v[j] * v[j];
            if (lag) {
                if (t > 0) {
                    const double *restrict u = direct ? (const double *)Y + (t - 1) * ld + jb : pb;
                    for (long j = 0; j < w; ++j) lagl[j] += v[j] * u[j];
                }
                if (!direct) { double *tmp = pb; pb = vb; vb = tmp; }
            }
            for (long p = 0; p < k; ++p) {
                const double a = A[p * T + t];
                if (a == 0.0) continue;
                double *restrict o = acc + p * width;
                for (long j = 0; j < w; ++j) o[j] += a * v[j];
            }
            if (sid) {
                double *restrict o = acc + (k + sid[t]) * width;
                for (long j = 0; j < w; ++j) o[j] += v[j];
            }
        }
        for (long r = 0; r < rows; ++r)
            memcpy(lin + r * ldo + jb, acc + r * width, (size_t)w * sizeof(double));
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
