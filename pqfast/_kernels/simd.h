/* Small SIMD helpers for the Cython kernels.
 *
 * Wheels cannot assume more than the baseline instruction set, so on x86-64
 * Linux with GCC or Clang each helper is compiled several times
 * (target_clones) and the loader picks the best version for the CPU at run
 * time.  "omp simd" allows vectorizing float reductions without -ffast-math.
 */
#ifndef PQFAST_SIMD_H
#define PQFAST_SIMD_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* Horizontal minimum and maximum of eight floats (AVX2). */
__attribute__((target("avx2"))) static inline float pqfast_hmin8(__m256 v)
{
    __m128 a = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_min_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_min_ss(a, _mm_movehdup_ps(a)));
}

__attribute__((target("avx2"))) static inline float pqfast_hmax8(__m256 v)
{
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_max_ss(a, _mm_movehdup_ps(a)));
}

/* The lanes of a 16-float vector that lie before the end, `left` floats on. */
static inline __mmask16 pqfast_live16(ptrdiff_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
}
#endif

#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define PQFAST_MULTIVERSION __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define PQFAST_MULTIVERSION
#endif

/* Ask for the n bytes at p to be brought into the cache (a hint): every
 * 64-byte line they touch, also when p is not on a line boundary.  (Not on
 * MSVC, where it does nothing.) */
static inline void pqfast_prefetch(const void *p, ptrdiff_t n)
{
#if defined(__GNUC__)
    const uintptr_t first = (uintptr_t)p & ~(uintptr_t)63;
    for (uintptr_t a = first; a < (uintptr_t)p + (uintptr_t)n; a += 64)
        __builtin_prefetch((const void *)a);
#else
    (void)p;
    (void)n;
#endif
}

/* Scalar table-lookup loops that GCC would otherwise vectorize across codes,
 * emulating gathers with scalar loads and shuffles (2-3x slower here).  Only
 * GCC's attribute is used (the build's compiler, measured); other compilers
 * get the loops as written. */
#if defined(__GNUC__) && !defined(__clang__)
#define PQFAST_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define PQFAST_NO_VECTORIZE
#endif

#if defined(__GNUC__) && defined(__x86_64__)
/* pqfast_dots with AVX-512, one row at a time: four accumulators, lane l of
 * accumulator a summing the products i = 64 t + 16 a + l in order; then up
 * to three remaining blocks of 16 go to a0, a1, a2 and the masked tail of d
 * (i = d16 + l) to a3; then (a0 + a1) + (a2 + a3) is added up across its
 * lanes.  So a row streams through the loads alone.  The earlier kernel took eight rows at
 * a time, eight streams of y: on the Zen 5 machine that ran at half the
 * load rate (PERFORMANCE.md #53).  Each row's sum has the same order
 * whatever n, so a row's value does not depend on the others. */
__attribute__((target("avx512f"))) static void
pqfast_dots_avx512(const float *x, const float *y, ptrdiff_t n, ptrdiff_t d, float *out)
{
    const ptrdiff_t d16 = d & ~(ptrdiff_t)15;
    const __mmask16 tail = pqfast_live16(d - d16);
    for (ptrdiff_t j = 0; j < n; j++) {
        const float *yj = y + j * d;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        ptrdiff_t i = 0;
        for (; i + 64 <= d; i += 64) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(yj + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(yj + i + 16),
                                 a1);
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(yj + i + 32),
                                 a2);
            a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(yj + i + 48),
                                 a3);
        }
        if (i < d16) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(yj + i), a0);
            i += 16;
        }
        if (i < d16) {
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(yj + i), a1);
            i += 16;
        }
        if (i < d16)
            a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(yj + i), a2);
        if (tail)
            a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, x + d16),
                                 _mm512_maskz_loadu_ps(tail, yj + d16), a3);
        out[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1),
                                                    _mm512_add_ps(a2, a3)));
    }
}
#endif

/* out[j] = <x, y_j> for the n rows y_j of the row-major (n, d) matrix y.
 * Four rows at a time: four independent accumulators hide the latency of
 * the fused multiply-adds, which a single reduction chain would wait on. */
PQFAST_MULTIVERSION
static void pqfast_dots_portable(const float *x, const float *y, ptrdiff_t n,
                                 ptrdiff_t d, float *out)
{
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *y0 = y + j * d, *y1 = y0 + d, *y2 = y1 + d, *y3 = y2 + d;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (ptrdiff_t i = 0; i < d; i++) {
            s0 += x[i] * y0[i];
            s1 += x[i] * y1[i];
            s2 += x[i] * y2[i];
            s3 += x[i] * y3[i];
        }
        out[j] = s0;
        out[j + 1] = s1;
        out[j + 2] = s2;
        out[j + 3] = s3;
    }
    for (; j < n; j++) {
        const float *yj = y + j * d;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t i = 0; i < d; i++)
            s += x[i] * yj[i];
        out[j] = s;
    }
}

/* The AVX-512 version where the CPU has it. */
static void pqfast_dots(const float *x, const float *y, ptrdiff_t n, ptrdiff_t d,
                        float *out)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) {
        pqfast_dots_avx512(x, y, n, d, out);
        return;
    }
#endif
    pqfast_dots_portable(x, y, n, d, out);
}

/* C = A B^T (c[i * nb + j] = <a_i, b_j>) with AVX-512: the GEMM of the
 * exact k-NN (flat search, coarse search, k-means assignment) and of the
 * encoder's wide sub-vectors, in place of BLAS where the CPU has AVX-512.
 *
 * The usual register-blocked scheme (Goto & van de Geijn, "Anatomy of
 * high-performance matrix multiplication", TOMS 2008): B is packed, 32 rows
 * at a time and PQFAST_GEMM_KC dimensions at a time, into a panel whose
 * k-th line holds the k-th value of the 32 rows; a tile of up to 8 rows of
 * A times the panel keeps its 8 x 32 sums in 16 registers, so each step
 * loads two panel vectors and 8 values of A for 16 multiply-adds.  Measured
 * on the project's Zen 5, 512 x 379 x 384: about 215 GFLOP/s at 1 thread,
 * where the BLAS of scipy and of faiss-cpu (OpenBLAS, which falls back to
 * its AVX2 "Haswell" kernels on that CPU) reach about 100.
 *
 * Each entry is one chain of multiply-adds over k = 0 .. dim - 1 in order
 * (a chunk continues from the sums stored by the one before), whatever na,
 * nb, the tile or the thread: its rounding does not depend on the shape of
 * the call, so two copies of a vector get the same distance, unlike with
 * BLAS, whose kernels differ at the edges of its blocks.  (gemm_abt sends
 * blocks of 1-4 rows to pqfast_dots instead, whose sums are ordered
 * otherwise: a query in such a block is rounded differently.) */
#if defined(__GNUC__) && defined(__x86_64__)
#define PQFAST_GEMM_MR 8
#define PQFAST_GEMM_NR 32
#define PQFAST_GEMM_KC 256

/* bp[k * 32 + j] = b[j * ldb + k] for the n <= 32 rows of b; zeros after
 * them, so a partial panel needs no other case. */
static inline void pqfast_gemm_pack(const float *b, ptrdiff_t ldb, ptrdiff_t n,
                                    ptrdiff_t kc, float *bp)
{
    for (ptrdiff_t j = 0; j < n; j++) {
        const float *row = b + j * ldb;
        for (ptrdiff_t k = 0; k < kc; k++)
            bp[k * PQFAST_GEMM_NR + j] = row[k];
    }
    for (ptrdiff_t j = n; j < PQFAST_GEMM_NR; j++)
        for (ptrdiff_t k = 0; k < kc; k++)
            bp[k * PQFAST_GEMM_NR + j] = 0.0f;
}

/* c[i, j] (+)= sum_k a[i, k] bp[k, j] for i < mr (a constant after
 * inlining) and the columns in m0 (j < 16) and m1 (16 <= j < 32); `first`:
 * the chunk starting at k = 0, whose sums start from zero. */
__attribute__((target("avx512f"), always_inline)) static inline void
pqfast_gemm_tile(const float *a, ptrdiff_t lda, const int mr, const float *bp,
                 ptrdiff_t kc, int first, float *c, ptrdiff_t ldc, __mmask16 m0,
                 __mmask16 m1)
{
    __m512 acc0[PQFAST_GEMM_MR], acc1[PQFAST_GEMM_MR];
    for (int i = 0; i < mr; i++) {
        acc0[i] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m0, c + i * ldc);
        acc1[i] = first ? _mm512_setzero_ps()
                        : _mm512_maskz_loadu_ps(m1, c + i * ldc + 16);
    }
    for (ptrdiff_t k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(bp + k * PQFAST_GEMM_NR);
        const __m512 b1 = _mm512_load_ps(bp + k * PQFAST_GEMM_NR + 16);
        for (int i = 0; i < mr; i++) {
            const __m512 ai = _mm512_set1_ps(a[i * lda + k]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(c + i * ldc, m0, acc0[i]);
        _mm512_mask_storeu_ps(c + i * ldc + 16, m1, acc1[i]);
    }
}

__attribute__((target("avx512f"))) static void
pqfast_gemm_abt_avx512(const float *a, ptrdiff_t lda, ptrdiff_t na, const float *b,
                       ptrdiff_t ldb, ptrdiff_t nb, ptrdiff_t dim, float *c)
{
    float bp[PQFAST_GEMM_KC * PQFAST_GEMM_NR] __attribute__((aligned(64)));
    if (dim <= 0) { /* empty sums, as BLAS writes them */
        for (ptrdiff_t i = 0; i < na * nb; i++)
            c[i] = 0.0f;
        return;
    }
    for (ptrdiff_t k0 = 0; k0 < dim; k0 += PQFAST_GEMM_KC) {
        const ptrdiff_t kc = dim - k0 < PQFAST_GEMM_KC ? dim - k0 : PQFAST_GEMM_KC;
        for (ptrdiff_t j0 = 0; j0 < nb; j0 += PQFAST_GEMM_NR) {
            const ptrdiff_t n = nb - j0 < PQFAST_GEMM_NR ? nb - j0 : PQFAST_GEMM_NR;
            const __mmask16 m0 = pqfast_live16(n);
            const __mmask16 m1 = n > 16 ? pqfast_live16(n - 16) : (__mmask16)0;
            pqfast_gemm_pack(b + j0 * ldb + k0, ldb, n, kc, bp);
            for (ptrdiff_t i0 = 0; i0 < na; i0 += PQFAST_GEMM_MR) {
                const float *ai = a + i0 * lda + k0;
                float *ci = c + i0 * nb + j0;
                switch (na - i0 < PQFAST_GEMM_MR ? na - i0 : PQFAST_GEMM_MR) {
#define PQFAST_GEMM_CASE(r)                                                        \
    case r:                                                                        \
        pqfast_gemm_tile(ai, lda, r, bp, kc, k0 == 0, ci, nb, m0, m1);             \
        break;
                    PQFAST_GEMM_CASE(1) PQFAST_GEMM_CASE(2) PQFAST_GEMM_CASE(3)
                    PQFAST_GEMM_CASE(4) PQFAST_GEMM_CASE(5) PQFAST_GEMM_CASE(6)
                    PQFAST_GEMM_CASE(7) PQFAST_GEMM_CASE(8)
#undef PQFAST_GEMM_CASE
                }
            }
        }
    }
}
#endif

/* 1 when pqfast_gemm_abt runs (the CPU has AVX-512 and max_level >= 2);
 * otherwise the caller uses BLAS. */
static int pqfast_gemm_own(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    return max_level >= 2 && __builtin_cpu_supports("avx512f");
#else
    (void)max_level;
    return 0;
#endif
}

/* C = A B^T as above; only where pqfast_gemm_own says so (elsewhere this is
 * an empty stub: callers must use BLAS). */
static void pqfast_gemm_abt(const float *a, ptrdiff_t lda, ptrdiff_t na, const float *b,
                            ptrdiff_t ldb, ptrdiff_t nb, ptrdiff_t dim, float *c)
{
#if defined(__GNUC__) && defined(__x86_64__)
    pqfast_gemm_abt_avx512(a, lda, na, b, ldb, nb, dim, c);
#else
    (void)a, (void)lda, (void)na, (void)b, (void)ldb, (void)nb, (void)dim, (void)c;
#endif
}

/* out[j] = ||x - y_j||^2 for the n rows of the row-major (n, d) matrix y,
 * four rows at a time (as pqfast_dots did before #53). */
PQFAST_MULTIVERSION
static void pqfast_l2sq_rows(const float *x, const float *y, ptrdiff_t n, ptrdiff_t d,
                             float *out)
{
    ptrdiff_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *y0 = y + j * d, *y1 = y0 + d, *y2 = y1 + d, *y3 = y2 + d;
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (ptrdiff_t i = 0; i < d; i++) {
            float e0 = x[i] - y0[i], e1 = x[i] - y1[i], e2 = x[i] - y2[i], e3 = x[i] - y3[i];
            s0 += e0 * e0;
            s1 += e1 * e1;
            s2 += e2 * e2;
            s3 += e3 * e3;
        }
        out[j] = s0;
        out[j + 1] = s1;
        out[j + 2] = s2;
        out[j + 3] = s3;
    }
    for (; j < n; j++) {
        const float *yj = y + j * d;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (ptrdiff_t i = 0; i < d; i++) {
            float e = x[i] - yj[i];
            s += e * e;
        }
        out[j] = s;
    }
}

