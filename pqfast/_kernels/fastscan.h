/* 4-bit PQ "fast scan": codes of 32 vectors packed per block, looked up 32 at
 * a time in 8-bit quantized tables with byte shuffles (André, Kermarrec and
 * Le Scouarnec, "Cache locality is not enough: high-performance nearest
 * neighbor search with product quantization fast scan", VLDB 2015; faiss's
 * IndexPQFastScan uses the same idea with its own layout).
 *
 * pqfast's block layout: for block b and sub-quantizer m, 16 bytes; byte j
 * holds the code of vector 32b + j in its low nibble and of vector 32b + 16 + j
 * in its high nibble.  A block is M * 16 bytes: the same 4 bits per sub-code
 * as faiss's flat codes.
 */
#ifndef PQFAST_FASTSCAN_H
#define PQFAST_FASTSCAN_H

#include <stddef.h>
#include <stdint.h>

#include "simd.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define PQFAST_HAVE_X86 1
#endif

/* Both versions: out[j] = sum_m lut[m, code_j,m] for the 32 vectors of the
 * block; the result has bit j set where out[j] <= thr. */
static inline uint32_t pqfast_fs_block_scalar(const uint8_t *block, ptrdiff_t M,
                                       const uint8_t *lut, uint16_t thr, uint16_t *out)
{
    for (int j = 0; j < 32; j++)
        out[j] = 0;
    for (ptrdiff_t m = 0; m < M; m++) {
        const uint8_t *c = block + m * 16, *t = lut + m * 16;
        for (int j = 0; j < 16; j++) {
            out[j] += t[c[j] & 15];
            out[j + 16] += t[c[j] >> 4];
        }
    }
    uint32_t mask = 0;
    for (int j = 0; j < 32; j++)
        mask |= (uint32_t)(out[j] <= thr) << j;
    return mask;
}

#ifdef PQFAST_HAVE_X86
/* Add sub-quantizer m's lookups for the 32 vectors to the four 8-lane sums
 * (vectors 0-7, 8-15, 16-23, 24-31): the tail of the wide kernels. */
__attribute__((target("ssse3"))) static inline void
pqfast_fs_add_one(const uint8_t *block, const uint8_t *lut, ptrdiff_t m, __m128i s[4])
{
    const __m128i l4 = _mm_set1_epi8(15), z = _mm_setzero_si128();
    __m128i c = _mm_loadu_si128((const __m128i *)(block + m * 16));
    __m128i t = _mm_loadu_si128((const __m128i *)(lut + m * 16));
    __m128i lo = _mm_shuffle_epi8(t, _mm_and_si128(c, l4));
    __m128i hi = _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16(c, 4), l4));
    s[0] = _mm_add_epi16(s[0], _mm_unpacklo_epi8(lo, z));
    s[1] = _mm_add_epi16(s[1], _mm_unpackhi_epi8(lo, z));
    s[2] = _mm_add_epi16(s[2], _mm_unpacklo_epi8(hi, z));
    s[3] = _mm_add_epi16(s[3], _mm_unpackhi_epi8(hi, z));
}

