"""4-bit PQ fast scan: block packing and the exhaustive search kernel.

Per query (and, for IVF, per probed list) the float lookup table is
quantized to 8 bits (an offset per sub-quantizer, one shared scale); blocks of
32 codes are scored with byte shuffles (fastscan.h); a code whose quantized
distance, allowing for the rounding, can still enter the heap is scored
exactly with the float table.  So the returned distances are exact ADC
distances, and the quantization filters but never decides.  (The exhaustive
search for large k defers the exact scoring: see scan_blocks_q.)
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport INT64_MAX, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.float cimport FLT_MAX
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from pqfast._kernels._arrays cimport (
    F32,
    I64,
    U8,
    U16,
    U64,
    check_probes,
    checked,
    dim,
    expect,
    list_term_stride,
    make_selector,
)
from pqfast._kernels._common cimport (
    pqfast_negate,
    Selector,
    sel_allows,
    heap_init,
    list_table,
    query_tables,
    sqnorm,
    heap_sift_down,
    heap_sort,
    Reservoir,
    SELECT_MIN_K,
    reservoir_at,
    reservoir_columns,
    reservoir_finish,
    reservoir_push,
    pqfast_keep_le,
    pqfast_kth_key,
    pqfast_select_k,
    pair_less,
    pqfast_ctz64,
    pqfast_sort_pairs,
    pqfast_dot_tables,
    heap_chunk,
    nearest_columns,
    nearest_lists,
    round16,
    team_size,
    thread_rows,
    omp_get_max_threads,
)


cdef extern from "fastscan.h" nogil:
    ctypedef uint32_t (*pqfast_fs_block_fn)(const uint8_t*, Py_ssize_t, const uint8_t*,
                                            uint16_t, uint16_t*) noexcept nogil
    pqfast_fs_block_fn pqfast_fs_block_impl(int max_level)
    ctypedef Py_ssize_t (*pqfast_fs_next_fn)(const uint8_t*, Py_ssize_t, Py_ssize_t,
                                             Py_ssize_t, const uint8_t*, uint16_t,
                                             uint32_t*, uint16_t*) noexcept nogil
    pqfast_fs_next_fn pqfast_fs_next_impl(int max_level, int keep_sums)
    ctypedef float (*pqfast_quantize_fn)(const float*, Py_ssize_t, uint8_t*,
                                         float*) noexcept nogil
    pqfast_quantize_fn pqfast_quantize16_impl(int max_level)
    void pqfast_fs_score_at(const uint8_t* blocks, Py_ssize_t M, const float* table,
                            float base, const int64_t* pos, Py_ssize_t n, float* out)
    uint32_t pqfast_fs_qsum_at(const uint8_t* blocks, Py_ssize_t M, const uint8_t* lut,
                               int64_t i)
    ctypedef uint32_t (*pqfast_fs_exact_fn)(const uint8_t*, Py_ssize_t, const float*,
                                            float, float, uint32_t, float*) noexcept nogil
    pqfast_fs_exact_fn pqfast_fs_exact_impl(int max_level)


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


def block_sums(blocks, lut, int level, uint16_t thr, out, masks):
    """Quantized distances and threshold masks per block (tests: SIMD vs portable)."""
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef const uint8_t* lp = <const uint8_t*>checked(lut, U8, 2, False, "lut")
    cdef uint16_t* op = <uint16_t*>checked(out, U16, 2, True, "out")
    cdef Py_ssize_t nblocks = dim(blocks, 0), M = dim(lut, 0), b
    cdef int64_t* mp = <int64_t*>checked(masks, I64, 1, True, "masks")
    expect(dim(lut, 1) == 16 and dim(blocks, 1) == M * 16 and dim(out, 0) == nblocks
           and dim(out, 1) == 32 and dim(masks, 0) == nblocks, "shapes")
    cdef pqfast_fs_block_fn fn = pqfast_fs_block_impl(level)
    for b in range(nblocks):
        mp[b] = fn(bp + b * M * 16, M, lp, thr, op + b * 32)


def exact_scores(blocks, table, int level, float base, float thr, masks, out):
    """Exact re-scoring of the candidates of each block (tests: SIMD vs
    portable): masks[b] holds block b's candidates on entry and, on return,
    those scoring <= thr; out[b, j] their scores (other entries unspecified)."""
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef const float* tp = <const float*>checked(table, F32, 2, False, "table")
    cdef int64_t* mp = <int64_t*>checked(masks, I64, 1, True, "masks")
    cdef float* op = <float*>checked(out, F32, 2, True, "out")
    cdef Py_ssize_t nblocks = dim(blocks, 0), M = dim(table, 0), b
    expect(dim(table, 1) == 16 and dim(blocks, 1) == M * 16 and dim(masks, 0) == nblocks
           and dim(out, 0) == nblocks and dim(out, 1) == 32, "shapes")
    cdef pqfast_fs_exact_fn exact = pqfast_fs_exact_impl(level)
    for b in range(nblocks):
        mp[b] = exact(bp + b * M * 16, M, tp, base, thr, <uint32_t>mp[b], op + b * 32)


def quantize(table, int level, lut):
    """8-bit table of a float table (M, 16) into lut (M, 16) uint8; returns
    (scale, bias).  Each row's minimum is subtracted, one scale is shared
    (tests: the SIMD versions against the portable one)."""
    cdef const float* tp = <const float*>checked(table, F32, 2, False, "table")
    cdef uint8_t* lp = <uint8_t*>checked(lut, U8, 2, True, "lut")
    expect(dim(table, 1) == 16 and dim(lut, 0) == dim(table, 0) and dim(lut, 1) == 16,
           "shapes")
    cdef float bias = 0
    cdef float scale = pqfast_quantize16_impl(level)(tp, dim(table, 0), lp, &bias)
    return scale, bias


cdef inline Py_ssize_t work_columns(Py_ssize_t M, Py_ssize_t k) noexcept nogil:
    """Scratch floats per thread of pq4_search / ivfpq4_search: the float
    tables (2 M * 16), the 8-bit table (M * 4 floats, in a region of M * 16 +
    16 that once also held block sums), and for large k a Reservoir (a
    header, then room for 4k distances, ids, keys)."""
    return 3 * M * 16 + 16 + (reservoir_columns(k) if k >= SELECT_MIN_K else 0)


cdef inline Reservoir* thread_reservoir(float* row, Py_ssize_t M,
                                        Py_ssize_t k) noexcept nogil:
    """An empty Reservoir in a thread's scratch row (see work_columns), or
    NULL for small k (the heap is used directly)."""
    if k < SELECT_MIN_K:
        return NULL
    return reservoir_at(row + 3 * M * 16 + 16, k)  # a multiple of 16 floats: aligned


cdef inline uint16_t qthreshold(float room, float scale, Py_ssize_t M) noexcept nogil:
    """The quantized sum at or below which a code may be closer than `room`
    (heap threshold less base and bias).

    Each of the M rounded entries is off by at most half a step, so the bound
    adds M/2 steps (and one for float rounding): a code the float table would
    keep is never filtered out.
    """
    cdef double q
    if scale <= 0:
        return 65535
    q = <double>room * scale + M // 2 + 1
    if q >= 65535:
        return 65535
    if q < 0:
        return 0
    return <uint16_t>q


cdef inline void scan_blocks(pqfast_fs_next_fn next_block, pqfast_fs_exact_fn exact,
                             const uint8_t* blocks,
                             Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t n, Py_ssize_t M,
                             const float* table, const uint8_t* lut, float base,
                             float bias, float scale, const int64_t* ids,
                             float* hd, int64_t* hi, Py_ssize_t k, const Selector* sel,
                             Reservoir* res) noexcept nogil:
    """Offer codes of blocks [b0, b1) (n codes in all) to the heap.

    Blocks are filtered by quantized distance; the codes that pass are scored
    exactly with the float table (`exact`), so the heap holds exact ADC
    distances.  Code i's id is ids[i], or i when ids is NULL.  With `res`
    (large k) the codes go to the reservoir instead of the heap.
    """
    cdef Py_ssize_t b = b0, j, i
    cdef uint32_t mask = 0
    cdef float dist[32]
    cdef uint16_t sums[32]  # not written: next_block without sums
    cdef float top
    cdef int64_t idx
    while True:
        top = res.thr_d if res != NULL else hd[0]
        b = next_block(blocks, b, b1, M, lut, qthreshold(top - base - bias, scale, M),
                       &mask, sums)
        if b >= b1:
            break
        mask = exact(blocks + b * M * 16, M, table, base, top, mask, dist)
        while mask:
            j = pqfast_ctz64(mask)
            mask = mask & (mask - 1)
            i = b * 32 + j
            if i >= n:
                break
            idx = ids[i] if ids != NULL else i
            if res != NULL:
                if pair_less(dist[j], idx, res.thr_d, res.thr_i) and sel_allows(sel, idx):
                    reservoir_push(res, dist[j], idx)
            elif pair_less(dist[j], idx, hd[0], hi[0]) and sel_allows(sel, idx):
                heap_sift_down(hd, hi, k, 0, dist[j], idx)
        b = b + 1


# The exhaustive search for large k keeps candidates by quantized sum: one
# table for all codes makes the sums comparable, so the k-th smallest sum q_k
# bounds the k-th exact distance, and the exact scoring waits for the end,
# for the few codes within reach of it.  Each of the M entries of a sum is
# off by at most half a step, so a code with sum s has an exact distance
# within M/2 steps of s: a code of the exact k best has a sum <= q_k + M
# (and one more step for float rounding).  The Reservoir's `keys` hold the
# sums, `i` the positions; `d` is only used at the end (and when many codes
# share the same sums: then the reservoir is decided exactly, see qres_shrink).


cdef inline void qres_shrink(Reservoir* r, const uint8_t* blocks, Py_ssize_t M,
                             const float* table, const uint8_t* lut, float base,
                             float bias, float scale) noexcept nogil:
    """Keep the candidates of a full reservoir that can still be among the k
    best, and tighten its threshold r.qthr."""
    cdef uint32_t t = pqfast_kth_key(r.keys, r.n, r.k) + M + 2
    cdef Py_ssize_t j
    if t < r.qthr:
        r.qthr = t
    r.n = pqfast_keep_le(r.keys, r.i, r.n, r.qthr)
    if r.n <= 2 * r.k:
        return
    # many equal sums: keep the k exact best, and their sums
    pqfast_fs_score_at(blocks, M, table, base, r.i, r.n, r.d)
    pqfast_select_k(r.d, r.i, r.n, r.k, r.keys, &r.thr_d, &r.thr_i)
    r.n = r.k
    t = qthreshold(r.thr_d - base - bias, scale, M)
    if t < r.qthr:
        r.qthr = t
    for j in range(r.n):
        r.keys[j] = pqfast_fs_qsum_at(blocks, M, lut, r.i[j])


cdef inline void scan_blocks_q(pqfast_fs_next_fn next_block, const uint8_t* blocks,
                               Py_ssize_t b0, Py_ssize_t b1, Py_ssize_t n, Py_ssize_t M,
                               const float* table, const uint8_t* lut, float base,
                               float bias, float scale, const Selector* sel,
                               Reservoir* r) noexcept nogil:
    """Offer codes b0 * 32 ... (blocks [b0, b1), n codes in all) to the
    reservoir by quantized sum (ids are positions)."""
    cdef Py_ssize_t b = b0, j, i
    cdef uint32_t mask = 0
    cdef uint16_t sums[32]
    while True:
        b = next_block(blocks, b, b1, M, lut, <uint16_t>r.qthr, &mask, sums)
        if b >= b1:
            break
        while mask:
            j = pqfast_ctz64(mask)
            mask = mask & (mask - 1)
            i = b * 32 + j
            if i >= n:
                break
            if sums[j] <= r.qthr and sel_allows(sel, i):
                r.keys[r.n] = sums[j]
                r.i[r.n] = i
                r.n = r.n + 1
                if r.n == 4 * r.k:
                    qres_shrink(r, blocks, M, table, lut, base, bias, scale)
        b = b + 1


cdef inline void qres_finish(Reservoir* r, const uint8_t* blocks, Py_ssize_t M,
                             const float* table, float base, float* hd, int64_t* hi,
                             bint sort) noexcept nogil:
    """Score the candidates within reach of the k-th sum exactly and put the
    k best into (hd, hi), as reservoir_finish."""
    cdef uint32_t t
    if r.n > r.k:
        t = pqfast_kth_key(r.keys, r.n, r.k) + M + 2
        r.n = pqfast_keep_le(r.keys, r.i, r.n, t if t < r.qthr else r.qthr)
    pqfast_fs_score_at(blocks, M, table, base, r.i, r.n, r.d)
    reservoir_finish(r, hd, hi, sort)


cdef struct Pq4Search:
    # pq4_search's checked arguments, as its work items read them
    const float* x
    const float* cbt
    const float* ynorm
    const uint8_t* blocks
    float* dist           # heap rows (D, I)
    int64_t* ids
    Py_ssize_t d, M, dsub, nblocks, ntotal, nseg, k
    bint l2
    pqfast_fs_next_fn next_block
    pqfast_quantize_fn quantize
    pqfast_fs_exact_fn exact
    Selector sel


cdef void search_item(const Pq4Search* P, Py_ssize_t w, float* table) noexcept nogil:
    """pq4_search's work item w: query w // nseg over block segment w % nseg,
    into heap row w, with the thread's scratch row `table`."""
    cdef Py_ssize_t q = w // P.nseg, s = w % P.nseg, M = P.M, k = P.k
    cdef Py_ssize_t b0 = P.nblocks * s // P.nseg, b1 = P.nblocks * (s + 1) // P.nseg
    cdef const float* x = P.x + q * P.d
    cdef uint8_t* qtable = <uint8_t*>(table + 2 * M * 16)
    cdef Reservoir* res = thread_reservoir(table, M, k)
    cdef float base, scale, bias = 0
    heap_init(P.dist + w * k, P.ids + w * k, k)
    query_tables(x, 1, P.d, P.cbt, P.ynorm, M, P.dsub, 16, P.l2, table)
    base = sqnorm(x, P.d) if P.l2 else 0
    scale = P.quantize(table, M, qtable, &bias)
    if res != NULL:
        scan_blocks_q(P.next_block, P.blocks, b0, b1, P.ntotal, M, table, qtable, base,
                      bias, scale, &P.sel, res)
        qres_finish(res, P.blocks, M, table, base, P.dist + w * k, P.ids + w * k, P.nseg == 1)
    else:
        scan_blocks(P.next_block, P.exact, P.blocks, b0, b1, P.ntotal, M, table, qtable,
                    base, bias, scale, NULL, P.dist + w * k, P.ids + w * k, k, &P.sel, NULL)
        if P.nseg == 1:
            heap_sort(P.dist + w * k, P.ids + w * k, k)