/* Elkan's k-means (C. Elkan, "Using the triangle inequality to accelerate
 * k-means", ICML 2003) keeps, per point, a lower bound on its distance to
 * every centroid, and computes a distance only when its bound does not rule
 * the centroid out.
 *
 * One point of Elkan's assignment step (_kmeans.elkan_assign), for k <= 1024
 * centroids (a multiple of 16), cents (k, d), also stored by blocks of 16
 * (cbb: (k / 16, d, 16)), the point's centroid so far being a (a < 0: none
 * yet, every distance is computed).
 *
 * Bounds are kept as W[j] = (lower bound of the distance to centroid j) +
 * shift[j] at the time, shift[j] being how far centroid j has moved in all
 * (rounded up): by the triangle inequality, W[j] - shift[j] now is a lower
 * bound still, and a bound costs no store until it is refreshed.
 *
 * Computes the distance to a, then the distances to every block holding a
 * centroid other than a whose bound is below that, into dist (FLT_MAX for
 * the blocks skipped, but dist[a] is always set), refreshing their W.
 * Distances carry a relative error below rel; the bounds keep that margin
 * and more, so a centroid is skipped only when it is strictly farther than
 * a.  Returns the nearest centroid when only one is within rel of the
 * smallest distance, else -1 (the caller decides in float64). */
typedef ptrdiff_t (*pqfast_elkan_fn)(const float *, const float *, const float *,
                                     ptrdiff_t, ptrdiff_t, const float *, float *,
                                     ptrdiff_t, float, float *);

/* An upper bound of the distance whose square sq was computed with relative
 * error below rel, and FLT_MIN absolute (subnormal sums); the FLT_MIN outside
 * keeps centroids at distance 0 from being skipped. */
static inline float pqfast_elkan_upper(float sq, float rel)
{
    return (float)(sqrt((double)sq * (1.0 + 2.0 * rel) + FLT_MIN) * (1.0 + 1e-6)) + FLT_MIN;
}

/* W for squared distance sq (errors as above) and shift sh, rounded down.
 * (sh was rounded up, which raises W: the factor 1 - 1e-6 covers that and
 * the roundings here, and the test's factor 1 + 1e-6 covers them again.) */
static inline float pqfast_elkan_w(float sq, float sh, float rel)
{
    const double lo = (double)sq * (1.0 - 2.0 * rel) - FLT_MIN;
    return (float)((sqrt(lo > 0.0 ? lo : 0.0) + (double)sh) * (1.0 - 1e-6));
}

/* After a point's blocks: when the block of its centroid a was skipped,
 * dist[a] and W[a] come from its distance ua, computed apart. */
static inline void pqfast_elkan_keep_a(ptrdiff_t a, float ua, const float *shift,
                                       float rel, float *W, float *dist)
{
    if (a >= 0 && dist[a] == FLT_MAX) {
        dist[a] = ua;
        W[a] = pqfast_elkan_w(ua, shift[a], rel);
    }
}

static ptrdiff_t pqfast_elkan_point_portable(const float *x, const float *cents,
                                             const float *cbb, ptrdiff_t d, ptrdiff_t k,
                                             const float *shift, float *W, ptrdiff_t a,
                                             float rel, float *dist)
{
    float ua = FLT_MAX, u = FLT_MAX;
    if (a >= 0) {
        ua = 0.0f;
        for (ptrdiff_t t = 0; t < d; t++) {
            const float e = x[t] - cents[a * d + t];
            ua += e * e;
        }
        u = pqfast_elkan_upper(ua, rel);
    }
    for (ptrdiff_t b = 0; b < k; b += 16) {
        int hit = a < 0;
        for (int j = 0; j < 16 && !hit; j++)
            hit = (W[b + j] < (u + shift[b + j]) * (1.0f + 1e-6f)) & (b + j != a);
        const float *cb = cbb + b * d;
        for (int j = 0; j < 16; j++) {
            float acc = FLT_MAX;
            if (hit) {
                acc = 0.0f;
                for (ptrdiff_t t = 0; t < d; t++) {
                    const float e = x[t] - cb[t * 16 + j];
                    acc += e * e;
                }
                W[b + j] = pqfast_elkan_w(acc, shift[b + j], rel);
            }
            dist[b + j] = acc;
        }
    }
    pqfast_elkan_keep_a(a, ua, shift, rel, W, dist);
    return -1;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static ptrdiff_t
pqfast_elkan_point_avx512(const float *x, const float *cents, const float *cbb,
                          ptrdiff_t d, ptrdiff_t k, const float *shift, float *W,
                          ptrdiff_t a, float rel, float *dist)
{
    const __m512 zero = _mm512_setzero_ps();
    const __m512 grow = _mm512_set1_ps(1.0f + 1e-6f), down = _mm512_set1_ps(1.0f - 1e-6f);
    const __m512 s = _mm512_set1_ps(1.0f - 2.0f * rel), tiny = _mm512_set1_ps(FLT_MIN);
    float ua = FLT_MAX;
    uint64_t hits = ~(uint64_t)0 >> (64 - k / 16);
    if (a >= 0) {
        __m512 sq = zero;
        for (ptrdiff_t t = 0; t < d; t += 16) {
            const __mmask16 live = pqfast_live16(d - t);
            const __m512 e = _mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + t),
                                           _mm512_maskz_loadu_ps(live, cents + a * d + t));
            sq = _mm512_fmadd_ps(e, e, sq);
        }
        ua = _mm512_reduce_add_ps(sq);
        const __m512 uv = _mm512_set1_ps(pqfast_elkan_upper(ua, rel));
        /* The blocks to compute are found first, then visited: a branch per
         * block mispredicted often (a fifth of the time at d = 12). */
        hits = 0;
        for (ptrdiff_t b = 0; b < k; b += 16) {
            const __m512 sh = _mm512_loadu_ps(shift + b);
            __mmask16 hit = _mm512_cmp_ps_mask(_mm512_loadu_ps(W + b),
                                               _mm512_mul_ps(_mm512_add_ps(uv, sh), grow),
                                               _CMP_LT_OQ);
            if (a >= b && a < b + 16)
                hit &= (__mmask16)~(1u << (a - b));
            hits |= (uint64_t)(hit != 0) << (b / 16);
            _mm512_storeu_ps(dist + b, _mm512_set1_ps(FLT_MAX));
        }
    }
    __m512 mn = _mm512_set1_ps(ua);
    for (uint64_t left = hits; left; left &= left - 1) {
        const ptrdiff_t b = 16 * (ptrdiff_t)__builtin_ctzll(left);
        const float *cb = cbb + b * d;
        /* four sums: one would wait on each FMA's latency (4 cycles) */
        __m512 acc0 = zero, acc1 = zero, acc2 = zero, acc3 = zero;
        ptrdiff_t t = 0;
        for (; t + 4 <= d; t += 4) {
            __m512 e0 = _mm512_sub_ps(_mm512_set1_ps(x[t]), _mm512_loadu_ps(cb + t * 16));
            __m512 e1 = _mm512_sub_ps(_mm512_set1_ps(x[t + 1]),
                                      _mm512_loadu_ps(cb + (t + 1) * 16));
            __m512 e2 = _mm512_sub_ps(_mm512_set1_ps(x[t + 2]),
                                      _mm512_loadu_ps(cb + (t + 2) * 16));
            __m512 e3 = _mm512_sub_ps(_mm512_set1_ps(x[t + 3]),
                                      _mm512_loadu_ps(cb + (t + 3) * 16));
            acc0 = _mm512_fmadd_ps(e0, e0, acc0);
            acc1 = _mm512_fmadd_ps(e1, e1, acc1);
            acc2 = _mm512_fmadd_ps(e2, e2, acc2);
            acc3 = _mm512_fmadd_ps(e3, e3, acc3);
        }
        for (; t < d; t++) {
            __m512 e0 = _mm512_sub_ps(_mm512_set1_ps(x[t]), _mm512_loadu_ps(cb + t * 16));
            acc0 = _mm512_fmadd_ps(e0, e0, acc0);
        }
        const __m512 acc = _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3));
        _mm512_storeu_ps(dist + b, acc);
        /* float32 here: the margins (2 rel, then 1e-6) exceed its roundings */
        const __m512 lo = _mm512_sqrt_ps(
            _mm512_max_ps(_mm512_sub_ps(_mm512_mul_ps(acc, s), tiny), zero));
        _mm512_storeu_ps(W + b, _mm512_mul_ps(_mm512_add_ps(lo, _mm512_loadu_ps(shift + b)),
                                              down));
        mn = _mm512_min_ps(mn, acc);
    }
    pqfast_elkan_keep_a(a, ua, shift, rel, W, dist);
    /* the one candidate within the rounding margin of the smallest, if one */
    const float m = _mm512_reduce_min_ps(mn), thr = m + rel * m + FLT_MIN;
    const __m512 tv = _mm512_set1_ps(thr);
    ptrdiff_t count = 0, best = -1;
    for (uint64_t left = hits; left; left &= left - 1) {
        const ptrdiff_t b = 16 * (ptrdiff_t)__builtin_ctzll(left);
        const unsigned le = _cvtmask16_u32(
            _mm512_cmp_ps_mask(_mm512_loadu_ps(dist + b), tv, _CMP_LE_OQ));
        count += __builtin_popcount(le);
        best = le ? b + __builtin_ctz(le) : best;
    }
    if (a >= 0 && !((hits >> (a / 16)) & 1) && ua <= thr) {
        count++;
        best = a;
    }
    return count == 1 ? best : -1;
}