/* AVX2: two sub-quantizers per 256-bit shuffle (one per 128-bit lane). */
__attribute__((target("avx2"))) static inline uint32_t
pqfast_fs_block_avx2(const uint8_t *block, ptrdiff_t M, const uint8_t *lut,
                     uint16_t thr, uint16_t *out)
{
    const __m256i low4 = _mm256_set1_epi8(15), zero = _mm256_setzero_si256();
    __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    ptrdiff_t m = 0;
    for (; m + 2 <= M; m += 2) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(block + m * 16));
        __m256i t = _mm256_loadu_si256((const __m256i *)(lut + m * 16));
        __m256i lo = _mm256_shuffle_epi8(t, _mm256_and_si256(c, low4));
        __m256i hi = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(c, 4), low4));
        a0 = _mm256_add_epi16(a0, _mm256_unpacklo_epi8(lo, zero)); /* vectors 0-7   */
        a1 = _mm256_add_epi16(a1, _mm256_unpackhi_epi8(lo, zero)); /* vectors 8-15  */
        a2 = _mm256_add_epi16(a2, _mm256_unpacklo_epi8(hi, zero)); /* vectors 16-23 */
        a3 = _mm256_add_epi16(a3, _mm256_unpackhi_epi8(hi, zero)); /* vectors 24-31 */
    }
    /* each lane summed its own sub-quantizers: add the two lanes */
    __m128i s0 = _mm_add_epi16(_mm256_castsi256_si128(a0), _mm256_extracti128_si256(a0, 1));
    __m128i s1 = _mm_add_epi16(_mm256_castsi256_si128(a1), _mm256_extracti128_si256(a1, 1));
    __m128i s2 = _mm_add_epi16(_mm256_castsi256_si128(a2), _mm256_extracti128_si256(a2, 1));
    __m128i s3 = _mm_add_epi16(_mm256_castsi256_si128(a3), _mm256_extracti128_si256(a3, 1));
    __m128i s[4] = {s0, s1, s2, s3};
    for (; m < M; m++) /* odd M: the last sub-quantizer, one lane */
        pqfast_fs_add_one(block, lut, m, s);
    s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
    _mm_storeu_si128((__m128i *)(out + 0), s0);
    _mm_storeu_si128((__m128i *)(out + 8), s1);
    _mm_storeu_si128((__m128i *)(out + 16), s2);
    _mm_storeu_si128((__m128i *)(out + 24), s3);
    /* s <= thr  <=>  min(s, thr) == s (unsigned) */
    const __m128i t16 = _mm_set1_epi16((short)thr);
    __m128i c0 = _mm_cmpeq_epi16(_mm_min_epu16(s0, t16), s0);
    __m128i c1 = _mm_cmpeq_epi16(_mm_min_epu16(s1, t16), s1);
    __m128i c2 = _mm_cmpeq_epi16(_mm_min_epu16(s2, t16), s2);
    __m128i c3 = _mm_cmpeq_epi16(_mm_min_epu16(s3, t16), s3);
    uint32_t lo_mask = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c0, c1));
    uint32_t hi_mask = (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(c2, c3));
    return lo_mask | (hi_mask << 16);
}
#endif