def pq4_search(x,          # IN  (nq, d) float32 queries
               cbt,        # IN  (M, dsub, 16) float32 transposed codebook
               ynorm,      # IN  (M, 16) float32 ||y_mj||^2
               blocks,     # IN  (nblocks, M * 16) uint8 packed codes
               Py_ssize_t ntotal, bint l2, Py_ssize_t nseg, bint simd,
               sel,        # IN  id filter (kind, lo, hi, sorted ids)
               D,          # OUT (nq * nseg, k) float32
               I):         # OUT (nq * nseg, k) int64
    """Exhaustive 4-bit fast-scan search; rows sorted when nseg == 1.
    Scratch space: work_columns(M, k) floats a thread."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const uint8_t* bp = <const uint8_t*>checked(blocks, U8, 2, False, "blocks")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), nblocks = dim(blocks, 0)
    cdef Py_ssize_t wcols, n_items = nq * nseg
    expect(dim(cbt, 2) == 16 and M * dsub == d and dim(ynorm, 0) == M
           and dim(ynorm, 1) == 16, "codebook")
    expect(dim(blocks, 1) == M * 16 and nblocks == (ntotal + 31) // 32, "blocks")
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1, "shapes")
    cdef Pq4Search P
    P.x, P.cbt, P.ynorm, P.blocks, P.dist, P.ids = xp, cbtp, ynp, bp, Dp, Ip
    P.d, P.M, P.dsub, P.nblocks, P.ntotal = d, M, dsub, nblocks, ntotal
    P.nseg, P.k, P.l2 = nseg, k, l2
    P.next_block = pqfast_fs_next_impl(2 if simd else 0, k >= SELECT_MIN_K)
    P.quantize = pqfast_quantize16_impl(2 if simd else 0)
    P.exact = pqfast_fs_exact_impl(2 if simd else 0)
    P.sel = make_selector(sel)
    cdef int nt = omp_get_max_threads()
    cdef Py_ssize_t w
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, work_columns(M, k), &wcols)
    cdef int team = team_size(n_items, 1, nt)
    if team == 1:  # no OpenMP region for a team of one (see team_size)
        with nogil:
            for w in range(n_items):
                search_item(&P, w, wp)
    else:
        for w in prange(n_items, nogil=True, schedule="dynamic",
                        chunksize=heap_chunk(n_items, nt), num_threads=team):
            search_item(&P, w, wp + threadid() * wcols)
    free(block)


cdef struct FsLists:
    # An IVF fast-scan index's codebook and lists, as the kernels read them
    const float* cbt        # (M, dsub, 16) transposed codebook
    const float* ynorm      # (M, 16) ||y_mj||^2
    const float* precomp    # list terms, or NULL
    Py_ssize_t pstride      # floats between lists' rows of precomp
    const float* centroids  # (nlist, d) coarse centroids
    const uint64_t* blocks  # (nlist,) address of each list's blocks
    const uint64_t* ids     # (nlist,) address of each list's ids
    const int64_t* sizes    # (nlist,) entries per list
    Py_ssize_t nlist, M, dsub, d
    bint l2
    pqfast_fs_next_fn next_block
    pqfast_quantize_fn quantize_table
    pqfast_fs_exact_fn exact


cdef FsLists checked_fs_lists(cbt, ynorm, precomp, centroids, block_ptrs, id_ptrs,
                              sizes, Py_ssize_t d, bint l2, bint simd):
    """FsLists from the index's arrays, their shapes checked."""
    cdef FsLists L
    L.cbt = <const float*>checked(cbt, F32, 3, False, "cbt")
    L.ynorm = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    L.centroids = <const float*>checked(centroids, F32, 2, False, "centroids")
    L.blocks = <const uint64_t*>checked(block_ptrs, U64, 1, False, "block_ptrs")
    L.ids = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    L.sizes = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    L.M, L.dsub, L.nlist, L.d, L.l2 = dim(cbt, 0), dim(cbt, 1), dim(sizes, 0), d, l2
    expect(dim(cbt, 2) == 16 and L.M * L.dsub == d and dim(ynorm, 0) == L.M
           and dim(ynorm, 1) == 16, "codebook")
    expect(dim(centroids, 0) == L.nlist and dim(centroids, 1) == d, "centroids")
    expect(dim(block_ptrs, 0) == L.nlist and dim(id_ptrs, 0) == L.nlist, "list arrays")
    L.pstride = list_term_stride(precomp, L.nlist, L.M, 16)
    L.precomp = (<const float*>checked(precomp, F32, 3, False, "precomp")
                 if dim(precomp, 0) > 0 else NULL)
    L.next_block = pqfast_fs_next_impl(2 if simd else 0, False)
    L.quantize_table = pqfast_quantize16_impl(2 if simd else 0)
    L.exact = pqfast_fs_exact_impl(2 if simd else 0)
    return L