/* pqfast_elkan_point_avx512 with AVX2: a block of 16 centroids is two
 * vectors of 8. */
__attribute__((target("avx2,fma"))) static inline float pqfast_hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

__attribute__((target("avx2,fma"))) static ptrdiff_t
pqfast_elkan_point_avx2(const float *x, const float *cents, const float *cbb,
                        ptrdiff_t d, ptrdiff_t k, const float *shift, float *W,
                        ptrdiff_t a, float rel, float *dist)
{
    const __m256 zero = _mm256_setzero_ps(), big = _mm256_set1_ps(FLT_MAX);
    const __m256 grow = _mm256_set1_ps(1.0f + 1e-6f), down = _mm256_set1_ps(1.0f - 1e-6f);
    const __m256 s = _mm256_set1_ps(1.0f - 2.0f * rel), tiny = _mm256_set1_ps(FLT_MIN);
    float ua = FLT_MAX;
    uint64_t hits = ~(uint64_t)0 >> (64 - k / 16);
    if (a >= 0) {
        const float *ca = cents + a * d;
        __m256 sq = zero;
        ptrdiff_t t = 0;
        for (; t + 8 <= d; t += 8) {
            const __m256 e = _mm256_sub_ps(_mm256_loadu_ps(x + t), _mm256_loadu_ps(ca + t));
            sq = _mm256_fmadd_ps(e, e, sq);
        }
        ua = pqfast_hsum256(sq);
        for (; t < d; t++)
            ua += (x[t] - ca[t]) * (x[t] - ca[t]);
        const __m256 uv = _mm256_set1_ps(pqfast_elkan_upper(ua, rel));
        hits = 0;
        for (ptrdiff_t b = 0; b < k; b += 16) {
            const __m256 t0 = _mm256_mul_ps(_mm256_add_ps(uv, _mm256_loadu_ps(shift + b)), grow);
            const __m256 t1 =
                _mm256_mul_ps(_mm256_add_ps(uv, _mm256_loadu_ps(shift + b + 8)), grow);
            unsigned hit =
                (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(W + b), t0, _CMP_LT_OQ)) |
                (unsigned)_mm256_movemask_ps(
                    _mm256_cmp_ps(_mm256_loadu_ps(W + b + 8), t1, _CMP_LT_OQ)) << 8;
            if (a >= b && a < b + 16)
                hit &= ~(1u << (a - b));
            hits |= (uint64_t)(hit != 0) << (b / 16);
            _mm256_storeu_ps(dist + b, big);
            _mm256_storeu_ps(dist + b + 8, big);
        }
    }
    __m256 mn = _mm256_set1_ps(ua);
    for (uint64_t left = hits; left; left &= left - 1) {
        const ptrdiff_t b = 16 * (ptrdiff_t)__builtin_ctzll(left);
        const float *cb = cbb + b * d;
        __m256 l0 = zero, l1 = zero, h0 = zero, h1 = zero;
        ptrdiff_t t = 0;
        for (; t + 2 <= d; t += 2) {
            const __m256 x0 = _mm256_set1_ps(x[t]), x1 = _mm256_set1_ps(x[t + 1]);
            __m256 e = _mm256_sub_ps(x0, _mm256_loadu_ps(cb + t * 16));
            l0 = _mm256_fmadd_ps(e, e, l0);
            e = _mm256_sub_ps(x0, _mm256_loadu_ps(cb + t * 16 + 8));
            h0 = _mm256_fmadd_ps(e, e, h0);
            e = _mm256_sub_ps(x1, _mm256_loadu_ps(cb + t * 16 + 16));
            l1 = _mm256_fmadd_ps(e, e, l1);
            e = _mm256_sub_ps(x1, _mm256_loadu_ps(cb + t * 16 + 24));
            h1 = _mm256_fmadd_ps(e, e, h1);
        }
        if (t < d) {
            const __m256 x0 = _mm256_set1_ps(x[t]);
            __m256 e = _mm256_sub_ps(x0, _mm256_loadu_ps(cb + t * 16));
            l0 = _mm256_fmadd_ps(e, e, l0);
            e = _mm256_sub_ps(x0, _mm256_loadu_ps(cb + t * 16 + 8));
            h0 = _mm256_fmadd_ps(e, e, h0);
        }
        const __m256 lo = _mm256_add_ps(l0, l1), hi = _mm256_add_ps(h0, h1);
        _mm256_storeu_ps(dist + b, lo);
        _mm256_storeu_ps(dist + b + 8, hi);
        /* float32 here: the margins (2 rel, then 1e-6) exceed its roundings */
        const __m256 r0 = _mm256_sqrt_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_mul_ps(lo, s), tiny), zero));
        const __m256 r1 = _mm256_sqrt_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_mul_ps(hi, s), tiny), zero));
        _mm256_storeu_ps(W + b, _mm256_mul_ps(_mm256_add_ps(r0, _mm256_loadu_ps(shift + b)), down));
        _mm256_storeu_ps(W + b + 8,
                         _mm256_mul_ps(_mm256_add_ps(r1, _mm256_loadu_ps(shift + b + 8)), down));
        mn = _mm256_min_ps(mn, _mm256_min_ps(lo, hi));
    }
    pqfast_elkan_keep_a(a, ua, shift, rel, W, dist);
    float mins[8], m = FLT_MAX;
    _mm256_storeu_ps(mins, mn);
    for (int j = 0; j < 8; j++)
        m = mins[j] < m ? mins[j] : m;
    const float thr = m + rel * m + FLT_MIN;
    const __m256 tv = _mm256_set1_ps(thr);
    ptrdiff_t count = 0, best = -1;
    for (uint64_t left = hits; left; left &= left - 1) {
        const ptrdiff_t b = 16 * (ptrdiff_t)__builtin_ctzll(left);
        const unsigned le =
            (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(dist + b), tv, _CMP_LE_OQ)) |
            (unsigned)_mm256_movemask_ps(
                _mm256_cmp_ps(_mm256_loadu_ps(dist + b + 8), tv, _CMP_LE_OQ)) << 8;
        count += __builtin_popcount(le);
        best = le ? b + __builtin_ctz(le) : best;
    }
    if (a >= 0 && !((hits >> (a / 16)) & 1) && ua <= thr) {
        count++;
        best = a;
    }
    return count == 1 ? best : -1;
}
#endif

/* The SIMD level of pqfast_elkan_impl(max_level): 2 AVX-512, 1 AVX2, 0 the
 * portable version, which defers every point to the caller's float64 choice
 * and costs more than an exhaustive pass (k-means then skips the bounds). */
static int pqfast_elkan_fast(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return 2;
    return max_level >= 1 && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
#else
    (void)max_level;
    return 0;
#endif
}

static pqfast_elkan_fn pqfast_elkan_impl(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    const int level = pqfast_elkan_fast(max_level);
    if (level == 2)
        return pqfast_elkan_point_avx512;
    if (level == 1)
        return pqfast_elkan_point_avx2;
#endif
    (void)max_level;
    return pqfast_elkan_point_portable;
}

/* Direct squared distances for PQ encoding.  Each version computes
 * out[j] = ||x - y_j||^2 for the ksub centroids y_j of one sub-quantizer,
 * stored transposed (cbt[s * ksub + j], s < dsub, dsub >= 1), and returns the
 * smallest; this is the direct small-dsub encoding of faiss (fvec_L2sqr_ny),
 * one vector of centroids at a time.
 *
 * The differences are taken directly instead of ||x||^2 + ||y||^2 - 2<x, y>:
 * every term is non-negative, so each distance carries a relative error of at
 * most about (dsub + 2) u (u = 2^-24; Higham, "Accuracy and Stability of
 * Numerical Algorithms", 2nd ed., sec. 4.2), whatever the norms.  (Versions
 * may round differently, with or without FMA; the encoder decides near ties in
 * float64, so the codes do not depend on the version.) */
typedef float (*pqfast_l2sq_cols_fn)(const float *, const float *, ptrdiff_t,
                                     ptrdiff_t, float *);