#ifdef PQFAST_HAVE_X86
/* AVX-512BW: four sub-quantizers per 512-bit shuffle (one per 128-bit lane). */
__attribute__((target("avx512f,avx512bw"))) static inline uint32_t
pqfast_fs_block_avx512(const uint8_t *block, ptrdiff_t M, const uint8_t *lut,
                       uint16_t thr, uint16_t *out)
{
    const __m512i low4 = _mm512_set1_epi8(15), zero = _mm512_setzero_si512();
    __m512i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
    ptrdiff_t m = 0;
    for (; m + 4 <= M; m += 4) {
        __m512i c = _mm512_loadu_si512((const void *)(block + m * 16));
        __m512i t = _mm512_loadu_si512((const void *)(lut + m * 16));
        __m512i lo = _mm512_shuffle_epi8(t, _mm512_and_si512(c, low4));
        __m512i hi = _mm512_shuffle_epi8(t, _mm512_and_si512(_mm512_srli_epi16(c, 4), low4));
        a0 = _mm512_add_epi16(a0, _mm512_unpacklo_epi8(lo, zero)); /* vectors 0-7   */
        a1 = _mm512_add_epi16(a1, _mm512_unpackhi_epi8(lo, zero)); /* vectors 8-15  */
        a2 = _mm512_add_epi16(a2, _mm512_unpacklo_epi8(hi, zero)); /* vectors 16-23 */
        a3 = _mm512_add_epi16(a3, _mm512_unpackhi_epi8(hi, zero)); /* vectors 24-31 */
    }
    /* each lane summed its own sub-quantizers: add the four lanes */
    __m128i s[4];
    __m512i acc[4] = {a0, a1, a2, a3};
    for (int i = 0; i < 4; i++) {
        __m256i h = _mm256_add_epi16(_mm512_castsi512_si256(acc[i]),
                                     _mm512_extracti64x4_epi64(acc[i], 1));
        s[i] = _mm_add_epi16(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    }
    const __m128i z = _mm_setzero_si128();
    for (; m < M; m++) /* M not a multiple of 4: one lane at a time */
        pqfast_fs_add_one(block, lut, m, s);
    const __m128i t16 = _mm_set1_epi16((short)thr);
    uint32_t mask = 0;
    for (int i = 0; i < 4; i++) {
        _mm_storeu_si128((__m128i *)(out + 8 * i), s[i]);
        __m128i le = _mm_cmpeq_epi16(_mm_min_epu16(s[i], t16), s[i]);
        mask |= (uint32_t)_mm_movemask_epi8(_mm_packs_epi16(le, z)) << (8 * i);
    }
    return mask;
}
#endif

/* Exact re-scoring of the codes of a block that passed the quantized filter:
 * for each j in `cand`, out[j] = base + table[0, c_j0] + table[1, c_j1] + ...
 * (float table of M rows of 16, summed in m order); returns the j in cand with
 * out[j] <= thr.  The portable version scores the candidates one by one. */
typedef uint32_t (*pqfast_fs_exact_fn)(const uint8_t *, ptrdiff_t, const float *, float,
                                       float, uint32_t, float *);

static uint32_t pqfast_fs_exact_scalar(const uint8_t *block, ptrdiff_t M,
                                       const float *table, float base, float thr,
                                       uint32_t cand, float *out)
{
    uint32_t mask = 0;
    for (int j = 0; j < 32; j++) {
        if (!((cand >> j) & 1))
            continue;
        const uint8_t *c = block + (j & 15);
        const int shift = j < 16 ? 0 : 4;
        float d = base;
        for (ptrdiff_t m = 0; m < M; m++)
            d += table[m * 16 + ((c[m * 16] >> shift) & 15)];
        out[j] = d;
        mask |= (uint32_t)(d <= thr) << j;
    }
    return mask;
}

#ifdef PQFAST_HAVE_X86
/* AVX-512: a table row of 16 floats fits one register, so one permute looks
 * up a sub-quantizer for 16 codes; all 32 codes are scored (about 8
 * instructions per sub-quantizer), which costs less than scoring a few
 * candidates one by one.  Same order of additions as the scalar version, and
 * the same result: codes outside cand are not returned even when they score
 * <= thr (the quantized filter is conservative only up to float rounding of
 * the sums, so they can: with large norms, SIMD and portable searches then
 * differed). */
__attribute__((target("avx512f"))) static uint32_t
pqfast_fs_exact_avx512(const uint8_t *block, ptrdiff_t M, const float *table, float base,
                       float thr, uint32_t cand, float *out)
{
    __m512 lo = _mm512_set1_ps(base), hi = lo;
    for (ptrdiff_t m = 0; m < M; m++) {
        __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(block + m * 16)));
        __m512 row = _mm512_loadu_ps(table + m * 16);
        lo = _mm512_add_ps(lo, _mm512_permutexvar_ps(c, row)); /* uses c & 15 */
        hi = _mm512_add_ps(hi, _mm512_permutexvar_ps(_mm512_srli_epi32(c, 4), row));
    }
    _mm512_storeu_ps(out, lo);
    _mm512_storeu_ps(out + 16, hi);
    const __m512 t = _mm512_set1_ps(thr);
    return ((uint32_t)_mm512_cmp_ps_mask(lo, t, _CMP_LE_OQ) |
            ((uint32_t)_mm512_cmp_ps_mask(hi, t, _CMP_LE_OQ) << 16)) &
           cand;
}
#endif

static pqfast_fs_exact_fn pqfast_fs_exact_impl(int max_level)
{
#ifdef PQFAST_HAVE_X86
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_fs_exact_avx512;
#endif
    (void)max_level;
    return pqfast_fs_exact_scalar;
}

/* Codes at positions pos[0..n) (vector numbers: block pos / 32), scored
 * exactly: out[j] = base + table[0, c0] + table[1, c1] + ..., summed in m
 * order as the block versions above, so the same floats.  Eight codes at a
 * time keep eight independent chains of additions in flight. */
static void pqfast_fs_score_at(const uint8_t *blocks, ptrdiff_t M, const float *table,
                               float base, const int64_t *pos, ptrdiff_t n, float *out)
{
    enum { G = 8 };
    ptrdiff_t j = 0;
    for (; j < n; j += G) {
        const int g = n - j < G ? (int)(n - j) : G;
        const uint8_t *c[G];
        int shift[G];
        float d[G];
        for (int u = 0; u < G; u++) { /* a short group repeats its last code */
            const int64_t i = pos[j + (u < g ? u : g - 1)];
            c[u] = blocks + (i >> 5) * M * 16 + (i & 15);
            shift[u] = (i & 16) ? 4 : 0;
            d[u] = base;
        }
        for (ptrdiff_t m = 0; m < M; m++) {
            const float *t = table + m * 16;
            for (int u = 0; u < G; u++)
                d[u] += t[(c[u][m * 16] >> shift[u]) & 15];
        }
        for (int u = 0; u < g; u++)
            out[j + u] = d[u];
    }
}