cdef inline void search_lists(const FsLists* L, const float* xq, const int64_t* probes,
                              const float* coarse, Py_ssize_t p0, Py_ssize_t p1,
                              float* row, float* hd, int64_t* hi, Py_ssize_t k,
                              bint sorted_out, const Selector* sel) noexcept nogil:
    """One query's probes p0 .. p1 - 1 (list numbers, -1 = none, and coarse
    terms): per list, the list's float table (as in _ivf.ivfpq_search) is
    quantized and the list's blocks are scanned; the results go to the heap
    (hd, hi), sorted when sorted_out.  row: the thread's scratch row (see
    work_columns)."""
    cdef Py_ssize_t p, l, mk = L.M * 16
    cdef float* ltab = row + mk
    cdef uint8_t* lut = <uint8_t*>(row + 2 * mk)
    cdef const float* tab
    cdef bint quantized = False  # lut holds the query's table (inner product)
    cdef float scale = 0, bias = 0
    cdef Reservoir* res = thread_reservoir(row, L.M, k)
    heap_init(hd, hi, k)
    memset(row, 0, mk * sizeof(float))
    pqfast_dot_tables(xq, L.d, 1, L.cbt, L.M, L.dsub, 16, -2.0 if L.l2 else -1.0,
                      row, mk)
    for p in range(p0, p1):
        l = probes[p]
        if l < 0 or L.sizes[l] == 0:
            continue
        tab = list_table(row, L.precomp + l * L.pstride if L.precomp != NULL else NULL,
                         L.ynorm, L.centroids + l * L.d, L.cbt, L.M, L.dsub, 16, L.l2,
                         ltab)
        if L.l2 or not quantized:  # inner product: every list has the query's table
            bias = 0
            scale = L.quantize_table(tab, L.M, lut, &bias)
            quantized = True
        scan_blocks(L.next_block, L.exact, <const uint8_t*><uintptr_t>L.blocks[l], 0,
                    (L.sizes[l] + 31) // 32, L.sizes[l], L.M, tab, lut, coarse[p], bias,
                    scale, <const int64_t*><uintptr_t>L.ids[l], hd, hi, k, sel, res)
    if res != NULL:
        reservoir_finish(res, hd, hi, sorted_out)
    elif sorted_out:
        heap_sort(hd, hi, k)