/* Portable version: the inner loop streams contiguous centroids. */
PQFAST_MULTIVERSION
static float pqfast_l2sq_cols_portable(const float *x, const float *cbt,
                                       ptrdiff_t dsub, ptrdiff_t ksub, float *out)
{
    const float x0 = x[0];
#pragma omp simd
    for (ptrdiff_t j = 0; j < ksub; j++) {
        float e = x0 - cbt[j];
        out[j] = e * e;
    }
    for (ptrdiff_t s = 1; s < dsub; s++) {
        const float xs = x[s];
        const float *row = cbt + s * ksub;
#pragma omp simd
        for (ptrdiff_t j = 0; j < ksub; j++) {
            float e = xs - row[j];
            out[j] += e * e;
        }
    }
    float m = 3.402823466e+38f;
#pragma omp simd reduction(min : m)
    for (ptrdiff_t j = 0; j < ksub; j++)
        m = out[j] < m ? out[j] : m;
    return m;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* AVX-512 and AVX2 versions, for ksub a multiple of 64: 64 centroids at a
 * time are accumulated in registers over all s (four AVX-512 or eight AVX2
 * vectors, independent multiply-add chains) and stored once.  The portable
 * loop, which adds into out[] for each s, is bound by its stores. */
__attribute__((target("avx512f"))) static float
pqfast_l2sq_cols_avx512(const float *x, const float *cbt, ptrdiff_t dsub,
                        ptrdiff_t ksub, float *out)
{
    __m512 mn = _mm512_set1_ps(3.402823466e+38f);
    for (ptrdiff_t j0 = 0; j0 < ksub; j0 += 64) {
        const float *c = cbt + j0;
        __m512 a[4], xs = _mm512_set1_ps(x[0]);
        for (int v = 0; v < 4; v++) {
            __m512 e = _mm512_sub_ps(xs, _mm512_loadu_ps(c + 16 * v));
            a[v] = _mm512_mul_ps(e, e);
        }
        for (ptrdiff_t s = 1; s < dsub; s++) {
            c += ksub;
            xs = _mm512_set1_ps(x[s]);
            for (int v = 0; v < 4; v++) {
                __m512 e = _mm512_sub_ps(xs, _mm512_loadu_ps(c + 16 * v));
                a[v] = _mm512_fmadd_ps(e, e, a[v]);
            }
        }
        for (int v = 0; v < 4; v++) {
            _mm512_storeu_ps(out + j0 + 16 * v, a[v]);
            mn = _mm512_min_ps(mn, a[v]);
        }
    }
    return _mm512_reduce_min_ps(mn);
}

__attribute__((target("avx2,fma"))) static float
pqfast_l2sq_cols_avx2(const float *x, const float *cbt, ptrdiff_t dsub,
                      ptrdiff_t ksub, float *out)
{
    __m256 mn = _mm256_set1_ps(3.402823466e+38f);
    for (ptrdiff_t j0 = 0; j0 < ksub; j0 += 64) {
        const float *c = cbt + j0;
        __m256 a[8], xs = _mm256_set1_ps(x[0]);
        for (int v = 0; v < 8; v++) {
            __m256 e = _mm256_sub_ps(xs, _mm256_loadu_ps(c + 8 * v));
            a[v] = _mm256_mul_ps(e, e);
        }
        for (ptrdiff_t s = 1; s < dsub; s++) {
            c += ksub;
            xs = _mm256_set1_ps(x[s]);
            for (int v = 0; v < 8; v++) {
                __m256 e = _mm256_sub_ps(xs, _mm256_loadu_ps(c + 8 * v));
                a[v] = _mm256_fmadd_ps(e, e, a[v]);
            }
        }
        for (int v = 0; v < 8; v++) {
            _mm256_storeu_ps(out + j0 + 8 * v, a[v]);
            mn = _mm256_min_ps(mn, a[v]);
        }
    }
    return pqfast_hmin8(mn);
}

/* pqfast_l2sq_cols_avx512 for two rows at once: each centroid vector loaded
 * serves both, so the loop is bound by the floating-point pipes rather than
 * by the loads (four loads for four multiply-adds per row and s before).
 * Each row's operations are those of the one-row version, in the same order,
 * so its distances are bit-identical.  mins[r] = min of row r. */
typedef void (*pqfast_l2sq_cols2_fn)(const float *, const float *, const float *,
                                     ptrdiff_t, ptrdiff_t, float *, float *, float *);

__attribute__((target("avx512f"))) static void
pqfast_l2sq_cols2_avx512(const float *x0, const float *x1, const float *cbt,
                         ptrdiff_t dsub, ptrdiff_t ksub, float *out0, float *out1,
                         float *mins)
{
    __m512 mn0 = _mm512_set1_ps(3.402823466e+38f), mn1 = mn0;
    for (ptrdiff_t j0 = 0; j0 < ksub; j0 += 64) {
        const float *c = cbt + j0;
        __m512 a[4], b[4];
        __m512 xs0 = _mm512_set1_ps(x0[0]), xs1 = _mm512_set1_ps(x1[0]);
        for (int v = 0; v < 4; v++) {
            __m512 y = _mm512_loadu_ps(c + 16 * v);
            __m512 e0 = _mm512_sub_ps(xs0, y), e1 = _mm512_sub_ps(xs1, y);
            a[v] = _mm512_mul_ps(e0, e0);
            b[v] = _mm512_mul_ps(e1, e1);
        }
        for (ptrdiff_t s = 1; s < dsub; s++) {
            c += ksub;
            xs0 = _mm512_set1_ps(x0[s]);
            xs1 = _mm512_set1_ps(x1[s]);
            for (int v = 0; v < 4; v++) {
                __m512 y = _mm512_loadu_ps(c + 16 * v);
                __m512 e0 = _mm512_sub_ps(xs0, y), e1 = _mm512_sub_ps(xs1, y);
                a[v] = _mm512_fmadd_ps(e0, e0, a[v]);
                b[v] = _mm512_fmadd_ps(e1, e1, b[v]);
            }
        }
        for (int v = 0; v < 4; v++) {
            _mm512_storeu_ps(out0 + j0 + 16 * v, a[v]);
            _mm512_storeu_ps(out1 + j0 + 16 * v, b[v]);
            mn0 = _mm512_min_ps(mn0, a[v]);
            mn1 = _mm512_min_ps(mn1, b[v]);
        }
    }
    mins[0] = _mm512_reduce_min_ps(mn0);
    mins[1] = _mm512_reduce_min_ps(mn1);
}

/* Versions for ksub a multiple of 16 but not of 64 (4- and 5-bit codes, or
 * k-means with such k), 16 centroids at a time:
 * too few registers for independent chains across centroids, so the sum over
 * s is split into four interleaved partial sums (chains s mod 4).  The
 * portable loop's add into out[] per s waits on its own store (measured
 * 3.4x slower, 10k x 384, M=8, 4 bits).  All terms are still non-negative,
 * so the error bound of the encoder holds for this order too. */
__attribute__((target("avx512f"))) static float
pqfast_l2sq_cols16_avx512(const float *x, const float *cbt, ptrdiff_t dsub,
                          ptrdiff_t ksub, float *out)
{
    __m512 mn = _mm512_set1_ps(3.402823466e+38f);
    for (ptrdiff_t j0 = 0; j0 < ksub; j0 += 16) {
        __m512 a[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                       _mm512_setzero_ps()};
        ptrdiff_t s = 0;
        for (; s + 4 <= dsub; s += 4)
            for (int v = 0; v < 4; v++) {
                __m512 e = _mm512_sub_ps(_mm512_set1_ps(x[s + v]),
                                         _mm512_loadu_ps(cbt + (s + v) * ksub + j0));
                a[v] = _mm512_fmadd_ps(e, e, a[v]);
            }
        for (; s < dsub; s++) {
            __m512 e = _mm512_sub_ps(_mm512_set1_ps(x[s]),
                                     _mm512_loadu_ps(cbt + s * ksub + j0));
            a[0] = _mm512_fmadd_ps(e, e, a[0]);
        }
        __m512 r = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        _mm512_storeu_ps(out + j0, r);
        mn = _mm512_min_ps(mn, r);
    }
    return _mm512_reduce_min_ps(mn);
}

__attribute__((target("avx2,fma"))) static float
pqfast_l2sq_cols16_avx2(const float *x, const float *cbt, ptrdiff_t dsub,
                        ptrdiff_t ksub, float *out)
{
    __m256 mn = _mm256_set1_ps(3.402823466e+38f);
    for (ptrdiff_t j0 = 0; j0 < ksub; j0 += 16) {
        __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};  /* (chain, half): a[2 c + h] */
        ptrdiff_t s = 0;
        for (; s + 2 <= dsub; s += 2)
            for (int c = 0; c < 2; c++) {
                const float *row = cbt + (s + c) * ksub + j0;
                __m256 xs = _mm256_set1_ps(x[s + c]);
                __m256 e0 = _mm256_sub_ps(xs, _mm256_loadu_ps(row));
                __m256 e1 = _mm256_sub_ps(xs, _mm256_loadu_ps(row + 8));
                a[2 * c] = _mm256_fmadd_ps(e0, e0, a[2 * c]);
                a[2 * c + 1] = _mm256_fmadd_ps(e1, e1, a[2 * c + 1]);
            }
        if (s < dsub) {
            const float *row = cbt + s * ksub + j0;
            __m256 xs = _mm256_set1_ps(x[s]);
            __m256 e0 = _mm256_sub_ps(xs, _mm256_loadu_ps(row));
            __m256 e1 = _mm256_sub_ps(xs, _mm256_loadu_ps(row + 8));
            a[0] = _mm256_fmadd_ps(e0, e0, a[0]);
            a[1] = _mm256_fmadd_ps(e1, e1, a[1]);
        }
        __m256 r0 = _mm256_add_ps(a[0], a[2]), r1 = _mm256_add_ps(a[1], a[3]);
        _mm256_storeu_ps(out + j0, r0);
        _mm256_storeu_ps(out + j0 + 8, r1);
        mn = _mm256_min_ps(mn, _mm256_min_ps(r0, r1));
    }
    return pqfast_hmin8(mn);
}
#endif

/* The best version for this CPU and ksub, up to max_level (0 portable,
 * 1 AVX2 + FMA, 2 AVX-512); the encoder asks for 2, tests for each level. */
static pqfast_l2sq_cols_fn pqfast_l2sq_cols_impl(int max_level, ptrdiff_t ksub)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (ksub % 64 == 0) {
        if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
            return pqfast_l2sq_cols_avx512;
        if (max_level >= 1 && __builtin_cpu_supports("avx2") &&
            __builtin_cpu_supports("fma"))
            return pqfast_l2sq_cols_avx2;
    } else if (ksub % 16 == 0) {
        if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
            return pqfast_l2sq_cols16_avx512;
        if (max_level >= 1 && __builtin_cpu_supports("avx2") &&
            __builtin_cpu_supports("fma"))
            return pqfast_l2sq_cols16_avx2;
    }
#endif
    (void)max_level;
    (void)ksub;
    return pqfast_l2sq_cols_portable;
}

/* The two-row version for this CPU and ksub, or NULL (use the one-row one). */
static pqfast_l2sq_cols2_fn pqfast_l2sq_cols2_impl(int max_level, ptrdiff_t ksub)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (ksub % 64 == 0 && max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_l2sq_cols2_avx512;
#endif
    (void)max_level;
    (void)ksub;
    return NULL;
}

/* Candidate count for the encoder: how many of d[0..n) are <= thr, capped at
 * 2 (n < 2^31), and *last = the largest such j (-1 if none).  With a count of
 * 1, *last is the only candidate. */
typedef int (*pqfast_count_le_fn)(const float *, ptrdiff_t, float, int *);

/* Portable version: the running maximum takes j or -1, so each step depends
 * on the last only through one max. */
PQFAST_MULTIVERSION
static int pqfast_count_le_portable(const float *d, ptrdiff_t n, float thr, int *last)
{
    int count = 0, lastj = -1;
#pragma omp simd reduction(+ : count) reduction(max : lastj)
    for (int j = 0; j < (int)n; j++) {
        int hit = d[j] <= thr;
        int cand = hit ? j : -1;
        count += hit;
        lastj = cand > lastj ? cand : lastj;
    }
    *last = lastj;
    return count < 2 ? count : 2;
}

#if defined(__GNUC__) && defined(__x86_64__)
/* AVX-512 and AVX2 versions, n a multiple of 64: the compare masks of 64
 * values are joined into one 64-bit word, so the scalar work (popcount, last
 * set bit) is per 64 values rather than per vector. */