/* The quantized sum of the code at position i (as the block versions). */
static uint32_t pqfast_fs_qsum_at(const uint8_t *blocks, ptrdiff_t M, const uint8_t *lut,
                                  int64_t i)
{
    const uint8_t *c = blocks + (i >> 5) * M * 16 + (i & 15);
    const int shift = (i & 16) ? 4 : 0;
    uint32_t s = 0;
    for (ptrdiff_t m = 0; m < M; m++)
        s += lut[m * 16 + ((c[m * 16] >> shift) & 15)];
    return s;
}

/* The largest quantized entry: 255, or less when M entries of 255 would not
 * fit the 16-bit sums of a block (M > 257). */
static inline float pqfast_quantize_max(ptrdiff_t M)
{
    return M <= 257 ? 255.0f : (float)(65535 / M);
}

/* 8-bit table from a float table of M rows of 16: each row's minimum is
 * subtracted, one scale is shared, values are rounded.  Returns the scale
 * (0 when the table is constant); *bias receives the sum of the minima. */
static float pqfast_quantize16_portable(const float *table, ptrdiff_t M, uint8_t *lut,
                                       float *bias)
{
    float hi = 0, b = 0;
    for (ptrdiff_t m = 0; m < M; m++) {
        const float *t = table + m * 16;
        float lo = t[0], top = t[0];
#pragma omp simd reduction(min:lo) reduction(max:top)
        for (int j = 0; j < 16; j++) {
            lo = t[j] < lo ? t[j] : lo;
            top = t[j] > top ? t[j] : top;
        }
        b += lo;
        hi = top - lo > hi ? top - lo : hi;
    }
    const float qmax = pqfast_quantize_max(M), scale = hi > 0 ? qmax / hi : 0.0f;
    for (ptrdiff_t m = 0; m < M; m++) {
        const float *t = table + m * 16;
        float lo = t[0];
#pragma omp simd reduction(min:lo)
        for (int j = 0; j < 16; j++)
            lo = t[j] < lo ? t[j] : lo;
#pragma omp simd
        for (int j = 0; j < 16; j++) {
            float v = (t[j] - lo) * scale + 0.5f; /* >= 0.5: truncation rounds */
            lut[m * 16 + j] = (uint8_t)(int)(v < qmax ? v : qmax);
        }
    }
    *bias = b;
    return scale;
}

#ifdef PQFAST_HAVE_X86
/* The minima (or maxima) of 16 rows of 16 floats in one register: the rows
 * are merged pairwise in four levels of shuffles and one min (max) each, 30
 * shuffles for the 16 rows instead of 8 a row for separate reductions.  Row
 * r's result lands in lane 4 (r % 4) + r / 4 (PQFAST_ROW16_LANE). */
#define PQFAST_ROW16_LANE(r) (4 * ((r) & 3) + ((r) >> 2))

