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
#include <stdint.h>

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

/* sum_m table[m, code[m]] for 8-bit codes, table rows of 256 floats.
 * Four accumulators break the chain of dependent float additions (each waits
 * ~4 cycles for the previous one): the loop is then bound by its two loads
 * per sub-quantizer, the limit PERFORMANCE-FACTS.md measures on this CPU.
 * The summation order is fixed, so results do not depend on threads. */
static inline float pqfast_adc8(const float *table, const uint8_t *code, ptrdiff_t M)
{
    float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    ptrdiff_t m = 0;
    for (; m + 4 <= M; m += 4) {
        a0 += table[(m + 0) * 256 + code[m + 0]];
        a1 += table[(m + 1) * 256 + code[m + 1]];
        a2 += table[(m + 2) * 256 + code[m + 2]];
        a3 += table[(m + 3) * 256 + code[m + 3]];
    }
    for (; m < M; m++)
        a0 += table[m * 256 + code[m]];
    return (a0 + a1) + (a2 + a3);
}

/* dist[j] = max(qn + xnorm[j] - 2 dist[j], 0): dot products to squared L2. */
PQFAST_MULTIVERSION
static void pqfast_l2_from_dots(float *dist, const float *xnorm, float qn, ptrdiff_t n)
{
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++) {
        float d = qn + xnorm[j] - (dist[j] + dist[j]);
        dist[j] = d > 0 ? d : 0;
    }
}

/* dist[j] = -dist[j]: inner products to "smaller is better". */
PQFAST_MULTIVERSION
static void pqfast_negate(float *dist, ptrdiff_t n)
{
#pragma omp simd
    for (ptrdiff_t j = 0; j < n; j++)
        dist[j] = -dist[j];
}

/* Smallest of d[0..n); FLT_MAX when n == 0. */
PQFAST_MULTIVERSION
static float pqfast_min(const float *d, ptrdiff_t n)
{
    float m = 3.402823466e+38f;
#pragma omp simd reduction(min : m)
    for (ptrdiff_t j = 0; j < n; j++)
        m = d[j] < m ? d[j] : m;
    return m;
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
