"""Product-quantizer kernels: code assignment, bit packing, exhaustive ADC search."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.float cimport FLT_MAX, FLT_MIN
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from pqfast._kernels._arrays cimport (
    F32,
    I64,
    U8,
    U16,
    U64,
    checked,
    dim,
    expect,
    make_selector,
)
from pqfast._kernels._common cimport (
    Selector,
    SCAN_BLOCK,
    adc_block,
    gemm_abt,
    query_tables,
    heap_init,
    heap_sort,
    nearest_of,
    omp_get_max_threads,
    pqfast_count_le_fn,
    pqfast_count_le_impl,
    pqfast_gemm_own,
    pqfast_prefetch,
    pqfast_dot_table,
    pqfast_dot_tables,
    pqfast_l2sq_cols_fn,
    pqfast_l2sq_cols_impl,
    pqfast_l2sq_cols2_fn,
    pqfast_l2sq_cols2_impl,
    PQFAST_MQ,
    pqfast_adc_multi_fn,
    pqfast_adc_multi_impl,
    pqfast_interleave8,
    scan_codes,
    scan_codes_multi,
    sqnorm,
    team_size,
    thread_rows,
    Reservoir,
    use_reservoir,
    reservoir_at,
    reservoir_columns,
    reservoir_finish,
    round16,
)


cdef enum:
    QUERY_BLOCK = 8   # queries whose tables are built together (pqfast_dot_tables)
    PREFETCH_ROWS = 8  # assign_direct asks for the sub-vector this many rows ahead


cdef inline Py_ssize_t max_block(Py_ssize_t ksub) noexcept nogil:
    """Query block size: tables of 16-bit codes (256 KiB a row) one at a time."""
    return QUERY_BLOCK if ksub <= 256 else 1


cdef inline Py_ssize_t work_columns(Py_ssize_t M, Py_ssize_t ksub) noexcept nogil:
    """Scratch floats per thread that pq_search needs: a block's tables, and
    for 8- and 4-bit codes the same interleaved for scan_codes_multi."""
    # + 32: up to 16 floats to align the interleaved tables on 64 bytes, and
    # the block's PQFAST_MQ query constants (base) at the row's end
    return (max_block(ksub) + (PQFAST_MQ if multi(ksub) else 0)) * M * ksub + 32


cdef inline bint multi(Py_ssize_t ksub) noexcept nogil:
    """Codes scanned for several queries at once (pqfast_adc_multi_impl)."""
    return ksub == 256 or ksub == 16


cdef inline Py_ssize_t query_block(Py_ssize_t nq, Py_ssize_t ksub, Py_ssize_t nseg,
                                   int nt) noexcept nogil:
    """Queries per work item.  8- and 4-bit codes: blocks of up to PQFAST_MQ scanned
    together, as few blocks as keep every thread busy, of about equal sizes.
    Otherwise tables only are built together, in blocks small enough that
    each thread gets about four."""
    cdef Py_ssize_t nblocks
    if nseg > 1 or nq <= 1:
        return 1
    if multi(ksub):
        nblocks = (nq + PQFAST_MQ - 1) // PQFAST_MQ
        nblocks = (nblocks + nt - 1) // nt * nt
        return max(1, (nq + nblocks - 1) // nblocks)
    return max(1, min(max_block(ksub), nq // (4 * nt)))


cdef void assign_direct(const float* xp, Py_ssize_t nr, Py_ssize_t d,
                        const float* cents, const float* cbt, Py_ssize_t M,
                        Py_ssize_t ksub, Py_ssize_t dsub, pqfast_l2sq_cols_fn l2sq,
                        pqfast_l2sq_cols2_fn l2sq2, pqfast_count_le_fn count_le,
                        float* dist, uint16_t* ip, float* mp) noexcept nogil:
    """Codes of nr rows from direct float32 distances ||x - y||^2 (l2sq: a
    version of pqfast_l2sq_cols_* in simd.h; l2sq2, when not NULL, the same
    for two rows at once, bit-identical; dist holds 2 * ksub floats).

    Their relative error is at most (dsub + 2) u (see simd.h), so a
    centroid more than 4x that above the minimum cannot be the nearest.  The
    sub-quantizer loop is outermost: its transposed codebook stays in L1.
    With mp, mp[i * M + m] receives the smallest distance as computed (the
    k-means objective).
    """
    cdef Py_ssize_t i, m, r
    cdef float mn, thr
    cdef float mins[2]
    cdef const float* xs
    cdef float rel = 4.8e-7 * (dsub + 4)
    for m in range(M):
        i = 0
        if l2sq2 != NULL:
            while i + 2 <= nr:
                xs = xp + i * d + m * dsub
                if i + PREFETCH_ROWS + 2 <= nr:
                    pqfast_prefetch(xs + PREFETCH_ROWS * d, dsub * sizeof(float))
                    pqfast_prefetch(xs + (PREFETCH_ROWS + 1) * d, dsub * sizeof(float))
                l2sq2(xs, xs + d, cbt + m * dsub * ksub, dsub, ksub, dist, dist + ksub,
                      mins)
                for r in range(2):
                    thr = mins[r] + rel * mins[r] + FLT_MIN
                    ip[(i + r) * M + m] = nearest_of(xs + r * d, cents + m * ksub * dsub,
                                                     dsub, ksub, dist + r * ksub, thr,
                                                     count_le)
                    if mp != NULL:
                        mp[(i + r) * M + m] = mins[r]
                i = i + 2
        while i < nr:
            xs = xp + i * d + m * dsub
            if i + PREFETCH_ROWS < nr:
                pqfast_prefetch(xs + PREFETCH_ROWS * d, dsub * sizeof(float))
            mn = l2sq(xs, cbt + m * dsub * ksub, dsub, ksub, dist)
            thr = mn + rel * mn + FLT_MIN  # FLT_MIN: subnormal rounding
            ip[i * M + m] = nearest_of(xs, cents + m * ksub * dsub, dsub, ksub,
                                       dist, thr, count_le)
            if mp != NULL:
                mp[i * M + m] = mn
            i = i + 1


cdef void assign_gemm(const float* xp, Py_ssize_t nr, Py_ssize_t d,
                      const float* cents, const float* ynorm, Py_ssize_t M,
                      Py_ssize_t ksub, Py_ssize_t dsub, pqfast_count_le_fn count_le,
                      bint own, float* work, uint16_t* ip) noexcept nogil:
    """Codes of nr rows from one GEMM per sub-quantizer, as ||y||^2 - 2<x, y>.

    That form loses digits when the norms are large next to the distances
    (SIFT-like data), so every candidate within its rounding error of the
    minimum is re-scored exactly.  work holds nr * ksub floats.
    """
    cdef Py_ssize_t i, m, j
    cdef float mn, tol, ymax, xn
    cdef float* row
    cdef const float* xs
    cdef const float* yn
    for m in range(M):
        yn = ynorm + m * ksub
        ymax = 0
        for j in range(ksub):
            ymax = max(ymax, yn[j])
        gemm_abt(xp + m * dsub, <int>d, <int>nr, cents + m * ksub * dsub,
                 <int>dsub, <int>ksub, <int>dsub, work, own)
        for i in range(nr):
            row = work + i * ksub
            xs = xp + i * d + m * dsub
            xn = sqnorm(xs, dsub)
            # approximate distances less ||x||^2 (same argmin), and their minimum
            mn = FLT_MAX
            for j in range(ksub):
                row[j] = yn[j] - (row[j] + row[j])
                mn = min(mn, row[j])
            # rounding bound of the GEMM form, with a safety factor of 4
            tol = 4.8e-7 * (dsub + 4) * (xn + ymax)
            ip[i * M + m] = nearest_of(xs, cents + m * ksub * dsub, dsub, ksub,
                                       row, mn + tol, count_le)


def assign_codes(x,            # IN  (n, d) float32 vectors
                 cents,        # IN  (M, ksub, dsub) float32 codebooks
                 cbt,          # IN  (M, dsub, ksub) the same, transposed
                 ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
                 Py_ssize_t chunk,  # IN  rows per block
                 bint direct,  # IN  direct distances (small dsub), else GEMM
                 int simd,     # IN  highest SIMD level of the direct distances
                               #     (0 portable, 1 AVX2, 2 AVX-512)
                 idx,          # OUT (n, M) uint16 nearest centroid per sub-vector
                 mins):        # OUT (n, M) float32 its squared distance as computed
                               #     (direct only), or (0, 0)
    """idx[i, m] = argmin_j ||x_im - y_mj||^2, the first index on exact ties.

    Candidates come from direct float32 distances (assign_direct: faster for
    small dsub) or from GEMMs (assign_gemm); either way, near ties are decided
    in float64, so both give the same codes, whatever the thread count.
    Scratch space: chunk * ksub floats a thread.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cp = <const float*>checked(cents, F32, 3, False, "cents")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef uint16_t* ip = <uint16_t*>checked(idx, U16, 2, True, "idx")
    cdef float* mp = <float*>checked(mins, F32, 2, True, "mins")
    cdef Py_ssize_t n = dim(x, 0), d = dim(x, 1), wcols
    cdef Py_ssize_t M = dim(cents, 0), ksub = dim(cents, 1), dsub = dim(cents, 2)
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(dim(cbt, 0) == M and dim(cbt, 1) == dsub and dim(cbt, 2) == ksub, "cbt")
    expect(dim(idx, 0) == n and dim(idx, 1) == M and 1 <= ksub <= 65536, "idx shape")
    expect(chunk >= 1, "chunk")
    if dim(mins, 0) == 0:
        mp = NULL
    else:
        expect(direct and dim(mins, 0) == n and dim(mins, 1) == M, "mins shape")
    cdef Py_ssize_t n_chunks = (n + chunk - 1) // chunk
    cdef Py_ssize_t c, i0, nr
    cdef int nt = omp_get_max_threads()
    cdef float* w
    cdef pqfast_l2sq_cols_fn l2sq = pqfast_l2sq_cols_impl(simd, ksub)
    cdef pqfast_l2sq_cols2_fn l2sq2 = pqfast_l2sq_cols2_impl(simd, ksub)
    cdef pqfast_count_le_fn count_le = pqfast_count_le_impl(simd, ksub)
    cdef bint own = pqfast_gemm_own(simd)
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, chunk * ksub, &wcols)
    for c in prange(n_chunks, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_chunks, 1, nt)):
        i0 = c * chunk
        nr = min(chunk, n - i0)
        w = wp + threadid() * wcols
        if direct:
            assign_direct(xp + i0 * d, nr, d, cp, cbtp, M, ksub, dsub, l2sq,
                          l2sq2 if wcols >= 2 * ksub else NULL, count_le, w,
                          ip + i0 * M, mp + i0 * M if mp != NULL else NULL)
        else:
            assign_gemm(xp + i0 * d, nr, d, cp, ynp, M, ksub, dsub, count_le, own,
                        w, ip + i0 * M)
    free(block)


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