__attribute__((target("avx512f,avx512bw,popcnt"))) static int
pqfast_count_le_avx512(const float *d, ptrdiff_t n, float thr, int *last)
{
    const __m512 t = _mm512_set1_ps(thr);
    int count = 0, lastj = -1;
    for (ptrdiff_t j = 0; j < n; j += 64) {
        __mmask16 k0 = _mm512_cmp_ps_mask(_mm512_loadu_ps(d + j), t, _CMP_LE_OQ);
        __mmask16 k1 = _mm512_cmp_ps_mask(_mm512_loadu_ps(d + j + 16), t, _CMP_LE_OQ);
        __mmask16 k2 = _mm512_cmp_ps_mask(_mm512_loadu_ps(d + j + 32), t, _CMP_LE_OQ);
        __mmask16 k3 = _mm512_cmp_ps_mask(_mm512_loadu_ps(d + j + 48), t, _CMP_LE_OQ);
        __mmask64 k = _mm512_kunpackd(_mm512_kunpackw(k3, k2), _mm512_kunpackw(k1, k0));
        uint64_t bits = _cvtmask64_u64(k);
        count += (int)_mm_popcnt_u64(bits);
        lastj = bits ? (int)j + 63 - __builtin_clzll(bits) : lastj;
    }
    *last = lastj;
    return count < 2 ? count : 2;
}

/* For n a multiple of 16 but not of 64 (ksub = 16: 4-bit codes): one compare
 * per 16 values (the portable loop took a quarter of 4-bit encoding time). */
__attribute__((target("avx512f,popcnt"))) static int
pqfast_count_le16_avx512(const float *d, ptrdiff_t n, float thr, int *last)
{
    const __m512 t = _mm512_set1_ps(thr);
    int count = 0, lastj = -1;
    for (ptrdiff_t j = 0; j < n; j += 16) {
        unsigned bits = _cvtmask16_u32(_mm512_cmp_ps_mask(_mm512_loadu_ps(d + j), t, _CMP_LE_OQ));
        count += __builtin_popcount(bits);
        lastj = bits ? (int)j + 31 - __builtin_clz(bits) : lastj;
    }
    *last = lastj;
    return count < 2 ? count : 2;
}

__attribute__((target("avx2,popcnt"))) static int
pqfast_count_le_avx2(const float *d, ptrdiff_t n, float thr, int *last)
{
    const __m256 t = _mm256_set1_ps(thr);
    int count = 0, lastj = -1;
    for (ptrdiff_t j = 0; j < n; j += 64) {
        uint64_t bits = 0;
        for (int v = 0; v < 8; v++) {
            __m256 le = _mm256_cmp_ps(_mm256_loadu_ps(d + j + 8 * v), t, _CMP_LE_OQ);
            bits |= (uint64_t)(unsigned)_mm256_movemask_ps(le) << (8 * v);
        }
        count += (int)_mm_popcnt_u64(bits);
        lastj = bits ? (int)j + 63 - __builtin_clzll(bits) : lastj;
    }
    *last = lastj;
    return count < 2 ? count : 2;
}
#endif

/* The best version for this CPU and n, up to max_level (as for
 * pqfast_l2sq_cols_impl). */
static pqfast_count_le_fn pqfast_count_le_impl(int max_level, ptrdiff_t n)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (n % 64 == 0) {
        if (max_level >= 2 && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("popcnt"))
            return pqfast_count_le_avx512;
        if (max_level >= 1 && __builtin_cpu_supports("avx2") &&
            __builtin_cpu_supports("popcnt"))
            return pqfast_count_le_avx2;
    } else if (n % 16 == 0 && max_level >= 2 && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("popcnt")) {
        return pqfast_count_le16_avx512;
    }
#endif
    (void)max_level;
    (void)n;
    return pqfast_count_le_portable;
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

/* pqfast_dot_table for nq queries, query q's table at out + q * ldo.  A
 * single query's table streams the whole codebook (384 KB at d=384, 8 bits)
 * from L2 and is bound by that (measured 5 us for M=16); here each codebook
 * row is loaded once for up to 8 queries, their partial sums held in
 * registers.  Every query table goes through this function, one query or
 * many, and each entry is summed in the same order, so a query's table does
 * not depend on the batch it came in. */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
/* nq is a constant after inlining (see the switch below), so the nq
 * accumulators stay in registers and no lane is wasted. */
/* Sub-vectors up to this long have their scaled query values written to a
 * buffer once per sub-quantizer, then broadcast from memory (a load); longer
 * ones are scaled at each use, a multiply and a register broadcast that
 * compete with the multiply-adds (M=32 nprobe 4 batch: see PERFORMANCE.md). */
#define PQFAST_DT_BUF 64

__attribute__((target("avx512f"), always_inline)) static inline void
pqfast_dot_tables_avx512_m(const float *xv, ptrdiff_t ldx, float mul, const int nq,
                           const float *cbt_m, ptrdiff_t dsub, ptrdiff_t ksub,
                           float *out_m, ptrdiff_t ldo)
{
    for (ptrdiff_t j = 0; j < ksub; j += 16) {
        __m512 acc[8];
        for (int q = 0; q < nq; q++)
            acc[q] = _mm512_loadu_ps(out_m + q * ldo + j);
        for (ptrdiff_t s = 0; s < dsub; s++) {
            const __m512 row = _mm512_loadu_ps(cbt_m + s * ksub + j);
            for (int q = 0; q < nq; q++)
                acc[q] = _mm512_fmadd_ps(_mm512_set1_ps(mul * xv[q * ldx + s]), row, acc[q]);
        }
        for (int q = 0; q < nq; q++)
            _mm512_storeu_ps(out_m + q * ldo + j, acc[q]);
    }
}

__attribute__((target("avx512f"), always_inline)) static inline void
pqfast_dot_tables_avx512_n(const float *x, ptrdiff_t ldx, const int nq, const float *cbt,
                           ptrdiff_t M, ptrdiff_t dsub, ptrdiff_t ksub, float scale,
                           float *out, ptrdiff_t ldo)
{
    float xs[8 * PQFAST_DT_BUF]; /* scale * x, the same product either way */
    for (ptrdiff_t m = 0; m < M; m++) {
        const float *cbt_m = cbt + m * dsub * ksub;
        if (dsub <= PQFAST_DT_BUF) {
            for (int q = 0; q < nq; q++)
                for (ptrdiff_t s = 0; s < dsub; s++)
                    xs[q * PQFAST_DT_BUF + s] = scale * x[q * ldx + m * dsub + s];
            pqfast_dot_tables_avx512_m(xs, PQFAST_DT_BUF, 1.0f, nq, cbt_m, dsub, ksub,
                                       out + m * ksub, ldo);
        } else {
            pqfast_dot_tables_avx512_m(x + m * dsub, ldx, scale, nq, cbt_m, dsub, ksub,
                                       out + m * ksub, ldo);
        }
    }
}

/* One query, ksub a multiple of 64.  A multiple of 256 (8-bit codes): the
 * 256 sums of a sub-quantizer in 16 registers, its dsub codebook rows read
 * in order, one stream (four column blocks at a time, walking down the rows
 * 1 KB apart, took 3.1 us at M = 32, d = 384, against 2.5; PERFORMANCE.md
 * #53).  Otherwise four column blocks at a time.  Either way each entry is
 * one chain of multiply-adds over s in order, as above, so the table is
 * bit-identical. */
__attribute__((target("avx512f"))) static void
pqfast_dot_table1_avx512(const float *x, const float *cbt, ptrdiff_t M, ptrdiff_t dsub,
                         ptrdiff_t ksub, float scale, float *out)
{
    for (ptrdiff_t m = 0; m < M; m++) {
        ptrdiff_t j = 0;
        for (; j + 256 <= ksub; j += 256) {
            float *o = out + m * ksub + j;
            __m512 a[16];
            for (int t = 0; t < 16; t++)
                a[t] = _mm512_loadu_ps(o + 16 * t);
            for (ptrdiff_t s = 0; s < dsub; s++) {
                const float *row = cbt + (m * dsub + s) * ksub + j;
                const __m512 xs = _mm512_set1_ps(scale * x[m * dsub + s]);
                for (int t = 0; t < 16; t++)
                    a[t] = _mm512_fmadd_ps(xs, _mm512_loadu_ps(row + 16 * t), a[t]);
            }
            for (int t = 0; t < 16; t++)
                _mm512_storeu_ps(o + 16 * t, a[t]);
        }
        for (; j < ksub; j += 64) {
            float *o = out + m * ksub + j;
            __m512 a0 = _mm512_loadu_ps(o), a1 = _mm512_loadu_ps(o + 16),
                   a2 = _mm512_loadu_ps(o + 32), a3 = _mm512_loadu_ps(o + 48);
            for (ptrdiff_t s = 0; s < dsub; s++) {
                const float *row = cbt + (m * dsub + s) * ksub + j;
                const __m512 xs = _mm512_set1_ps(scale * x[m * dsub + s]);
                a0 = _mm512_fmadd_ps(xs, _mm512_loadu_ps(row), a0);
                a1 = _mm512_fmadd_ps(xs, _mm512_loadu_ps(row + 16), a1);
                a2 = _mm512_fmadd_ps(xs, _mm512_loadu_ps(row + 32), a2);
                a3 = _mm512_fmadd_ps(xs, _mm512_loadu_ps(row + 48), a3);
            }
            _mm512_storeu_ps(o, a0);
            _mm512_storeu_ps(o + 16, a1);
            _mm512_storeu_ps(o + 32, a2);
            _mm512_storeu_ps(o + 48, a3);
        }
    }
}

__attribute__((target("avx512f"))) static void
pqfast_dot_tables_avx512(const float *x, ptrdiff_t ldx, ptrdiff_t nq, const float *cbt,
                         ptrdiff_t M, ptrdiff_t dsub, ptrdiff_t ksub, float scale,
                         float *out, ptrdiff_t ldo)
{
    if (nq == 1 && ksub % 64 == 0) {
        pqfast_dot_table1_avx512(x, cbt, M, dsub, ksub, scale, out);
        return;
    }
    for (ptrdiff_t q0 = 0; q0 < nq; q0 += 8) {
        const float *xq = x + q0 * ldx;
        float *oq = out + q0 * ldo;
        switch (nq - q0 < 8 ? nq - q0 : 8) {
#define PQFAST_DT_CASE(n)                                                                  \
    case n:                                                                                \
        pqfast_dot_tables_avx512_n(xq, ldx, n, cbt, M, dsub, ksub, scale, oq, ldo);        \
        break;
            PQFAST_DT_CASE(1) PQFAST_DT_CASE(2) PQFAST_DT_CASE(3) PQFAST_DT_CASE(4)
            PQFAST_DT_CASE(5) PQFAST_DT_CASE(6) PQFAST_DT_CASE(7) PQFAST_DT_CASE(8)
#undef PQFAST_DT_CASE
        }
    }
}
#endif

