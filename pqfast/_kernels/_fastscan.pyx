"""4-bit PQ fast scan: block packing and the exhaustive search kernel.

Per query the float lookup table is quantized to 8 bits (an offset per
sub-quantizer, one shared scale), blocks of 32 codes are scored with byte
shuffles (fastscan.h), and the k best by quantized distance are re-scored
with the float table, so the returned distances are exact ADC distances.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport floor
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from pqfast._kernels._arrays cimport F32, I64, U8, U16, checked, dim, expect
from pqfast._kernels._common cimport (
    heap_init,
    heap_sift_down,
    heap_sort,
    pair_less,
    pqfast_dot_table,
    sqnorm,
    team_size,
)


cdef extern from "fastscan.h" nogil:
    ctypedef uint32_t (*pqfast_fs_block_fn)(const uint8_t*, Py_ssize_t, const uint8_t*,
                                            uint16_t, uint16_t*) noexcept nogil
    pqfast_fs_block_fn pqfast_fs_block_impl(int allow_simd)


def pack_blocks(codes,    # IN  (n, M) uint8 sub-codes < 16
                blocks):  # OUT (ceil(n / 32), M * 16) uint8
    """Pack 4-bit sub-codes in blocks of 32 vectors (layout in fastscan.h)."""
    cdef const uint8_t* cp = <const uint8_t*>checked(codes, U8, 2, False, "codes")
    cdef uint8_t* bp = <uint8_t*>checked(blocks, U8, 2, True, "blocks")
    cdef Py_ssize_t n = dim(codes, 0), M = dim(codes, 1), nblocks = dim(blocks, 0)
    expect(nblocks == (n + 31) // 32 and dim(blocks, 1) == M * 16, "block shape")
    cdef Py_ssize_t b, m, j, i
    cdef uint8_t* out
    with nogil:
        memset(bp, 0, nblocks * M * 16)
        for i in range(n):
            b = i // 32
            j = i % 32
            for m in range(M):
                out = bp + b * M * 16 + m * 16
                if j < 16:
                    out[j] = out[j] | (cp[i * M + m] & 15)
                else:
                    out[j - 16] = out[j - 16] | ((cp[i * M + m] & 15) << 4)


def unpack_blocks(blocks,  # IN  (nblocks, M * 16) uint8
                  codes):  # OUT (n, M) uint8, n <= 32 * nblocks
    """Inverse of pack_blocks for the first n vectors."""
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef uint8_t* cp = <uint8_t*>checked(codes, U8, 2, True, "codes")
    cdef Py_ssize_t n = dim(codes, 0), M = dim(codes, 1)
    expect(dim(blocks, 1) == M * 16 and n <= 32 * dim(blocks, 0), "block shape")
    cdef Py_ssize_t i, m
    with nogil:
        for i in range(n):
            for m in range(M):
                cp[i * M + m] = block_code(bp, M, i, m)


cdef inline uint8_t block_code(const uint8_t* bp, Py_ssize_t M, Py_ssize_t i,
                               Py_ssize_t m) noexcept nogil:
    cdef uint8_t byte = bp[(i // 32) * M * 16 + m * 16 + (i % 32) % 16]
    return byte & 15 if i % 32 < 16 else byte >> 4


def block_sums(blocks, lut, bint simd, uint16_t thr, out, masks):
    """Quantized distances and threshold masks per block (tests: SIMD vs portable)."""
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef const uint8_t* lp = <const uint8_t*>checked(lut, U8, 2, False, "lut")
    cdef uint16_t* op = <uint16_t*>checked(out, U16, 2, True, "out")
    cdef Py_ssize_t nblocks = dim(blocks, 0), M = dim(lut, 0), b
    cdef int64_t* mp = <int64_t*>checked(masks, I64, 1, True, "masks")
    expect(dim(lut, 1) == 16 and dim(blocks, 1) == M * 16 and dim(out, 0) == nblocks
           and dim(out, 1) == 32 and dim(masks, 0) == nblocks, "shapes")
    cdef pqfast_fs_block_fn fn = pqfast_fs_block_impl(simd)
    for b in range(nblocks):
        mp[b] = fn(bp + b * M * 16, M, lp, thr, op + b * 32)


def pq4_search(x,          # IN  (nq, d) float32 queries
               cbt,        # IN  (M, dsub, 16) float32 transposed codebook
               ynorm,      # IN  (M, 16) float32 ||y_mj||^2
               blocks,     # IN  (nblocks, M * 16) uint8 packed codes
               Py_ssize_t ntotal, bint l2, Py_ssize_t nseg, bint simd,
               work,       # SCRATCH (n_threads, >= M * 16 * 2) float32
               D,          # OUT (nq * nseg, k) float32
               I):         # OUT (nq * nseg, k) int64
    """Exhaustive 4-bit fast-scan search; rows sorted when nseg == 1."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), nblocks = dim(blocks, 0)
    cdef Py_ssize_t wcols = dim(work, 1), n_items = nq * nseg
    expect(dim(cbt, 2) == 16 and M * dsub == d and dim(ynorm, 0) == M
           and dim(ynorm, 1) == 16, "codebook")
    expect(dim(blocks, 1) == M * 16 and 0 <= ntotal <= 32 * nblocks
           and nblocks == (ntotal + 31) // 32, "blocks")
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1 and wcols >= 2 * M * 16 + 16, "shapes")
    cdef pqfast_fs_block_fn fn = pqfast_fs_block_impl(simd)
    cdef int nt = <int>dim(work, 0)
    cdef Py_ssize_t w, q, s, b, j, m, idx
    cdef float base, lo, hi, scale, inv, bias, dist
    cdef uint32_t mask
    cdef float* table
    cdef uint8_t* lut
    cdef uint16_t* sums
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        table = wp + threadid() * wcols
        lut = <uint8_t*>(table + M * 16)
        sums = <uint16_t*>(table + M * 16 + M * 4)
        heap_init(Dp + w * k, Ip + w * k, k)
        base = 0
        if l2:
            memcpy(table, ynp, M * 16 * sizeof(float))
            base = sqnorm(xp + q * d, d)
        else:
            memset(table, 0, M * 16 * sizeof(float))
        pqfast_dot_table(xp + q * d, cbtp, M, dsub, 16, -2.0 if l2 else -1.0, table)
        # 8-bit table: subtract each sub-quantizer's minimum, one shared scale
        bias = base
        hi = 0
        for m in range(M):
            lo = table[m * 16]
            for j in range(16):
                lo = min(lo, table[m * 16 + j])
            bias = bias + lo
            for j in range(16):
                hi = max(hi, table[m * 16 + j] - lo)
        scale = 255 / hi if hi > 0 else 0
        inv = hi / 255
        for m in range(M):
            lo = table[m * 16]
            for j in range(16):
                lo = min(lo, table[m * 16 + j])
            for j in range(16):
                lut[m * 16 + j] = <uint8_t>floor((table[m * 16 + j] - lo) * scale + 0.5)
        # scan this segment's blocks by quantized distance; the mask marks the
        # codes whose quantized distance can still enter the heap
        for b in range(nblocks * s // nseg, nblocks * (s + 1) // nseg):
            mask = fn(bp + b * M * 16, M, lut, qthreshold(Dp[w * k], bias, scale), sums)
            while mask:
                j = count_trailing_zeros(mask)
                mask = mask & (mask - 1)
                idx = b * 32 + j
                if idx >= ntotal:
                    break
                dist = bias + sums[j] * inv
                if pair_less(dist, idx, Dp[w * k], Ip[w * k]):
                    heap_sift_down(Dp + w * k, Ip + w * k, k, 0, dist, idx)
        # re-score the kept codes with the float table
        for j in range(k):
            idx = Ip[w * k + j]
            if idx >= 0:
                dist = base
                for m in range(M):
                    dist = dist + table[m * 16 + block_code(bp, M, idx, m)]
                Dp[w * k + j] = dist
        # the float distances reorder the heap: rebuild it, then sort
        for j in range(1, k):
            heap_up(Dp + w * k, Ip + w * k, j)
        if nseg == 1:
            heap_sort(Dp + w * k, Ip + w * k, k)


cdef extern from *:
    """
    #if defined(__GNUC__)
    #define pqfast_ctz(x) ((Py_ssize_t)__builtin_ctz(x))
    #else
    static Py_ssize_t pqfast_ctz(unsigned int x) { Py_ssize_t n = 0; while (!(x & 1u)) { x >>= 1; n++; } return n; }
    #endif
    """
    Py_ssize_t count_trailing_zeros "pqfast_ctz"(uint32_t x) nogil


cdef inline uint16_t qthreshold(float thr, float bias, float scale) noexcept nogil:
    """The quantized sum at or below which a code may beat distance `thr`.

    The heap holds bias + sum / scale for quantized sums, so this is the same
    test in integers, one step generous for float rounding; the float check
    after it decides.
    """
    cdef double q
    if scale <= 0:
        return 65535
    q = (<double>thr - bias) * scale + 1
    if q >= 65535:
        return 65535
    if q < 0:
        return 0
    return <uint16_t>q


cdef inline void heap_up(float* hd, int64_t* hi, Py_ssize_t i) noexcept nogil:
    """Restore the max-heap property for entries 0..i after entry i changed."""
    cdef Py_ssize_t parent
    cdef float d = hd[i]
    cdef int64_t idx = hi[i]
    while i > 0:
        parent = (i - 1) // 2
        if not pair_less(hd[parent], hi[parent], d, idx):
            break
        hd[i] = hd[parent]
        hi[i] = hi[parent]
        i = parent
    hd[i] = d
    hi[i] = idx
