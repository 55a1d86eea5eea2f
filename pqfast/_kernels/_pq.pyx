"""Product-quantizer kernels: code assignment, bit packing, exhaustive ADC search."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from pqfast._kernels._arrays cimport F32, I64, U8, checked, dim, expect
from pqfast._kernels._common cimport (
    gemm_abt,
    heap_init,
    heap_sort,
    pqfast_dot_table,
    scan_codes,
    sqnorm,
    team_size,
)


def assign_codes(const float[:, ::1] x,          # IN  (n, d) vectors
                 const float[:, :, ::1] cents,   # IN  (M, ksub, dsub) codebooks
                 const float[:, ::1] ynorm,      # IN  (M, ksub) ||y_mj||^2
                 Py_ssize_t chunk,               # IN  rows per GEMM block
                 float[:, ::1] work,             # SCRATCH (n_threads, chunk * ksub)
                 uint16_t[:, ::1] idx):          # OUT (n, M) nearest centroid per sub-vector
    """idx[i, m] = argmin_j ||y_mj||^2 - 2 <x_im, y_mj> (first minimum wins).

    Dot products come from one GEMM per (row block, sub-quantizer).
    """
    cdef Py_ssize_t n = x.shape[0], d = x.shape[1]
    cdef Py_ssize_t M = cents.shape[0], ksub = cents.shape[1], dsub = cents.shape[2]
    cdef Py_ssize_t c, i0, nr, i, m, j, best
    cdef int nt = work.shape[0]
    cdef float dist, dbest
    cdef float* dots
    cdef const float* row
    cdef const float* yn
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    for c in prange(n_chunks, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_chunks, 1, nt)):
        i0 = c * chunk
        nr = min(chunk, n - i0)
        dots = &work[threadid(), 0]
        for m in range(M):
            gemm_abt(&x[i0, m * dsub], d, nr, &cents[m, 0, 0], dsub, ksub, dsub, dots)
            yn = &ynorm[m, 0]
            for i in range(nr):
                row = dots + i * ksub
                best = 0
                dbest = yn[0] - (row[0] + row[0])
                for j in range(1, ksub):
                    dist = yn[j] - (row[j] + row[j])  # not 2 * x: a C double
                    if dist < dbest:
                        dbest = dist
                        best = j
                idx[i0 + i, m] = <uint16_t>best


def pack_codes(const uint16_t[:, ::1] idx,  # IN  (n, M) sub-codes < 2**nbits
               int nbits,
               uint8_t[:, ::1] codes):      # OUT (n, ceil(M * nbits / 8))
    """Pack sub-codes into a little-endian bit stream per vector (faiss's layout)."""
    cdef Py_ssize_t i, m, bit, M = idx.shape[1], cs = codes.shape[1]
    cdef uint32_t v
    with nogil:
        for i in prange(idx.shape[0], schedule="static",
                        num_threads=team_size(idx.shape[0], 4096, 0)):
            memset(&codes[i, 0], 0, cs)
            bit = 0
            for m in range(M):
                v = <uint32_t>idx[i, m] << (bit & 7)
                codes[i, bit >> 3] |= <uint8_t>(v & 0xFF)
                if (bit & 7) + nbits > 8:
                    codes[i, (bit >> 3) + 1] |= <uint8_t>((v >> 8) & 0xFF)
                    if (bit & 7) + nbits > 16:
                        codes[i, (bit >> 3) + 2] |= <uint8_t>((v >> 16) & 0xFF)
                bit = bit + nbits


def unpack_codes(const uint8_t[:, ::1] codes,  # IN  (n, code_size)
                 int nbits,
                 uint16_t[:, ::1] idx):        # OUT (n, M)
    """Inverse of pack_codes."""
    cdef Py_ssize_t i, m, bit, M = idx.shape[1]
    cdef uint32_t v, mask = (1u << nbits) - 1
    with nogil:
        for i in prange(codes.shape[0], schedule="static",
                        num_threads=team_size(codes.shape[0], 4096, 0)):
            bit = 0
            for m in range(M):
                v = codes[i, bit >> 3]
                if (bit & 7) + nbits > 8:
                    v = v | (<uint32_t>codes[i, (bit >> 3) + 1] << 8)
                    if (bit & 7) + nbits > 16:
                        v = v | (<uint32_t>codes[i, (bit >> 3) + 2] << 16)
                idx[i, m] = <uint16_t>((v >> (bit & 7)) & mask)
                bit = bit + nbits


def pq_search(x,            # IN  (nq, d) float32 queries
              cbt,          # IN  (M, dsub, ksub) float32 transposed codebook
              ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
              codes,        # IN  (n, code_size) uint8 database codes
              int nbits, bint l2, Py_ssize_t nseg,
              work,         # SCRATCH (n_threads, >= M * ksub) float32
              D,            # OUT (nq * nseg, k) float32
              I):           # OUT (nq * nseg, k) int64
    """Exhaustive asymmetric-distance search.

    Work item w handles query w // nseg over database segment w % nseg, so a
    small batch still uses every thread; with nseg == 1 the rows come out
    sorted, otherwise they are heaps for merge_heaps.  L2 tables hold
    ||y||^2 - 2<x_m, y> with ||x||^2 as the base; inner-product tables hold
    -<x_m, y>.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const uint8_t* cp = <const uint8_t*>checked(codes, U8, 2, False, "codes")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t n = dim(codes, 0), cs = dim(codes, 1), wcols = dim(work, 1)
    cdef Py_ssize_t n_items = nq * nseg
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(ksub == (1 << nbits) and cs == (M * nbits + 7) // 8, "nbits")
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1 and wcols >= M * ksub, "heap and work shapes")
    cdef Py_ssize_t w, q, s, lo, hi
    cdef int nt = <int>dim(work, 0)
    cdef float base
    cdef float* table
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        table = wp + threadid() * wcols
        heap_init(Dp + w * k, Ip + w * k, k)
        base = 0
        if l2:
            memcpy(table, ynp, M * ksub * sizeof(float))
            base = sqnorm(xp + q * d, d)
        else:
            memset(table, 0, M * ksub * sizeof(float))
        pqfast_dot_table(xp + q * d, cbtp, M, dsub, ksub, -2.0 if l2 else -1.0, table)
        lo = n * s // nseg
        hi = n * (s + 1) // nseg
        if hi > lo:
            scan_codes(table, cp + lo * cs, NULL, lo, hi - lo, cs, M, nbits, ksub,
                       base, Dp + w * k, Ip + w * k, k)
        if nseg == 1:
            heap_sort(Dp + w * k, Ip + w * k, k)
