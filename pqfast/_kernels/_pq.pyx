"""Product-quantizer kernels: code assignment, bit packing, exhaustive ADC search."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.float cimport FLT_MAX
from libc.string cimport memset

from pqfast._kernels._arrays cimport (
    F32,
    I64,
    U8,
    U16,
    checked,
    dim,
    expect,
    make_selector,
)
from pqfast._kernels._common cimport (
    Selector,
    gemm_abt,
    query_tables,
    heap_init,
    heap_sort,
    pqfast_dot_table,
    scan_codes,
    sqnorm,
    team_size,
)


cdef enum:
    QUERY_BLOCK = 8   # queries whose tables are built together (pqfast_dot_tables)


cdef inline Py_ssize_t max_block(Py_ssize_t ksub) noexcept nogil:
    """Query block size: tables of 16-bit codes (256 KiB a row) one at a time."""
    return QUERY_BLOCK if ksub <= 256 else 1


def work_columns(Py_ssize_t M, Py_ssize_t ksub):
    """Scratch floats per thread that pq_search needs: a block's tables."""
    return max_block(ksub) * M * ksub


def assign_codes(x,            # IN  (n, d) float32 vectors
                 cents,        # IN  (M, ksub, dsub) float32 codebooks
                 ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
                 Py_ssize_t chunk,  # IN  rows per GEMM block
                 work,         # SCRATCH (n_threads, >= chunk * ksub) float32
                 idx):         # OUT (n, M) uint16 nearest centroid per sub-vector
    """idx[i, m] = argmin_j ||x_im - y_mj||^2, the first index on exact ties.

    Candidates come from one GEMM per (row block, sub-quantizer), as
    ||x||^2 + ||y||^2 - 2<x, y>; that form loses digits when the norms are
    large next to the distances (SIFT-like data), so every candidate within
    its rounding error of the minimum is re-scored exactly, in float64.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cp = <const float*>checked(cents, F32, 3, False, "cents")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef uint16_t* ip = <uint16_t*>checked(idx, U16, 2, True, "idx")
    cdef Py_ssize_t n = dim(x, 0), d = dim(x, 1), wcols = dim(work, 1)
    cdef Py_ssize_t M = dim(cents, 0), ksub = dim(cents, 1), dsub = dim(cents, 2)
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(dim(idx, 0) == n and dim(idx, 1) == M and 1 <= ksub <= 65536, "idx shape")
    expect(chunk >= 1 and wcols >= chunk * ksub, "work")
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t c, i0, nr, i, m, j, s, best, ncand
    cdef int nt = <int>dim(work, 0)
    cdef float mn, tol, ymax, xn
    cdef double e, diff, ebest
    cdef float* row
    cdef const float* xs
    cdef const float* yn
    cdef const float* y
    for c in prange(n_chunks, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_chunks, 1, nt)):
        i0 = c * chunk
        nr = min(chunk, n - i0)
        for m in range(M):
            yn = ynp + m * ksub
            ymax = 0
            for j in range(ksub):
                ymax = max(ymax, yn[j])
            row = wp + threadid() * wcols
            gemm_abt(xp + i0 * d + m * dsub, <int>d, <int>nr, cp + m * ksub * dsub,
                     <int>dsub, <int>ksub, <int>dsub, row)
            for i in range(nr):
                xs = xp + (i0 + i) * d + m * dsub
                xn = sqnorm(xs, dsub)
                # approximate distances less ||x||^2 (same argmin), and their minimum
                mn = FLT_MAX
                for j in range(ksub):
                    row[j] = yn[j] - (row[j] + row[j])
                    mn = min(mn, row[j])
                # rounding bound of the GEMM form, with a safety factor of 4
                tol = 4.8e-7 * (dsub + 4) * (xn + ymax)
                best = -1
                ebest = 0
                ncand = 0
                for j in range(ksub):
                    if row[j] <= mn + tol:
                        ncand = ncand + 1
                        best = j
                if ncand == 1:  # the usual case: the minimum is clear
                    ip[(i0 + i) * M + m] = <uint16_t>best
                    row = row + ksub
                    continue
                best = -1
                for j in range(ksub):
                    if row[j] <= mn + tol:
                        y = cp + (m * ksub + j) * dsub
                        e = 0
                        for s in range(dsub):
                            diff = <double>xs[s] - <double>y[s]
                            e = e + diff * diff
                        if best < 0 or e < ebest:
                            best = j
                            ebest = e
                ip[(i0 + i) * M + m] = <uint16_t>best
                row = row + ksub


def pack_codes(idx,        # IN  (n, M) uint16 sub-codes < 2**nbits
               int nbits,
               codes):     # OUT (n, ceil(M * nbits / 8)) uint8
    """Pack sub-codes into a little-endian bit stream per vector (faiss's layout)."""
    cdef const uint16_t* ip = <const uint16_t*>checked(idx, U16, 2, False, "idx")
    cdef uint8_t* cp = <uint8_t*>checked(codes, U8, 2, True, "codes")
    cdef Py_ssize_t n = dim(idx, 0), M = dim(idx, 1), cs = dim(codes, 1)
    expect(1 <= nbits <= 16 and cs == (M * nbits + 7) // 8 and dim(codes, 0) == n,
           "code shape")
    cdef Py_ssize_t i, m, bit
    cdef uint32_t v, mask = (1u << nbits) - 1
    cdef uint8_t* code
    for i in prange(n, nogil=True, schedule="static",
                    num_threads=team_size(n, 4096, 0)):
        code = cp + i * cs
        memset(code, 0, cs)
        bit = 0
        for m in range(M):
            v = (ip[i * M + m] & mask) << (bit & 7)
            code[bit >> 3] |= <uint8_t>(v & 0xFF)
            if (bit & 7) + nbits > 8:
                code[(bit >> 3) + 1] |= <uint8_t>((v >> 8) & 0xFF)
                if (bit & 7) + nbits > 16:
                    code[(bit >> 3) + 2] |= <uint8_t>((v >> 16) & 0xFF)
            bit = bit + nbits


def unpack_codes(codes,    # IN  (n, code_size) uint8
                 int nbits,
                 idx):     # OUT (n, M) uint16
    """Inverse of pack_codes."""
    cdef const uint8_t* cp = <const uint8_t*>checked(codes, U8, 2, False, "codes")
    cdef uint16_t* ip = <uint16_t*>checked(idx, U16, 2, True, "idx")
    cdef Py_ssize_t n = dim(codes, 0), cs = dim(codes, 1), M = dim(idx, 1)
    expect(1 <= nbits <= 16 and cs == (M * nbits + 7) // 8 and dim(idx, 0) == n,
           "code shape")
    cdef Py_ssize_t i, m, bit
    cdef uint32_t v, mask = (1u << nbits) - 1
    cdef const uint8_t* code
    for i in prange(n, nogil=True, schedule="static",
                    num_threads=team_size(n, 4096, 0)):
        code = cp + i * cs
        bit = 0
        for m in range(M):
            v = code[bit >> 3]
            if (bit & 7) + nbits > 8:
                v = v | (<uint32_t>code[(bit >> 3) + 1] << 8)
                if (bit & 7) + nbits > 16:
                    v = v | (<uint32_t>code[(bit >> 3) + 2] << 16)
            ip[i * M + m] = <uint16_t>((v >> (bit & 7)) & mask)
            bit = bit + nbits


def pq_search(x,            # IN  (nq, d) float32 queries
              cbt,          # IN  (M, dsub, ksub) float32 transposed codebook
              ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
              codes,        # IN  (n, code_size) uint8 database codes
              int nbits, bint l2, Py_ssize_t nseg,
              sel,          # IN  id filter (selectors.py)
              work,         # SCRATCH (n_threads, >= work_columns(M, ksub)) float32
              D,            # OUT (nq * nseg, k) float32
              I):           # OUT (nq * nseg, k) int64
    """Exhaustive asymmetric-distance search.

    Work item w handles a block of queries (whose tables are built together,
    reading the codebook once) over database segment w % nseg, so a small
    batch still uses every thread; with nseg == 1 the rows come out sorted,
    otherwise they are heaps for merge_heaps.  L2 tables hold
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
    cdef Py_ssize_t mk = M * ksub
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(ksub == (1 << nbits) and cs == (M * nbits + 7) // 8, "nbits")
    expect(nseg >= 1 and dim(D, 0) == nq * nseg and dim(I, 0) == nq * nseg
           and dim(I, 1) == k and k >= 1 and wcols >= max_block(ksub) * mk,
           "heap and work shapes")
    cdef Py_ssize_t w, q, s, lo, hi, i, q0, nqb
    cdef Selector selector = make_selector(sel)
    cdef int nt = <int>dim(work, 0)
    cdef Py_ssize_t qb = 1 if nseg > 1 else max(1, min(max_block(ksub), nq // (4 * nt)))
    cdef Py_ssize_t n_items = (nq + qb - 1) // qb * nseg
    cdef float* tables
    cdef float* hd
    cdef int64_t* hi_
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q0 = (w // nseg) * qb
        nqb = min(qb, nq - q0)
        s = w % nseg
        tables = wp + threadid() * wcols
        query_tables(xp + q0 * d, nqb, d, cbtp, ynp, M, dsub, ksub, l2, tables)
        lo = n * s // nseg
        hi = n * (s + 1) // nseg
        for i in range(nqb):
            q = q0 + i
            hd = Dp + (q * nseg + s) * k
            hi_ = Ip + (q * nseg + s) * k
            heap_init(hd, hi_, k)
            if hi > lo:
                scan_codes(tables + i * mk, NULL, cp + lo * cs, NULL, lo, hi - lo, cs, M,
                           nbits, ksub, sqnorm(xp + q * d, d) if l2 else 0, hd, hi_, k,
                           &selector)
            if nseg == 1:
                heap_sort(hd, hi_, k)
