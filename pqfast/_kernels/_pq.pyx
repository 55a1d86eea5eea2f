"""Product-quantizer kernels: code assignment, bit packing, exhaustive ADC search."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from pqfast._kernels._common cimport dot_table, gemm_abt, scan_codes


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
    for c in prange((n + chunk - 1) // chunk, nogil=True, schedule="dynamic",
                    num_threads=nt):
        i0 = c * chunk
        nr = min(chunk, n - i0)
        dots = &work[threadid(), 0]
        for m in range(M):
            gemm_abt(&x[i0, m * dsub], d, nr, &cents[m, 0, 0], dsub, ksub, dsub, dots)
            for i in range(nr):
                row = dots + i * ksub
                best = 0
                dbest = ynorm[m, 0] - 2 * row[0]
                for j in range(1, ksub):
                    dist = ynorm[m, j] - 2 * row[j]
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
        for i in prange(idx.shape[0], schedule="static"):
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
        for i in prange(codes.shape[0], schedule="static"):
            bit = 0
            for m in range(M):
                v = codes[i, bit >> 3]
                if (bit & 7) + nbits > 8:
                    v = v | (<uint32_t>codes[i, (bit >> 3) + 1] << 8)
                    if (bit & 7) + nbits > 16:
                        v = v | (<uint32_t>codes[i, (bit >> 3) + 2] << 16)
                idx[i, m] = <uint16_t>((v >> (bit & 7)) & mask)
                bit = bit + nbits


def pq_search(const float[:, ::1] x,           # IN  (nq, d) queries
              const float[:, :, ::1] cbt,      # IN  (M, dsub, ksub) transposed codebook
              const float[:, ::1] ynorm,       # IN  (M, ksub) ||y_mj||^2
              const uint8_t[:, ::1] codes,     # IN  (n, code_size) database codes
              int nbits, bint l2, Py_ssize_t nseg,
              float[:, ::1] work,              # SCRATCH (n_threads, M * ksub)
              float[:, ::1] D,                 # INOUT (nq * nseg, k) heaps, padded
              int64_t[:, ::1] I):              # INOUT (nq * nseg, k)
    """Exhaustive asymmetric-distance search into unsorted heaps.

    Work item w handles query w // nseg over database segment w % nseg, so a
    small batch still uses every thread.  L2 tables hold ||y||^2 - 2<x_m, y>
    with ||x||^2 as the base; inner-product tables hold -<x_m, y>.
    """
    cdef Py_ssize_t M = cbt.shape[0], dsub = cbt.shape[1], ksub = cbt.shape[2]
    cdef Py_ssize_t n = codes.shape[0], cs = codes.shape[1], k = D.shape[1]
    cdef Py_ssize_t w, q, s, j, lo, hi
    cdef int nt = work.shape[0]
    cdef float base
    cdef float* table
    if n == 0:
        return
    for w in prange(D.shape[0], nogil=True, schedule="dynamic", num_threads=nt):
        q = w // nseg
        s = w % nseg
        table = &work[threadid(), 0]
        base = 0
        if l2:
            memcpy(table, &ynorm[0, 0], M * ksub * sizeof(float))
            for j in range(x.shape[1]):
                base = base + x[q, j] * x[q, j]
        else:
            memset(table, 0, M * ksub * sizeof(float))
        dot_table(&x[q, 0], &cbt[0, 0, 0], M, dsub, ksub, -2.0 if l2 else -1.0, table)
        lo = n * s // nseg
        hi = n * (s + 1) // nseg
        if hi > lo:
            scan_codes(table, &codes[lo, 0], NULL, lo, hi - lo, cs, M, nbits, ksub,
                       base, &D[w, 0], &I[w, 0], k)