__attribute__((target("avx512f"), always_inline)) static inline __m512
pqfast_rows16_reduce(const __m512 *v, int want_max)
{
#define PQFAST_OP(a, b) (want_max ? _mm512_max_ps(a, b) : _mm512_min_ps(a, b))
    __m512 w[8], u[4], t[2];
    for (int i = 0; i < 8; i++) /* row pairs: 16 -> 8 values each */
        w[i] = PQFAST_OP(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++) /* 8 -> 4: block k holds row 4i + k */
        u[i] = PQFAST_OP(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) /* 4 -> 2: block k holds rows 8i + k, 8i + 4 + k */
        t[i] = PQFAST_OP(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
    /* 2 -> 1: block k holds rows k, 4 + k, 8 + k, 12 + k */
    return PQFAST_OP(_mm512_shuffle_ps(t[0], t[1], 0x88), _mm512_shuffle_ps(t[0], t[1], 0xDD));
#undef PQFAST_OP
}

/* The same with one table row (16 floats) per AVX-512 register: measured
 * 250 -> 50 ns for M=16 against the compiler-vectorized loops above, which
 * matters because this runs once per query and probed list.  Rows are taken
 * 16 at a time, their minima and maxima found together
 * (pqfast_rows16_reduce); the bias is still summed row by row, in order, so
 * every output equals the portable version's. */
__attribute__((target("avx512f"))) static float
pqfast_quantize16_avx512(const float *table, ptrdiff_t M, uint8_t *lut, float *bias)
{
    float hi = 0, b = 0, lo16[16];
    const ptrdiff_t M16 = M - M % 16;
    /* each group's minima, kept for the second pass up to M = 256 (beyond,
     * recomputed there) */
    __m512 v[16], lows[16];
    for (ptrdiff_t m0 = 0; m0 < M16; m0 += 16) {
        for (int r = 0; r < 16; r++)
            v[r] = _mm512_loadu_ps(table + (m0 + r) * 16);
        __m512 lo = pqfast_rows16_reduce(v, 0), top = pqfast_rows16_reduce(v, 1);
        if (m0 < 256)
            lows[m0 / 16] = lo;
        _mm512_storeu_ps(lo16, lo);
        for (int r = 0; r < 16; r++)
            b += lo16[PQFAST_ROW16_LANE(r)];
        float span = _mm512_reduce_max_ps(_mm512_sub_ps(top, lo));
        hi = span > hi ? span : hi;
    }
    for (ptrdiff_t m = M16; m < M; m++) {
        __m512 w = _mm512_loadu_ps(table + m * 16);
        float lo = _mm512_reduce_min_ps(w), top = _mm512_reduce_max_ps(w);
        b += lo;
        hi = top - lo > hi ? top - lo : hi;
    }
    const float qmax = pqfast_quantize_max(M), scale = hi > 0 ? qmax / hi : 0.0f;
    const __m512 s = _mm512_set1_ps(scale), half = _mm512_set1_ps(0.5f),
                 cap = _mm512_set1_ps(qmax);
    for (ptrdiff_t m0 = 0; m0 < M16; m0 += 16) {
        for (int r = 0; r < 16; r++)
            v[r] = _mm512_loadu_ps(table + (m0 + r) * 16);
        _mm512_storeu_ps(lo16, m0 < 256 ? lows[m0 / 16] : pqfast_rows16_reduce(v, 0));
        for (int r = 0; r < 16; r++) {
            __m512 lo = _mm512_set1_ps(lo16[PQFAST_ROW16_LANE(r)]);
            __m512 x = _mm512_min_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v[r], lo), s), half), cap);
            _mm_storeu_si128((__m128i *)(lut + (m0 + r) * 16),
                             _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(x)));
        }
    }
    for (ptrdiff_t m = M16; m < M; m++) {
        __m512 w = _mm512_loadu_ps(table + m * 16);
        __m512 lo = _mm512_set1_ps(_mm512_reduce_min_ps(w));
        __m512 x = _mm512_min_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(w, lo), s), half), cap);
        _mm_storeu_si128((__m128i *)(lut + m * 16), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(x)));
    }
    *bias = b;
    return scale;
}

/* Two AVX2 registers a row (250 -> 75 ns for M=16). */
__attribute__((target("avx2"))) static float
pqfast_quantize16_avx2(const float *table, ptrdiff_t M, uint8_t *lut, float *bias)
{
    float hi = 0, b = 0;
    for (ptrdiff_t m = 0; m < M; m++) {
        __m256 v0 = _mm256_loadu_ps(table + m * 16), v1 = _mm256_loadu_ps(table + m * 16 + 8);
        float lo = pqfast_hmin8(_mm256_min_ps(v0, v1));
        float top = pqfast_hmax8(_mm256_max_ps(v0, v1));
        b += lo;
        hi = top - lo > hi ? top - lo : hi;
    }
    const float qmax = pqfast_quantize_max(M), scale = hi > 0 ? qmax / hi : 0.0f;
    const __m256 s = _mm256_set1_ps(scale), half = _mm256_set1_ps(0.5f),
                 cap = _mm256_set1_ps(qmax);
    for (ptrdiff_t m = 0; m < M; m++) {
        __m256 v0 = _mm256_loadu_ps(table + m * 16), v1 = _mm256_loadu_ps(table + m * 16 + 8);
        __m256 lo = _mm256_set1_ps(pqfast_hmin8(_mm256_min_ps(v0, v1)));
        __m256 x0 = _mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v0, lo), s), half), cap);
        __m256 x1 = _mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v1, lo), s), half), cap);
        /* 16 int32 -> 16 uint16 (packus works per 128-bit lane: reorder) -> bytes */
        __m256i w = _mm256_packus_epi32(_mm256_cvttps_epi32(x0), _mm256_cvttps_epi32(x1));
        w = _mm256_permute4x64_epi64(w, 0xD8);
        __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
        _mm_storeu_si128((__m128i *)(lut + m * 16), bytes);
    }
    *bias = b;
    return scale;
}
#endif

/* The best quantizer for this CPU up to max_level (as pqfast_fs_block_impl). */
typedef float (*pqfast_quantize_fn)(const float *, ptrdiff_t, uint8_t *, float *);