static void pqfast_dot_tables(const float *x, ptrdiff_t ldx, ptrdiff_t nq,
                              const float *cbt, ptrdiff_t M, ptrdiff_t dsub,
                              ptrdiff_t ksub, float scale, float *out, ptrdiff_t ldo)
{
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
    if (ksub % 16 == 0 && __builtin_cpu_supports("avx512f")) {
        pqfast_dot_tables_avx512(x, ldx, nq, cbt, M, dsub, ksub, scale, out, ldo);
        return;
    }
#endif
    for (ptrdiff_t q = 0; q < nq; q++)
        pqfast_dot_table(x + q * ldx, cbt, M, dsub, ksub, scale, out + q * ldo);
}

/* out[i] = base + sum_m table[m, codes[i, m]] for n 8-bit codes of M bytes,
 * table rows of 256 floats.
 *
 * Per group of eight sub-codes, four are split from one 32-bit load with
 * shifts and four are loaded as bytes, which balances ALU and load ports;
 * the eight table entries are summed as a tree, which keeps the chains of
 * dependent float additions short.  No heap logic here: the caller filters
 * the block against its threshold afterwards.  The summation order is fixed
 * (group sums added in m order), so results do not depend on threads or on
 * which of the versions below runs. */
static inline float pqfast_adc8_group(const float *t, const uint8_t *c)
{
    /* half the sub-codes split from a 32-bit word with shifts (ALU), half
     * loaded as bytes (load ports): balances the two */
    uint32_t w;
    memcpy(&w, c, 4);
    const float s01 = t[0 * 256 + (w & 255)] + t[1 * 256 + ((w >> 8) & 255)];
    const float s23 = t[2 * 256 + ((w >> 16) & 255)] + t[3 * 256 + (w >> 24)];
    const float s45 = t[4 * 256 + c[4]] + t[5 * 256 + c[5]];
    const float s67 = t[6 * 256 + c[6]] + t[7 * 256 + c[7]];
    return (s01 + s23) + (s45 + s67);
}

/* The loop for a fixed M: fully unrolled, with no inner loop or tail, it
 * needs few enough registers that nothing spills per code.  One query over
 * 9000 codes, M = 8: 17.6 -> 13.9 us in isolation, near the load-port limit
 * (PERFORMANCE.md, optimization 43). */
#define PQFAST_ADC8_FIXED(MM)                                                             \
    PQFAST_NO_VECTORIZE static void pqfast_adc8_block_m##MM(                              \
        const float *table, const uint8_t *codes, ptrdiff_t n, float base, float *out)    \
    {                                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                               \
            const uint8_t *c = codes + i * MM;                                            \
            float acc = 0;                                                                \
            for (int m = 0; m < MM; m += 8)                                               \
                acc += pqfast_adc8_group(table + m * 256, c + m);                         \
            out[i] = base + acc;                                                          \
        }                                                                                 \
    }
PQFAST_ADC8_FIXED(8)
PQFAST_ADC8_FIXED(16)
PQFAST_ADC8_FIXED(32)
#undef PQFAST_ADC8_FIXED

/* Any other M: not vectorized either (M = 12 / 24, one query over 100k
 * codes: 400 -> 348 / 630 -> 525 us).  From M = 48 the table (48 KiB) no
 * longer fits L1, and its loads from L2 bound the scan (M = 64: 42 M codes/s
 * against the model's 86 M; an unrolled loop for 48 and 64 did not help). */
PQFAST_NO_VECTORIZE static void pqfast_adc8_block_any(const float *table,
                                                      const uint8_t *codes, ptrdiff_t n,
                                                      ptrdiff_t M, float base, float *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        float acc = 0;
        ptrdiff_t m = 0;
        for (; m + 8 <= M; m += 8)
            acc += pqfast_adc8_group(table + m * 256, c + m);
        for (; m < M; m++)
            acc += table[m * 256 + c[m]];
        out[i] = base + acc;
    }
}

static inline void pqfast_adc8_block(const float *table, const uint8_t *codes,
                                     ptrdiff_t n, ptrdiff_t M, float base, float *out)
{
    switch (M) {
    case 8: pqfast_adc8_block_m8(table, codes, n, base, out); return;
    case 16: pqfast_adc8_block_m16(table, codes, n, base, out); return;
    case 32: pqfast_adc8_block_m32(table, codes, n, base, out); return;
    }
    pqfast_adc8_block_any(table, codes, n, M, base, out);
}

/* 4-bit codes (two sub-codes a byte, low nibble first, as faiss packs them):
 * out[i] = base + (table[0, c_i0] + table[1, c_i1] + ...), summed in m order
 * as the generic bit-stream loop of _common.pxd does, so results are the
 * same; here without its per-sub-code shifts, masks and branches. */
static inline void pqfast_adc4_block(const float *table, const uint8_t *codes,
                                     ptrdiff_t n, ptrdiff_t M, ptrdiff_t code_size,
                                     float base, float *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * code_size;
        float acc = 0;
        ptrdiff_t m = 0;
        for (; m + 2 <= M; m += 2) {
            const uint8_t b = c[m >> 1];
            acc += table[m * 16 + (b & 15)];
            acc += table[m * 16 + 16 + (b >> 4)];
        }
        if (m < M)
            acc += table[m * 16 + (c[m >> 1] & 15)];
        out[i] = base + acc;
    }
}

/* Distances to 8-bit PQ codes from the codebook itself, without a lookup
 * table: out[i] = base + sum_m ||r_m - y_m,c_im||^2 (l2), or base - sum_m
 * <r_m, y_m,c_im> (inner product), with cents the (M, 256, dsub) codebook.
 * A table costs 256 d multiply-adds a query (and, for an IVF list by
 * residual, a row of M * 256 list terms, mostly from L3): for a query whose
 * probed lists hold fewer codes than that, computing each code's distance,
 * d operations, is cheaper. */
typedef void (*pqfast_pq8_direct_fn)(const float *, const float *, const uint8_t *,
                                     ptrdiff_t, ptrdiff_t, ptrdiff_t, int, float, float *);

PQFAST_MULTIVERSION
static void pqfast_pq8_direct_portable(const float *r, const float *cents,
                                       const uint8_t *codes, ptrdiff_t n, ptrdiff_t M,
                                       ptrdiff_t dsub, int l2, float base, float *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        float acc = 0;
        for (ptrdiff_t m = 0; m < M; m++) {
            const float *y = cents + (m * 256 + c[m]) * dsub, *rm = r + m * dsub;
            float part = 0;
            if (l2) {
#pragma omp simd reduction(+ : part)
                for (ptrdiff_t s = 0; s < dsub; s++) {
                    const float e = rm[s] - y[s];
                    part += e * e;
                }
            } else {
#pragma omp simd reduction(+ : part)
                for (ptrdiff_t s = 0; s < dsub; s++)
                    part += rm[s] * y[s];
            }
            acc += part;
        }
        out[i] = l2 ? base + acc : base - acc;
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
/* AVX-512: four codes at a time, each sub-vector in 16-lane pieces (the last
 * one masked); the query's piece is loaded once for the four codes, and four
 * accumulators keep four chains of multiply-adds in flight.  `l2` is a
 * constant in each of the two callers below, so its test is compiled out. */
__attribute__((target("avx512f"), always_inline)) static inline void
pqfast_pq8_direct_avx512_body(const float *r, const float *cents, const uint8_t *codes,
                              ptrdiff_t n, ptrdiff_t M, ptrdiff_t dsub, const int l2,
                              float base, float *out)
{
    const ptrdiff_t full = (dsub - 1) / 16 * 16; /* lanes before the last piece */
    const __mmask16 tail = pqfast_live16(dsub - full);
    for (ptrdiff_t i = 0; i < n; i += 4) {
        const int g = n - i < 4 ? (int)(n - i) : 4;
        const uint8_t *c0 = codes + i * M, *c1 = codes + (i + (g > 1)) * M;
        const uint8_t *c2 = codes + (i + (g > 2 ? 2 : g - 1)) * M;
        const uint8_t *c3 = codes + (i + g - 1) * M; /* short groups repeat a code */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *rm = r, *cm = cents;
        for (ptrdiff_t m = 0; m < M; m++, rm += dsub, cm += 256 * dsub) {
            const float *y0 = cm + c0[m] * dsub, *y1 = cm + c1[m] * dsub;
            const float *y2 = cm + c2[m] * dsub, *y3 = cm + c3[m] * dsub;
            for (ptrdiff_t s = 0; s <= full; s += 16) {
                const __mmask16 k = s < full ? (__mmask16)0xFFFF : tail;
                const __m512 x = _mm512_maskz_loadu_ps(k, rm + s);
                const __m512 v0 = _mm512_maskz_loadu_ps(k, y0 + s);
                const __m512 v1 = _mm512_maskz_loadu_ps(k, y1 + s);
                const __m512 v2 = _mm512_maskz_loadu_ps(k, y2 + s);
                const __m512 v3 = _mm512_maskz_loadu_ps(k, y3 + s);
                if (l2) {
                    const __m512 e0 = _mm512_sub_ps(x, v0), e1 = _mm512_sub_ps(x, v1);
                    const __m512 e2 = _mm512_sub_ps(x, v2), e3 = _mm512_sub_ps(x, v3);
                    a0 = _mm512_fmadd_ps(e0, e0, a0);
                    a1 = _mm512_fmadd_ps(e1, e1, a1);
                    a2 = _mm512_fmadd_ps(e2, e2, a2);
                    a3 = _mm512_fmadd_ps(e3, e3, a3);
                } else {
                    a0 = _mm512_fmadd_ps(x, v0, a0);
                    a1 = _mm512_fmadd_ps(x, v1, a1);
                    a2 = _mm512_fmadd_ps(x, v2, a2);
                    a3 = _mm512_fmadd_ps(x, v3, a3);
                }
            }
        }
        const float sign = l2 ? 1.0f : -1.0f;
        const float d[4] = {_mm512_reduce_add_ps(a0), _mm512_reduce_add_ps(a1),
                            _mm512_reduce_add_ps(a2), _mm512_reduce_add_ps(a3)};
        for (int u = 0; u < g; u++)
            out[i + u] = base + sign * d[u];
    }
}

__attribute__((target("avx512f"))) static void
pqfast_pq8_direct_avx512(const float *r, const float *cents, const uint8_t *codes,
                         ptrdiff_t n, ptrdiff_t M, ptrdiff_t dsub, int l2, float base,
                         float *out)
{
    if (l2)
        pqfast_pq8_direct_avx512_body(r, cents, codes, n, M, dsub, 1, base, out);
    else
        pqfast_pq8_direct_avx512_body(r, cents, codes, n, M, dsub, 0, base, out);
}
#endif

static pqfast_pq8_direct_fn pqfast_pq8_direct_impl(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_pq8_direct_avx512;
#endif
    (void)max_level;
    return pqfast_pq8_direct_portable;
}

/* pqfast_adc8_block with the table given as the sum of two, t1 + t2, added
 * entry by entry as they are read: for a short inverted list this is cheaper
 * than building the summed table (M * 256 additions).  Each entry is rounded
 * once, as in the built table, and summed in the same order, so the
 * distances are bit-identical to pqfast_adc8_block's on the summed table. */
static inline void pqfast_adc8_block2(const float *t1, const float *t2,
                                      const uint8_t *codes, ptrdiff_t n, ptrdiff_t M,
                                      float base, float *out)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        float acc = 0;
        ptrdiff_t m = 0;
        for (; m + 8 <= M; m += 8) {
            const float *a = t1 + m * 256, *b = t2 + m * 256;
            ptrdiff_t k0 = c[m], k1 = 256 + c[m + 1], k2 = 512 + c[m + 2],
                      k3 = 768 + c[m + 3], k4 = 1024 + c[m + 4], k5 = 1280 + c[m + 5],
                      k6 = 1536 + c[m + 6], k7 = 1792 + c[m + 7];
            float s01 = (a[k0] + b[k0]) + (a[k1] + b[k1]);
            float s23 = (a[k2] + b[k2]) + (a[k3] + b[k3]);
            float s45 = (a[k4] + b[k4]) + (a[k5] + b[k5]);
            float s67 = (a[k6] + b[k6]) + (a[k7] + b[k7]);
            acc += (s01 + s23) + (s45 + s67);
        }
        for (; m < M; m++)
            acc += t1[m * 256 + c[m]] + t2[m * 256 + c[m]];
        out[i] = base + acc;
    }
}