def ivfpq4_search(x,          # IN  (nq, d) float32 queries
                  probes,     # IN  (nq, nprobe) int64 list numbers, -1 = none
                  coarse,     # IN  (nq, nprobe) float32 ||x - c||^2 or -<x, c>
                  cbt,        # IN  (M, dsub, 16) float32 transposed codebook
                  ynorm,      # IN  (M, 16) float32 ||y_mj||^2
                  precomp,    # IN  (nlist or 1, M, 16) float32 list terms, or (0, M, 16)
                  centroids,  # IN  (nlist, d) float32 coarse centroids
                  block_ptrs,  # IN  (nlist,) uint64 address of each list's blocks
                  id_ptrs,    # IN  (nlist,) uint64 address of each list's ids
                  sizes,      # IN  (nlist,) int64 entries per list
                  bint l2, Py_ssize_t nseg, bint simd,
                  sel,        # IN  id filter (kind, lo, hi, sorted ids)
                  D,          # OUT (nq * nseg, k) float32
                  I):         # OUT (nq * nseg, k) int64
    """IVF 4-bit fast scan: per probed list, the list's float table (as in
    _ivf.ivfpq_search) is quantized and the list's blocks are scanned; work
    item w is query w // nseg over its probe segment w % nseg.  Scratch
    space: work_columns(M, k) floats a thread."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const float* cp = <const float*>checked(coarse, F32, 2, False, "coarse")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Py_ssize_t k = dim(D, 1), n_items = nq * nseg, wcols
    cdef FsLists L = checked_fs_lists(cbt, ynorm, precomp, centroids, block_ptrs,
                                      id_ptrs, sizes, d, l2, simd)
    check_probes(probes, coarse, nq, L.nlist)
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1, "shapes")
    cdef Py_ssize_t w, q, s
    cdef Selector selector = make_selector(sel)
    cdef int nt = omp_get_max_threads()
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, work_columns(L.M, k), &wcols)
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    chunksize=heap_chunk(n_items, nt),
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        search_lists(&L, xp + q * d, pp + q * nprobe, cp + q * nprobe,
                     nprobe * s // nseg, nprobe * (s + 1) // nseg,
                     wp + threadid() * wcols, Dp + w * k, Ip + w * k, k, nseg == 1,
                     &selector)
    free(block)


cdef void flat_query(const FsLists* L, const float* x, const float* cnorms,
                     Py_ssize_t d, bint l2, Py_ssize_t nprobe, float* w,
                     Py_ssize_t fcols, int64_t* pi, float* hd, int64_t* hi,
                     Py_ssize_t k, const Selector* sel) noexcept nogil:
    """One query of ivfpq4_search_flat: its coarse search (probe terms, then
    nearest_columns(nlist, nprobe) floats for the distances, after the scan's
    fcols floats of w), then its lists' scan into the sorted row hd, hi; pi:
    room for nprobe list numbers."""
    nearest_lists(x, L.centroids, cnorms, L.nlist, d, l2, w + fcols + round16(nprobe),
                  w + fcols, pi, nprobe)
    search_lists(L, x, pi, w + fcols, 0, nprobe, w, hd, hi, k, True, sel)


def ivfpq4_search_flat(x,       # IN  (nq, d) float32 queries, nq small
                       Py_ssize_t nprobe,
                       cnorms,  # IN  (nlist,) ||c||^2 of the coarse centroids
                       cbt, ynorm, precomp, centroids, block_ptrs, id_ptrs, sizes,
                       Py_ssize_t code_size, int nbits, bint l2, bint simd,
                       sel, D, I):  # as for ivfpq4_search, D and I (nq, k)
    """ivfpq4_search for a flat coarse quantizer of the index's metric, whose
    centroids are `centroids`: each query's coarse search (the flat
    quantizer's arithmetic, _common.nearest_lists) and list scan in one call,
    as _ivf.ivfpq_search_flat does for 8-bit codes.  code_size and nbits are
    those of 4-bit codes (the arguments are IndexIVFPQ's).  Unlike the other
    kernels, D comes out in faiss's form, inner products positive (a one-query
    search then needs no numpy call after it)."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cnp = <const float*>checked(cnorms, F32, 1, False, "cnorms")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1), wcols
    cdef FsLists L = checked_fs_lists(cbt, ynorm, precomp, centroids, block_ptrs,
                                      id_ptrs, sizes, d, l2, simd)
    expect(nbits == 4 and code_size == (L.M * 4 + 7) // 8, "nbits")
    expect(dim(cnorms, 0) == L.nlist, "centroid norms")
    expect(1 <= nprobe <= L.nlist, "nprobe")
    expect(dim(D, 0) == nq and dim(I, 0) == nq and dim(I, 1) == k and k >= 1, "shapes")
    cdef Selector selector = make_selector(sel)
    cdef int nt = team_size(nq, 1, 0)
    # Per thread: the scan's scratch, the probes' coarse terms, and the coarse
    # distances (nearest_lists); pip: the probes' list numbers
    cdef Py_ssize_t fcols = work_columns(L.M, k)
    cdef void* block
    cdef float* wp = thread_rows(
        &block, nt, fcols + round16(nprobe) + nearest_columns(L.nlist, nprobe), &wcols)
    cdef int64_t* pip = <int64_t*>malloc(nt * nprobe * sizeof(int64_t))
    if pip == NULL:
        free(block)
        raise MemoryError()
    cdef Py_ssize_t q
    if nt == 1:  # no OpenMP region for a team of one (see team_size)
        with nogil:
            for q in range(nq):
                flat_query(&L, xp + q * d, cnp, d, l2, nprobe, wp, fcols, pip,
                           Dp + q * k, Ip + q * k, k, &selector)
    else:
        for q in prange(nq, nogil=True, schedule="dynamic", num_threads=nt):
            flat_query(&L, xp + q * d, cnp, d, l2, nprobe, wp + threadid() * wcols,
                       fcols, pip + threadid() * nprobe, Dp + q * k, Ip + q * k, k,
                       &selector)
    if not l2:
        pqfast_negate(Dp, nq * k)
    free(block)
    free(pip)
