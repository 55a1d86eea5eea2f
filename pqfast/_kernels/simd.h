/* Small SIMD helpers for the Cython kernels.
 *
 * Wheels cannot assume more than the baseline instruction set, so on x86-64
 * Linux with GCC or Clang each helper is compiled several times
 * (target_clones) and the loader picks the best version for the CPU at run
 * time.  "omp simd" allows vectorizing float reductions without -ffast-math.
 */
#ifndef PQFAST_SIMD_H
#define PQFAST_SIMD_H

#include <stddef.h>

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define PQFAST_MULTIVERSION __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define PQFAST_MULTIVERSION
#endif

/* out[j] = <x, y_j> for the n rows y_j of the row-major (n, d) matrix y. */
PQFAST_MULTIVERSION
static void pqfast_dots(const float *x, const float *y, ptrdiff_t n, ptrdiff_t d,
                        float *out)
{
    for (ptrdiff_t j = 0; j < n; j++) {
        const float *yj = y + j * d;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t i = 0; i < d; i++)
            s += x[i] * yj[i];
        out[j] = s;
    }
}

/* out[m, j] += scale * <x[m*dsub : (m+1)*dsub], y_mj>, with the codebook
 * transposed to cbt[m, s, j] (M, dsub, ksub) so the inner loop runs over
 * contiguous centroids. */
PQFAST_MULTIVERSION
static void pqfast_dot_table(const float *x, const float *cbt, ptrdiff_t M,
                             ptrdiff_t dsub, ptrdiff_t ksub, float scale, float *out)
{
    for (ptrdiff_t m = 0; m < M; m++) {
        float *o = out + m * ksub;
        for (ptrdiff_t s = 0; s < dsub; s++) {
            const float xs = scale * x[m * dsub + s];
            const float *row = cbt + (m * dsub + s) * ksub;
#pragma omp simd
            for (ptrdiff_t j = 0; j < ksub; j++)
                o[j] += xs * row[j];
        }
    }
}

/* out[i] = a[i] + b[i] */
PQFAST_MULTIVERSION
static void pqfast_add(const float *a, const float *b, ptrdiff_t n, float *out)
{
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

#endif