/* ---- 8-bit ADC for a block of eight queries at once ----
 *
 * The tables of eight queries are interleaved, T[(m * 256 + c) * 8 + q], so
 * one 32-byte load brings entry (m, c) of all eight tables: a code costs M
 * vector loads and adds for eight queries instead of 8 M scalar ones, which
 * takes the scan past the one-query load-port limit of benchmarks/PERFORMANCE.md
 * (the batched layout of "Quicker ADC" / Bolt-style multi-query scans).
 * Each lane adds in the order of pqfast_adc8_block, so a query's distances
 * are bit-identical to its one-query scan.  hit[i] has bit q set when lane q
 * of code i is <= thr[q]: the caller visits only those. */
#define PQFAST_MQ 8
typedef void (*pqfast_adc_multi_fn)(const float *T, const uint8_t *codes, ptrdiff_t n,
                                    ptrdiff_t M, const float *base, const float *thr,
                                    float *out, uint8_t *hit);

/* out[q] = base[q] + acc[q]; returns the mask of out[q] <= thr[q]. */
static inline uint8_t pqfast_mq_store(const float *base, const float *thr, const float *acc,
                                      float *out)
{
    uint8_t h = 0;
    for (int q = 0; q < PQFAST_MQ; q++) {
        out[q] = base[q] + acc[q];
        h |= (uint8_t)((out[q] <= thr[q]) << q);
    }
    return h;
}

static void pqfast_adc8_multi_portable(const float *T, const uint8_t *codes, ptrdiff_t n,
                                       ptrdiff_t M, const float *base, const float *thr,
                                       float *out, uint8_t *hit)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        float acc[PQFAST_MQ] = {0};
        ptrdiff_t m = 0;
        for (; m + 8 <= M; m += 8) {
            const float *t = T + m * 256 * PQFAST_MQ;
            const float *r[8];
            for (int j = 0; j < 8; j++)
                r[j] = t + (j * 256 + c[m + j]) * PQFAST_MQ;
            for (int q = 0; q < PQFAST_MQ; q++)
                acc[q] += ((r[0][q] + r[1][q]) + (r[2][q] + r[3][q])) +
                          ((r[4][q] + r[5][q]) + (r[6][q] + r[7][q]));
        }
        for (; m < M; m++) {
            const float *r = T + (m * 256 + c[m]) * PQFAST_MQ;
            for (int q = 0; q < PQFAST_MQ; q++)
                acc[q] += r[q];
        }
        hit[i] = pqfast_mq_store(base, thr, acc, out + i * PQFAST_MQ);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) static void
pqfast_adc8_multi_avx2(const float *T, const uint8_t *codes, ptrdiff_t n, ptrdiff_t M,
                       const float *base, const float *thr, float *out, uint8_t *hit)
{
    const __m256 b = _mm256_loadu_ps(base), th = _mm256_loadu_ps(thr);
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * M;
        __m256 acc = _mm256_setzero_ps();
        ptrdiff_t m = 0;
        for (; m + 8 <= M; m += 8) {
            const float *t = T + m * 256 * PQFAST_MQ;
#define PQFAST_ROW(j) _mm256_loadu_ps(t + ((j) * 256 + c[m + (j)]) * PQFAST_MQ)
            __m256 s01 = _mm256_add_ps(PQFAST_ROW(0), PQFAST_ROW(1));
            __m256 s23 = _mm256_add_ps(PQFAST_ROW(2), PQFAST_ROW(3));
            __m256 s45 = _mm256_add_ps(PQFAST_ROW(4), PQFAST_ROW(5));
            __m256 s67 = _mm256_add_ps(PQFAST_ROW(6), PQFAST_ROW(7));
#undef PQFAST_ROW
            acc = _mm256_add_ps(acc, _mm256_add_ps(_mm256_add_ps(s01, s23),
                                                   _mm256_add_ps(s45, s67)));
        }
        for (; m < M; m++)
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(T + (m * 256 + c[m]) * PQFAST_MQ));
        acc = _mm256_add_ps(b, acc);
        _mm256_storeu_ps(out + i * PQFAST_MQ, acc);
        hit[i] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(acc, th, _CMP_LE_OQ));
    }
}
#endif

/* The same for 4-bit codes ((M + 1) / 2 bytes, low nibble first), tables of
 * 16 entries, each lane adding in the order of pqfast_adc4_block. */
static void pqfast_adc4_multi_portable(const float *T, const uint8_t *codes, ptrdiff_t n,
                                       ptrdiff_t M, const float *base, const float *thr,
                                       float *out, uint8_t *hit)
{
    const ptrdiff_t cs = (M + 1) / 2;
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * cs;
        float acc[PQFAST_MQ] = {0};
        for (ptrdiff_t m = 0; m < M; m++) {
            const int v = (m & 1) ? c[m >> 1] >> 4 : c[m >> 1] & 15;
            const float *r = T + (m * 16 + v) * PQFAST_MQ;
            for (int q = 0; q < PQFAST_MQ; q++)
                acc[q] += r[q];
        }
        hit[i] = pqfast_mq_store(base, thr, acc, out + i * PQFAST_MQ);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2"))) static void
pqfast_adc4_multi_avx2(const float *T, const uint8_t *codes, ptrdiff_t n, ptrdiff_t M,
                       const float *base, const float *thr, float *out, uint8_t *hit)
{
    const __m256 b = _mm256_loadu_ps(base), th = _mm256_loadu_ps(thr);
    const ptrdiff_t cs = (M + 1) / 2;
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint8_t *c = codes + i * cs;
        __m256 acc = _mm256_setzero_ps();
        ptrdiff_t m = 0;
        for (; m + 2 <= M; m += 2) {
            const int v = c[m >> 1];
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(T + (m * 16 + (v & 15)) * PQFAST_MQ));
            acc = _mm256_add_ps(acc,
                                _mm256_loadu_ps(T + (m * 16 + 16 + (v >> 4)) * PQFAST_MQ));
        }
        if (m < M)
            acc = _mm256_add_ps(acc,
                                _mm256_loadu_ps(T + (m * 16 + (c[m >> 1] & 15)) * PQFAST_MQ));
        acc = _mm256_add_ps(b, acc);
        _mm256_storeu_ps(out + i * PQFAST_MQ, acc);
        hit[i] = (uint8_t)_mm256_movemask_ps(_mm256_cmp_ps(acc, th, _CMP_LE_OQ));
    }
}
#endif

/* The best version for this CPU and nbits (8 or 4; NULL otherwise), up to
 * max_level (0 portable, >= 1 AVX2). */
static pqfast_adc_multi_fn pqfast_adc_multi_impl(int max_level, int nbits)
{
    if (nbits != 8 && nbits != 4)
        return NULL;
#if defined(__GNUC__) && defined(__x86_64__)
    if (max_level >= 1 && __builtin_cpu_supports("avx2"))
        return nbits == 8 ? pqfast_adc8_multi_avx2 : pqfast_adc4_multi_avx2;
#endif
    (void)max_level;
    return nbits == 8 ? pqfast_adc8_multi_portable : pqfast_adc4_multi_portable;
}

/* T[(j) * 8 + q] = tables[q * mk + j] for the nq <= 8 tables of mk entries;
 * lanes q >= nq are zero. */