cdef struct PqSearch:
    # pq_search's checked arguments, as its work items read them
    const float* x
    const float* cbt
    const float* ynorm
    const uint8_t* codes
    float* dist           # heap rows (D, I)
    int64_t* ids
    Py_ssize_t nq, d, M, dsub, ksub, n, cs, nseg, k, qb, wcols
    Py_ssize_t res_off      # floats from a row's start to its Reservoirs, 0: none
    int nbits
    bint l2
    pqfast_adc_multi_fn adc
    Selector sel


cdef void search_item(const PqSearch* P, Py_ssize_t w, float* tables) noexcept nogil:
    """pq_search's work item w: queries q0 .. q0 + nqb - 1 over database
    segment s, with the thread's scratch row `tables`."""
    cdef Py_ssize_t q0 = (w // P.nseg) * P.qb, s = w % P.nseg, mk = P.M * P.ksub
    cdef Py_ssize_t nqb = min(P.qb, P.nq - q0), k = P.k, nseg = P.nseg, i, q
    cdef Py_ssize_t lo = P.n * s // nseg, hi = P.n * (s + 1) // nseg
    cdef float* base = tables + P.wcols - PQFAST_MQ
    cdef float* hd = P.dist + (q0 * nseg + s) * k
    cdef int64_t* hi_ = P.ids + (q0 * nseg + s) * k
    cdef float* T
    cdef Reservoir* res[PQFAST_MQ]  # for large k, candidates go through these
    cdef Reservoir** rp = NULL
    if P.res_off > 0:
        for i in range(nqb):
            res[i] = reservoir_at(tables + P.res_off + i * reservoir_columns(k), k)
        rp = res
    query_tables(P.x + q0 * P.d, nqb, P.d, P.cbt, P.ynorm, P.M, P.dsub, P.ksub, P.l2,
                 tables)
    for i in range(nqb):
        q = q0 + i
        heap_init(P.dist + (q * nseg + s) * k, P.ids + (q * nseg + s) * k, k)
        base[i] = sqnorm(P.x + q * P.d, P.d) if P.l2 else 0
    if hi > lo and nqb > 1 and P.adc != NULL:
        T = <float*>((<size_t>(tables + nqb * mk) + 63) & ~(<size_t>63))
        pqfast_interleave8(tables, nqb, mk, T)
        scan_codes_multi(P.adc, T, P.codes + lo * P.cs, lo, hi - lo, P.cs, P.M,
                         base, nqb, hd, hi_, nseg * k, k, &P.sel, rp)
    elif hi > lo:
        for i in range(nqb):
            scan_codes(tables + i * mk, NULL, P.codes + lo * P.cs, NULL, lo, hi - lo,
                       P.cs, P.M, P.nbits, P.ksub, base[i], hd + i * nseg * k,
                       hi_ + i * nseg * k, k, &P.sel, NULL, rp[i] if rp else NULL)
    for i in range(nqb):
        if rp != NULL:
            reservoir_finish(res[i], hd + i * nseg * k, hi_ + i * nseg * k, nseg == 1)
        elif nseg == 1:
            heap_sort(hd + i * k, hi_ + i * k, k)


def pq_search(x,            # IN  (nq, d) float32 queries
              cbt,          # IN  (M, dsub, ksub) float32 transposed codebook
              ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
              codes,        # IN  (n, code_size) uint8 database codes
              int nbits, bint l2, Py_ssize_t nseg,
              sel,          # IN  id filter (selectors.py)
              int simd,     # IN  highest SIMD level of the multi-query scan
              D,            # OUT (nq * nseg, k) float32
              I):           # OUT (nq * nseg, k) int64
    """Exhaustive asymmetric-distance search.

    Work item w handles a block of queries (whose tables are built together,
    reading the codebook once) over database segment w % nseg, so a small
    batch still uses every thread; with nseg == 1 the rows come out sorted,
    otherwise they are heaps for merge_heaps.  L2 tables hold
    ||y||^2 - 2<x_m, y> with ||x||^2 as the base; inner-product tables hold
    -<x_m, y>.  Scratch space: work_columns(M, ksub) floats a thread.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const uint8_t* cp = <const uint8_t*>checked(codes, U8, 2, False, "codes")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t n = dim(codes, 0), cs = dim(codes, 1)
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(ksub == (1 << nbits) and cs == (M * nbits + 7) // 8, "nbits")
    expect(nseg >= 1 and dim(D, 0) == nq * nseg and dim(I, 0) == nq * nseg
           and dim(I, 1) == k and k >= 1
           and max_block(ksub) <= PQFAST_MQ,  # base[] holds PQFAST_MQ constants
           "heap shapes")
    cdef Py_ssize_t w
    cdef int nt = omp_get_max_threads()
    cdef PqSearch P
    P.x, P.cbt, P.ynorm, P.codes, P.dist, P.ids = xp, cbtp, ynp, cp, Dp, Ip
    P.nq, P.d, P.M, P.dsub, P.ksub, P.nbits, P.l2 = nq, d, M, dsub, ksub, nbits, l2
    P.n, P.cs, P.nseg, P.k = n, cs, nseg, k
    P.qb = query_block(nq, ksub, nseg, nt)
    P.adc = pqfast_adc_multi_impl(simd, nbits)
    P.sel = make_selector(sel)
    cdef Py_ssize_t n_items = (nq + P.qb - 1) // P.qb * nseg
    cdef void* block
    # Large k: the block's Reservoirs after the tables, the base constants
    # still at the row's end
    P.res_off = round16(work_columns(M, ksub)) if use_reservoir(k) else 0
    cdef float* wp = thread_rows(
        &block, nt, (P.res_off + max_block(ksub) * reservoir_columns(k) + PQFAST_MQ
                     if P.res_off else work_columns(M, ksub)), &P.wcols)
    cdef int team = team_size(n_items, 1, nt)
    if team == 1:  # no OpenMP region for a team of one (see team_size)
        with nogil:
            for w in range(n_items):
                search_item(&P, w, wp)
    else:
        for w in prange(n_items, nogil=True, schedule="dynamic", num_threads=team):
            search_item(&P, w, wp + threadid() * P.wcols)
    free(block)


def list_tables(cents,   # IN  (n, d) float32 coarse centroids
                cbt,     # IN  (M, dsub, ksub) float32 transposed codebook
                ynorm,   # IN  (M, ksub) float32 ||y_mj||^2
                out):    # OUT (n, M, ksub) float32
    """out[l, m, j] = ||y_mj||^2 + 2 <c_l,m, y_mj>: an IVF-PQ index's list
    terms (faiss's precomputed table), for L2 by residual.

    Each centroid's table is summed by pqfast_dot_tables in one fixed order,
    whatever the other centroids of the call, so a list's terms do not depend
    on which lists were computed with it (a BLAS GEMM's rounding depends on
    the shape: an index re-read from a file, which computes every list at
    once, would then rank near-ties differently from the index that computed
    some lists after an add or a removal).
    """
    cdef const float* cp = <const float*>checked(cents, F32, 2, False, "cents")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef float* op = <float*>checked(out, F32, 3, True, "out")
    cdef Py_ssize_t n = dim(cents, 0), d = dim(cents, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t mk = M * ksub, b, i, n_blocks = (n + QUERY_BLOCK - 1) // QUERY_BLOCK
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(dim(out, 0) == n and dim(out, 1) == M and dim(out, 2) == ksub, "out")
    for b in prange(n_blocks, nogil=True, schedule="dynamic",
                    num_threads=team_size(n * mk * dsub, 1 << 20, 0)):
        for i in range(b * QUERY_BLOCK, min(n, (b + 1) * QUERY_BLOCK)):
            memcpy(op + i * mk, ynp, mk * sizeof(float))
        pqfast_dot_tables(cp + b * QUERY_BLOCK * d, d, min(<Py_ssize_t>QUERY_BLOCK,
                          n - b * QUERY_BLOCK), cbtp, M, dsub, ksub, 2.0,
                          op + b * QUERY_BLOCK * mk, mk)


def code_sums(tables,     # IN  (nl, M, ksub) float32: table j for list lists[j]
              lists,      # IN  (nl,) int64 list numbers
              code_ptrs,  # IN  (nlist,) uint64 address of each list's packed codes
              sizes,      # IN  (nlist,) int64 codes in each list
              Py_ssize_t code_size, int nbits,
              out_ptrs,   # IN  (nl,) uint64 address of output j: out_sizes[j] float32s (OUT)
              out_sizes):  # IN  (nl,) int64 floats at out_ptrs[j]; must equal sizes[lists[j]]
    """out_j[i] = sum_m tables[j, m, code_i,m] for every code i of list lists[j]:
    the ADC sums of the scan kernels, each one kept (the per-code list terms
    of an IVF-PQ index, pqfast/_code_terms.py, which allocates the outputs).
    Each output's length is checked against its list's size before any
    write, and the checked lengths are what the loop uses."""
    cdef const float* tp = <const float*>checked(tables, F32, 3, False, "tables")
    cdef const int64_t* lp = <const int64_t*>checked(lists, I64, 1, False, "lists")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False,
                                                          "code_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef const uint64_t* optr = <const uint64_t*>checked(out_ptrs, U64, 1, False,
                                                          "out_ptrs")
    cdef const int64_t* osz = <const int64_t*>checked(out_sizes, I64, 1, False,
                                                       "out_sizes")
    cdef Py_ssize_t nl = dim(tables, 0), M = dim(tables, 1), ksub = dim(tables, 2)
    cdef Py_ssize_t nlist = dim(sizes, 0), total = 0
    expect(1 <= nbits <= 16 and ksub == (1 << nbits)
           and code_size == (M * nbits + 7) // 8, "nbits")
    expect(dim(lists, 0) == nl and dim(out_ptrs, 0) == nl and dim(out_sizes, 0) == nl
           and dim(code_ptrs, 0) == nlist, "shapes")
    cdef Py_ssize_t j, b0, nb
    for j in range(nl):
        expect(0 <= lp[j] < nlist, "list numbers outside [0, nlist)")
        expect(osz[j] == szp[lp[j]], "output sizes differ from the list sizes")
        expect(osz[j] == 0 or (cptr[lp[j]] != 0 and optr[j] != 0), "addresses")
        total += osz[j]
    cdef const uint8_t* codes
    cdef float* out
    for j in prange(nl, nogil=True, schedule="dynamic",
                    num_threads=team_size(total, 4096, 0)):
        codes = <const uint8_t*><uintptr_t>cptr[lp[j]]
        out = <float*><uintptr_t>optr[j]
        b0 = 0
        while b0 < osz[j]:
            nb = min(<Py_ssize_t>SCAN_BLOCK, osz[j] - b0)
            adc_block(tp + j * M * ksub, NULL, codes + b0 * code_size, nb, code_size, M,
                      nbits, ksub, 0, out + b0)
            b0 = b0 + nb