static pqfast_quantize_fn pqfast_quantize16_impl(int max_level)
{
#ifdef PQFAST_HAVE_X86
    if (max_level >= 2 && __builtin_cpu_supports("avx512f"))
        return pqfast_quantize16_avx512;
    if (max_level >= 1 && __builtin_cpu_supports("avx2"))
        return pqfast_quantize16_avx2;
#endif
    (void)max_level;
    return pqfast_quantize16_portable;
}

/* The best version for this CPU up to max_level (0 portable, 1 AVX2,
 * 2 AVX-512BW); the search kernels ask for 2, tests for each level. */
typedef uint32_t (*pqfast_fs_block_fn)(const uint8_t *, ptrdiff_t, const uint8_t *,
                                       uint16_t, uint16_t *);

static pqfast_fs_block_fn pqfast_fs_block_impl(int max_level)
{
#ifdef PQFAST_HAVE_X86
    if (max_level >= 2 && __builtin_cpu_supports("avx512bw"))
        return pqfast_fs_block_avx512;
    if (max_level >= 1 && __builtin_cpu_supports("avx2"))
        return pqfast_fs_block_avx2;
#endif
    (void)max_level;
    return pqfast_fs_block_scalar;
}

/* The first block in [b, b1) with a code whose quantized sum is <= thr, its
 * mask in *mask; b1 when there is none.  The threshold only changes when a
 * code is accepted, so the search runs this loop, one call per passing block
 * rather than one per block, and the block kernel is inlined into it.  The
 * "_sums" versions also leave the block's 32 sums in sums[]; the others
 * ignore sums (their sums are not stored at all: 5-7 % of a k = 10 search). */
typedef ptrdiff_t (*pqfast_fs_next_fn)(const uint8_t *, ptrdiff_t, ptrdiff_t, ptrdiff_t,
                                       const uint8_t *, uint16_t, uint32_t *, uint16_t *);

#define PQFAST_FS_NEXT(name, block_fn, attrs, keep_sums)                              \
    attrs static ptrdiff_t name(const uint8_t *blocks, ptrdiff_t b, ptrdiff_t b1,     \
                                ptrdiff_t M, const uint8_t *lut, uint16_t thr,        \
                                uint32_t *mask, uint16_t *sums)                       \
    {                                                                                 \
        uint16_t unused[32];                                                          \
        uint16_t *out = keep_sums ? sums : unused;                                    \
        for (; b < b1; b++) {                                                         \
            const uint32_t found = block_fn(blocks + b * M * 16, M, lut, thr, out);   \
            if (found) {                                                              \
                *mask = found;                                                        \
                return b;                                                             \
            }                                                                         \
        }                                                                             \
        return b1;                                                                    \
    }

PQFAST_FS_NEXT(pqfast_fs_next_scalar, pqfast_fs_block_scalar, , 0)
PQFAST_FS_NEXT(pqfast_fs_next_sums_scalar, pqfast_fs_block_scalar, , 1)
#ifdef PQFAST_HAVE_X86
PQFAST_FS_NEXT(pqfast_fs_next_avx2, pqfast_fs_block_avx2, __attribute__((target("avx2"))), 0)
PQFAST_FS_NEXT(pqfast_fs_next_sums_avx2, pqfast_fs_block_avx2,
               __attribute__((target("avx2"))), 1)
PQFAST_FS_NEXT(pqfast_fs_next_avx512, pqfast_fs_block_avx512,
               __attribute__((target("avx512f,avx512bw"))), 0)
PQFAST_FS_NEXT(pqfast_fs_next_sums_avx512, pqfast_fs_block_avx512,
               __attribute__((target("avx512f,avx512bw"))), 1)
#endif
#undef PQFAST_FS_NEXT

static pqfast_fs_next_fn pqfast_fs_next_impl(int max_level, int keep_sums)
{
#ifdef PQFAST_HAVE_X86
    if (max_level >= 2 && __builtin_cpu_supports("avx512bw"))
        return keep_sums ? pqfast_fs_next_sums_avx512 : pqfast_fs_next_avx512;
    if (max_level >= 1 && __builtin_cpu_supports("avx2"))
        return keep_sums ? pqfast_fs_next_sums_avx2 : pqfast_fs_next_avx2;
#endif
    (void)max_level;
    return keep_sums ? pqfast_fs_next_sums_scalar : pqfast_fs_next_scalar;
}

#endif