static void pqfast_interleave8(const float *tables, ptrdiff_t nq, ptrdiff_t mk, float *T)
{
    for (ptrdiff_t q = 0; q < PQFAST_MQ; q++) {
        const float *t = tables + q * mk;
        if (q < nq)
            for (ptrdiff_t j = 0; j < mk; j++)
                T[j * PQFAST_MQ + q] = t[j];
        else
            for (ptrdiff_t j = 0; j < mk; j++)
                T[j * PQFAST_MQ + q] = 0.0f;
    }
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

/* Bit j set where d[j] < thr, for n <= 64 values: the k-NN selection visits
 * only those (a loop over all n values mispredicts a branch per new entry). */
typedef uint64_t (*pqfast_lt_bits_fn)(const float *d, ptrdiff_t n, float thr);

static uint64_t pqfast_lt_bits_portable(const float *d, ptrdiff_t n, float thr)
{
    uint64_t bits = 0;
    for (ptrdiff_t j = 0; j < n; j++)
        bits |= (uint64_t)(d[j] < thr) << j;
    return bits;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t
pqfast_lt_bits_avx512(const float *d, ptrdiff_t n, float thr)
{
    const __m512 t = _mm512_set1_ps(thr);
    uint64_t bits = 0;
    for (ptrdiff_t j = 0; j < n; j += 16) {
        const __mmask16 live = pqfast_live16(n - j);
        __m512 v = _mm512_maskz_loadu_ps(live, d + j);
        bits |= (uint64_t)_mm512_mask_cmp_ps_mask(live, v, t, _CMP_LT_OQ) << j;
    }
    return bits;
}
#endif

/* Index of the lowest set bit of x != 0. */
static inline ptrdiff_t pqfast_ctz64(uint64_t x)
{
#if defined(__GNUC__)
    return (ptrdiff_t)__builtin_ctzll(x);
#else
    ptrdiff_t n = 0;
    while (!(x & 1u)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

static pqfast_lt_bits_fn pqfast_lt_bits_impl(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_lt_bits_avx512;
#endif
    (void)max_level;
    return pqfast_lt_bits_portable;
}

/* Copy one row of d floats to dst and put its squared norm in *norm; returns
 * whether every |x_i| <= bound (0 if any is NaN).  One pass for
 * IndexFlat.add, which is bound by memory. */
typedef int (*pqfast_copy_row_fn)(const float *, ptrdiff_t, float, float *, float *);

static int pqfast_copy_row_portable(const float *x, ptrdiff_t d, float bound, float *dst,
                                    float *norm)
{
    float s = 0;
    int ok = 1;
#pragma omp simd reduction(+ : s) reduction(& : ok)
    for (ptrdiff_t i = 0; i < d; i++) {
        dst[i] = x[i];
        s += x[i] * x[i];
        ok &= (x[i] <= bound) & (x[i] >= -bound);
    }
    *norm = s;
    return ok;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static int
pqfast_copy_row_avx512(const float *x, ptrdiff_t d, float bound, float *dst, float *norm)
{
    const __m512 hi = _mm512_set1_ps(bound), lo = _mm512_set1_ps(-bound);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    __mmask16 ok0 = 0xFFFF, ok1 = 0xFFFF;
    ptrdiff_t i = 0;
    for (; i + 32 <= d; i += 32) { /* two independent chains */
        const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
        _mm512_storeu_ps(dst + i, v0);
        _mm512_storeu_ps(dst + i + 16, v1);
        ok0 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(ok0, v0, hi, _CMP_LE_OQ), v0,
                                      lo, _CMP_GE_OQ);
        ok1 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(ok1, v1, hi, _CMP_LE_OQ), v1,
                                      lo, _CMP_GE_OQ);
        a0 = _mm512_fmadd_ps(v0, v0, a0);
        a1 = _mm512_fmadd_ps(v1, v1, a1);
    }
    for (; i < d; i += 16) {
        const __mmask16 live = pqfast_live16(d - i);
        const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
        _mm512_mask_storeu_ps(dst + i, live, v);
        /* masked-off lanes hold 0, which passes */
        ok0 = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(ok0, v, hi, _CMP_LE_OQ), v,
                                      lo, _CMP_GE_OQ);
        a0 = _mm512_fmadd_ps(v, v, a0);
    }
    *norm = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    return (ok0 & ok1) == 0xFFFF;
}
#endif

static pqfast_copy_row_fn pqfast_copy_row_impl(int max_level)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_copy_row_avx512;
#endif
    (void)max_level;
    return pqfast_copy_row_portable;
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

/* ---- sorting (distance, id) pairs ---- */

/* An order-preserving integer key of a float (no NaN): a < b <=> key(a) < key(b). */
static inline uint32_t pqfast_fkey(float x)
{
    uint32_t u;
    x += 0.0f; /* -0 -> +0: the same value to the float comparisons elsewhere */
    memcpy(&u, &x, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Sift pair r down a max-heap on ids over [0, end). */
static inline void pqfast_sift_by_id(float *d, int64_t *ids, ptrdiff_t r, ptrdiff_t end)
{
    const float rd = d[r];
    const int64_t ri = ids[r];
    for (;;) {
        ptrdiff_t c = 2 * r + 1;
        if (c >= end)
            break;
        if (c + 1 < end && ids[c + 1] > ids[c])
            c++;
        if (ri >= ids[c])
            break;
        d[r] = d[c];
        ids[r] = ids[c];
        r = c;
    }
    d[r] = rd;
    ids[r] = ri;
}

/* Order n pairs of equal distance by id (the distances go with their ids:
 * +0 and -0 compare equal).  Insertion for short runs, else a heap sort, so
 * that many ties (a zero query, duplicated data) stay O(n log n). */
static void pqfast_sort_run_by_id(float *d, int64_t *ids, ptrdiff_t n)
{
    if (n <= 16) {
        for (ptrdiff_t j = 1; j < n; j++) {
            const float dj = d[j];
            const int64_t ij = ids[j];
            ptrdiff_t w = j;
            for (; w > 0 && ids[w - 1] > ij; w--) {
                d[w] = d[w - 1];
                ids[w] = ids[w - 1];
            }
            d[w] = dj;
            ids[w] = ij;
        }
        return;
    }
    for (ptrdiff_t i = n / 2 - 1; i >= 0; i--)
        pqfast_sift_by_id(d, ids, i, n);
    for (ptrdiff_t end = n - 1; end > 0; end--) {
        const float td = d[0];
        const int64_t ti = ids[0];
        d[0] = d[end];
        ids[0] = ids[end];
        d[end] = td;
        ids[end] = ti;
        pqfast_sift_by_id(d, ids, 0, end);
    }
}

/* The n (distance, id) pairs d[0..n), ids[0..n) (no NaN) written to od, oi
 * in ascending (distance, id) order: what heap-sorting them would give, at
 * about a third of the cost for k = 100 (a heap sort pays ~2 log2(k)
 * mispredicted branches per entry).  An LSD radix sort on the order-
 * preserving keys, 8 bits a pass, a pass skipped when every key has the same
 * byte there; then each run of equal distances is ordered by id.
 * keys: room for 4n. */
static void pqfast_sort_pairs(const float *d, const int64_t *ids, ptrdiff_t n,
                              uint32_t *keys, float *od, int64_t *oi)
{
    uint32_t *ka = keys, *pa = keys + n, *kb = keys + 2 * n, *pb = keys + 3 * n, *t;
    uint32_t hist[4][256];
    if (n <= 0)
        return;
    memset(hist, 0, sizeof hist);
    for (ptrdiff_t j = 0; j < n; j++) {
        const uint32_t key = ka[j] = pqfast_fkey(d[j]);
        pa[j] = (uint32_t)j;
        for (int b = 0; b < 4; b++)
            hist[b][(key >> (8 * b)) & 255]++;
    }
    for (int b = 0; b < 4; b++) {
        uint32_t *h = hist[b], sum = 0;
        if (h[(ka[0] >> (8 * b)) & 255] == (uint32_t)n)
            continue;
        for (int v = 0; v < 256; v++) {
            const uint32_t c = h[v];
            h[v] = sum;
            sum += c;
        }
        for (ptrdiff_t j = 0; j < n; j++) {
            const uint32_t at = h[(ka[j] >> (8 * b)) & 255]++;
            kb[at] = ka[j];
            pb[at] = pa[j];
        }
        t = ka, ka = kb, kb = t;
        t = pa, pa = pb, pb = t;
    }
    for (ptrdiff_t j = 0; j < n; j++) {
        od[j] = d[pa[j]];
        oi[j] = ids[pa[j]];
    }
    for (ptrdiff_t a = 0, b; a < n; a = b) { /* runs of equal distances: by id */
        for (b = a + 1; b < n && od[b] == od[a]; b++)
            ;
        if (b - a > 1)
            pqfast_sort_run_by_id(od + a, oi + a, b - a);
    }
}

/* ---- selection for large k: a reservoir of candidates ----
 *
 * A heap pays about log2(k) mispredicted branches per entry; at k = 100
 * that was most of the fast-scan search.  Candidates below a threshold are
 * appended to a buffer instead; when it is full, the k smallest (distance,
 * id) pairs are kept and the largest of them becomes the threshold.  The
 * k-th smallest distance is found by bisection on the distances' order-
 * preserving integer keys, each step one branch-free counting pass, and
 * ties at that distance are kept by smallest id, so the pairs kept are
 * exactly the k smallest, as a heap's (faiss's fast scan keeps a reservoir
 * too, partitioning its 16-bit distances).  The keys: pqfast_fkey, above. */

/* The k-th smallest of n keys (1 <= k <= n): bisection on the value, each
 * step one branch-free counting pass. */
PQFAST_MULTIVERSION
static uint32_t pqfast_kth_key(const uint32_t *keys, ptrdiff_t n, ptrdiff_t k)
{
    uint32_t lo = 0xFFFFFFFFu, hi = 0;
#pragma omp simd reduction(min : lo) reduction(max : hi)
    for (ptrdiff_t j = 0; j < n; j++) {
        lo = keys[j] < lo ? keys[j] : lo;
        hi = keys[j] > hi ? keys[j] : hi;
    }
    while (lo < hi) { /* smallest t with count(key <= t) >= k */
        const uint32_t mid = lo + (hi - lo) / 2;
        int c = 0;
#pragma omp simd reduction(+ : c)
        for (ptrdiff_t j = 0; j < n; j++)
            c += keys[j] <= mid;
        if (c >= k)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Keep, in order, the entries of keys[0..n) and pos[0..n) whose key is <= t;
 * returns how many.  Branch-free: each write lands on a slot already read. */
static ptrdiff_t pqfast_keep_le(uint32_t *keys, int64_t *pos, ptrdiff_t n, uint32_t t)
{
    ptrdiff_t w = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        const uint32_t key = keys[j];
        keys[w] = key;
        pos[w] = pos[j];
        w += key <= t;
    }
    return w;
}

/* Keep in d[0..k), ids[0..k) the k smallest pairs of the n > k given (no NaN);
 * keys: room for n.  Returns the largest kept pair through *td, *ti. */
PQFAST_MULTIVERSION
static void pqfast_select_k(float *d, int64_t *ids, ptrdiff_t n, ptrdiff_t k,
                            uint32_t *keys, float *td, int64_t *ti)
{
    for (ptrdiff_t j = 0; j < n; j++)
        keys[j] = pqfast_fkey(d[j]);
    const uint32_t lo = pqfast_kth_key(keys, n, k);
    /* keep the pairs at or below the k-th key, in order, without branches:
     * each write lands on a slot already read */
    ptrdiff_t w = 0;
    for (ptrdiff_t j = 0; j < n; j++) {
        const uint32_t key = keys[j];
        d[w] = d[j];
        ids[w] = ids[j];
        keys[w] = key;
        w += key <= lo;
    }
    if (w > k) {
        /* ties at the k-th distance (duplicate distances; rare): order the
         * first k slots by (distance, id) with a selection sort over [0, w) */
        for (ptrdiff_t m = 0; m < k; m++) {
            ptrdiff_t best = m;
            for (ptrdiff_t j = m + 1; j < w; j++)
                if (d[j] < d[best] || (d[j] == d[best] && ids[j] < ids[best]))
                    best = j;
            float dd = d[best];
            int64_t ii = ids[best];
            d[best] = d[m];
            ids[best] = ids[m];
            d[m] = dd;
            ids[m] = ii;
        }
    }
    /* the largest kept pair: the k-th key, with the largest id among those kept */
    float bd = d[0];
    int64_t bi = ids[0];
    for (ptrdiff_t j = 1; j < k; j++)
        if (d[j] > bd || (d[j] == bd && ids[j] > bi)) {
            bd = d[j];
            bi = ids[j];
        }
    *td = bd;
    *ti = bi;
}

#endif
