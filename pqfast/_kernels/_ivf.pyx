"""IVF-PQ search kernel: scan the probed inverted lists of each query.

For L2 by residual, with coarse centroid c and PQ reconstruction y of the
residual (Jegou et al., "Product quantization for nearest neighbor search",
TPAMI 2011, section IV.A):

    ||x - c - y||^2 = ||x - c||^2 + sum_m (||y_m||^2 + 2<c_m, y_m>) - 2 sum_m <x_m, y_m>
                    = coarse term + list table P_l            + query table T_q

T_q is built once per query.  The list term of a code, sum_m P_l[m, y_m],
does not depend on the query: it is read per code when the index keeps it
so (`terms`: one float a code, as additive quantizers keep a code's norm),
else from P_l, read from a precomputed (nlist, M, ksub) table when the index
holds one or built per list.  Inner product needs no list term:
<x, c + y> = <x, c> + sum_m <x_m, y_m>.

A query whose probed lists hold few codes (8-bit codes; use_direct) skips
the tables: each code's distance is computed from the codebook
(||x - c - y||^2, or <x, c> + <x, y>, with pqfast_pq8_direct_*), d
operations a code against 256 d for T_q and a row of P_l per list.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from pqfast._kernels._arrays cimport (
    F32,
    I64,
    U64,
    U8,
    check_probes,
    checked,
    dim,
    expect,
    list_term_stride,
    make_selector,
)
from pqfast._kernels._common cimport (
    Selector,
    sel_allows,
    heap_sift_down,
    pair_less,
    pqfast_dots,
    pqfast_l2_from_dots,
    pqfast_l2sq_rows,
    pqfast_min,
    pqfast_negate,
    heap_init,
    list_table,
    heap_sort,
    pqfast_dot_tables,
    offer_block,
    pqfast_pq8_direct_fn,
    pqfast_pq8_direct_impl,
    scan_codes,
    SCAN_BLOCK,
    sqnorm,
    heap_chunk,
    nearest_lists,
    team_size,
    omp_get_max_threads,
    nearest_columns,
    thread_rows,
    Reservoir,
    finish_row,
    round16,
    row_reservoir,
    row_reservoir_columns,
)


cdef enum:
    QUERY_BLOCK = 8   # queries whose tables are built together (pqfast_dot_tables)
    SHORT_LIST = 64   # lists shorter than this are scanned with two tables (measured:
                      # 0 -> 64 took M=32, nprobe 64, 26 codes a list from 76 to 45 ms;
                      # 64 -> 128 made 130-code lists 3-7 % slower, 26-code ones no
                      # faster; always two tables made 780-code lists 1.5x slower)


cdef inline Py_ssize_t max_block(Py_ssize_t ksub) noexcept nogil:
    """Query block size: tables of 16-bit codes (256 KiB a row) are built one
    query at a time, to keep the scratch space small."""
    return QUERY_BLOCK if ksub <= 256 else 1


cdef inline Py_ssize_t work_columns(Py_ssize_t M, Py_ssize_t ksub) noexcept nogil:
    """Scratch floats per thread that ivfpq_search needs: the query tables of
    a block and one list table."""
    return (max_block(ksub) + 1) * M * ksub


cdef struct Lists:
    # An IndexIVFPQ's codebook and inverted lists, as ivfpq_search receives them.
    const float* cbt           # (M, dsub, ksub) transposed codebook
    const float* ynorm         # (M, ksub) ||y_mj||^2
    const float* precomp       # list terms, list l's at precomp + l * pstride, or NULL
    Py_ssize_t pstride         # M * ksub, or 0: one list term for every list
    const float* centroids     # (nlist, d) coarse centroids
    const uint64_t* code_ptrs  # (nlist,) address of each list's codes
    const uint64_t* id_ptrs    # (nlist,) address of each list's ids
    const uint64_t* term_ptrs  # (nlist,) address of each list's code terms, or NULL
    const int64_t* sizes       # (nlist,) entries per list
    Py_ssize_t M, dsub, ksub, d, code_size
    int nbits
    bint l2
    bint by_residual
    const float* cents         # (M, ksub, dsub) codebook, for direct
    pqfast_pq8_direct_fn direct  # distances without tables (see use_direct)
    bint direct_on             # ... allowed (8-bit codes, and cents given)


cdef Lists checked_lists(cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs, sizes,
                         Py_ssize_t d, Py_ssize_t code_size, int nbits,
                         bint l2, cents=None, bint by_residual=True,
                         bint direct=False, int simd=2, terms=None) except *:
    """The Lists of ivfpq_search's arguments, every shape checked (without
    cents, or without direct, every query is scored through tables; without
    terms, list terms come from precomp or are built per list)."""
    cdef Lists L
    L.term_ptrs = NULL
    L.direct = NULL
    L.direct_on = False
    L.by_residual = by_residual
    L.cents = NULL
    L.cbt = <const float*>checked(cbt, F32, 3, False, "cbt")
    L.ynorm = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    L.precomp = <const float*>checked(precomp, F32, 3, False, "precomp")
    L.centroids = <const float*>checked(centroids, F32, 2, False, "centroids")
    L.code_ptrs = <const uint64_t*>checked(code_ptrs, U64, 1, False, "code_ptrs")
    L.id_ptrs = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    L.sizes = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    L.M, L.dsub, L.ksub, L.d = dim(cbt, 0), dim(cbt, 1), dim(cbt, 2), d
    L.code_size, L.nbits, L.l2 = code_size, nbits, l2
    cdef Py_ssize_t nlist = dim(sizes, 0), npre = dim(precomp, 0)
    expect(L.M * L.dsub == d and dim(ynorm, 0) == L.M and dim(ynorm, 1) == L.ksub,
           "codebook")
    expect(L.ksub == (1 << nbits) and code_size == (L.M * nbits + 7) // 8, "nbits")
    L.pstride = list_term_stride(precomp, nlist, L.M, L.ksub)
    if npre == 0:
        L.precomp = NULL
    expect(dim(centroids, 0) == nlist and dim(centroids, 1) == d, "centroids")
    expect(dim(code_ptrs, 0) == nlist and dim(id_ptrs, 0) == nlist, "list arrays")
    if terms is not None:
        L.term_ptrs = <const uint64_t*>checked(terms, U64, 1, False, "terms")
        expect(dim(terms, 0) == nlist and l2 and by_residual, "code terms")
    # direct scoring: 8-bit codes, and the residual fits the list-table scratch
    if cents is not None and direct and nbits == 8 and d <= L.M * L.ksub:
        L.cents = <const float*>checked(cents, F32, 3, False, "cents")
        expect(dim(cents, 0) == L.M and dim(cents, 1) == L.ksub
               and dim(cents, 2) == L.dsub, "cents")
        L.direct = pqfast_pq8_direct_impl(simd)
        L.direct_on = True
    return L


cdef enum:
    # What a query table costs in use_direct's units, times 1 / (ksub d):
    TABLE_ALONE = 15  # built for one query
    TABLE_BLOCK = 9   # a query's share when built for a block
                      # (pqfast_dot_tables reads the codebook once a block)


cdef inline Py_ssize_t excess_of(const Lists* L, Py_ssize_t n,
                                 Py_ssize_t lists) noexcept nogil:
    """direct_excess of n codes in `lists` probed lists (the cost model)."""
    if not (L.l2 and L.by_residual) or L.term_ptrs != NULL:
        lists = 0
    return 25 * n * (L.d + 5 * L.M) - 35 * lists * L.M * L.ksub


cdef inline Py_ssize_t direct_excess(const Lists* L, const int64_t* probes,
                                     Py_ssize_t nprobe) noexcept nogil:
    """What scoring a query with these probes (all of them: the choice must
    not depend on how they are split) from the codebook costs more than
    through tables, leaving out its query table: negative when direct
    scoring is cheaper even with the table built.

    A cost model fitted on the bundled data (d = 384, M = 8 to 32, nlist 379,
    PERFORMANCE.md #36, #40), in units of about 0.014 ns: a code scored
    directly costs 25 (d + 5 M) more than through tables; for L2 by residual
    without code terms, tables cost 35 M ksub a list (its row of list terms,
    read from L2 or L3); the query table costs TABLE_ALONE ksub d (TABLE_BLOCK
    ksub d a query when built for a block)."""
    cdef Py_ssize_t p, n = 0, lists = 0
    for p in range(nprobe):
        if probes[p] >= 0:
            n = n + L.sizes[probes[p]]
            lists = lists + 1
    return excess_of(L, n, lists)


cdef inline bint use_direct(const Lists* L, const int64_t* probes,
                            Py_ssize_t nprobe) noexcept nogil:
    """Whether one query, its table built for it alone, is scored directly."""
    return (L.direct_on
            and direct_excess(L, probes, nprobe) <= TABLE_ALONE * L.ksub * L.d)


cdef inline bint surely_direct(const Lists* L, Py_ssize_t nlist,
                               Py_ssize_t nprobe) noexcept nogil:
    """Whether a query probing nprobe lists of the average size would be
    scored directly even at twice that many codes: then its table will most
    likely not be needed, and a one-query search does not wake a second
    thread to build it while the first searches the coarse centroids (at 2
    threads, M=32 IP nprobe 1: 9.4 us with the second thread, 8.2 without).
    The choice only moves work between threads: results are the same."""
    cdef Py_ssize_t l, total = 0
    if not L.direct_on:
        return False
    for l in range(nlist):
        total = total + L.sizes[l]
    return excess_of(L, 2 * nprobe * total // max(nlist, 1),
                     nprobe) <= TABLE_ALONE * L.ksub * L.d


cdef void scan_lists_direct(const Lists* L, const float* x, const int64_t* probes,
                            const float* coarse, Py_ssize_t p0, Py_ssize_t p1,
                            float* r, float* hd, int64_t* hi, Py_ssize_t k,
                            const Selector* sel, Reservoir* res) noexcept nogil:
    """scan_lists with each code's distance computed from the codebook (L2:
    ||r - y||^2 with r = x - c by residual, else x; inner product: <x, c> +
    <x, y>, the first being coarse[p]).  r: room for d floats."""
    cdef float dist[SCAN_BLOCK]
    cdef Py_ssize_t p, l, j, b0, nb, n
    cdef const float* c
    cdef const float* rp
    cdef const uint8_t* codes
    cdef const int64_t* ids
    for p in range(p0, p1):
        l = probes[p]
        if l < 0 or L.sizes[l] == 0:
            continue
        rp = x
        if L.l2 and L.by_residual:
            c = L.centroids + l * L.d
            for j in range(L.d):
                r[j] = x[j] - c[j]
            rp = r
        codes = <const uint8_t*><uintptr_t>L.code_ptrs[l]
        ids = <const int64_t*><uintptr_t>L.id_ptrs[l]
        n = L.sizes[l]
        b0 = 0
        while b0 < n:
            nb = min(<Py_ssize_t>SCAN_BLOCK, n - b0)
            L.direct(rp, L.cents, codes + b0 * L.code_size, nb, L.M, L.dsub, L.l2,
                     0 if L.l2 else coarse[p], dist)
            offer_block(dist, nb, ids + b0, 0, hd, hi, k, sel, res)
            b0 = b0 + nb


cdef void scan_lists(const Lists* L, const float* qtab, const int64_t* probes,
                     const float* coarse, Py_ssize_t p0, Py_ssize_t p1, float* ltab,
                     float* hd, int64_t* hi, Py_ssize_t k,
                     const Selector* sel, Reservoir* res) noexcept nogil:
    """Push the codes of lists probes[p0:p1] (-1: none) into the heap (hd, hi),
    or into `res` when not NULL (large k), given the query's table qtab;
    coarse[p] is list probes[p]'s coarse term and ltab room for one list table
    (M * ksub floats)."""
    cdef Py_ssize_t p, l
    cdef const float* tab
    cdef const float* tab2
    cdef const float* terms
    for p in range(p0, p1):
        l = probes[p]
        if l < 0 or L.sizes[l] == 0:
            continue
        tab2 = NULL
        terms = NULL
        if L.term_ptrs != NULL:
            tab = qtab  # + each code's list term
            terms = <const float*><uintptr_t>L.term_ptrs[l]
        elif L.l2 and L.precomp != NULL and L.nbits == 8 and L.sizes[l] < SHORT_LIST:
            tab = qtab  # scanned as query table + list term, read side by side
            tab2 = L.precomp + l * L.pstride
        else:
            tab = list_table(qtab, L.precomp + l * L.pstride if L.precomp != NULL else NULL,
                             L.ynorm, L.centroids + l * L.d, L.cbt, L.M, L.dsub, L.ksub,
                             L.l2, ltab)
        scan_codes(tab, tab2, <const uint8_t*><uintptr_t>L.code_ptrs[l],
                   <const int64_t*><uintptr_t>L.id_ptrs[l], 0, L.sizes[l],
                   L.code_size, L.M, L.nbits, L.ksub, coarse[p], hd, hi, k, sel, terms,
                   res)


def ivfpq_search(x,            # IN  (nq, d) float32 queries
                 probes,       # IN  (nq, nprobe) int64 list numbers, -1 = none
                 coarse,       # IN  (nq, nprobe) float32 ||x - c||^2 or -<x, c>
                 cbt,          # IN  (M, dsub, ksub) float32 transposed codebook
                 ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
                 precomp,      # IN  (nlist or 1, M, ksub) float32 P_l (1: shared), or (0, M, ksub)
                 centroids,    # IN  (nlist, d) float32 coarse centroids
                 code_ptrs,    # IN  (nlist,) uint64 address of each list's codes
                 id_ptrs,      # IN  (nlist,) uint64 address of each list's ids
                 sizes,        # IN  (nlist,) int64 entries per list
                 Py_ssize_t code_size, int nbits, bint l2, Py_ssize_t nseg,
                 sel,          # IN  id filter (selectors.py)
                 D,            # OUT (nq * nseg, k) float32
                 I,            # OUT (nq * nseg, k) int64
                 cents=None,   # IN  (M, ksub, dsub) float32 codebook: with direct,
                 bint by_residual=True,  # queries whose lists hold few codes are
                 bint direct=False,      # scored without tables (use_direct), with
                 int simd=2,             # SIMD up to this level (tests: 0 portable)
                 terms=None):  # IN  (nlist,) uint64 address of each list's code terms
    """Query q's probe segment s fills heap row q * nseg + s.

    With nseg == 1 the rows come out sorted; otherwise they are heaps for
    merge_heaps.  Every shape and every list number is checked here, with the
    GIL held; the list arrays behind code_ptrs/id_ptrs are the caller's
    (ArrayInvertedLists keeps them in step with sizes).  Scratch space:
    work_columns(M, ksub) floats a thread.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const float* cp = <const float*>checked(coarse, F32, 2, False, "coarse")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Lists L = checked_lists(cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs,
                                 sizes, d, code_size, nbits, l2, cents, by_residual,
                                 direct, simd, terms)
    cdef Py_ssize_t nlist = dim(sizes, 0), k = dim(D, 1), mk = L.M * L.ksub
    cdef Py_ssize_t wcols, rows = nq * nseg
    check_probes(probes, coarse, nq, nlist)
    expect(nseg >= 1 and dim(D, 0) == rows and dim(I, 0) == rows
           and dim(I, 1) == k and k >= 1, "heap shapes")
    cdef Py_ssize_t w, q, s, i, q0, nqb
    cdef int nt = omp_get_max_threads()
    cdef Selector selector = make_selector(sel)
    # Work item w: queries q0 .. q0 + nqb - 1 (a block whose tables are built
    # together, reading the codebook once), probe segment w % nseg.  Blocks
    # shrink so that every thread still gets several items.
    cdef Py_ssize_t qb = 1 if nseg > 1 else max(1, min(max_block(L.ksub), nq // (4 * nt)))
    cdef Py_ssize_t n_items = (nq + qb - 1) // qb * nseg
    cdef float* qtab
    cdef float* hd
    cdef int64_t* hi
    cdef bint tables
    cdef Py_ssize_t excess
    cdef void* block
    cdef Reservoir* res
    cdef Py_ssize_t roff = round16(work_columns(L.M, L.ksub))
    cdef float* wp = thread_rows(&block, nt, roff + row_reservoir_columns(k), &wcols)
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q0 = (w // nseg) * qb
        nqb = min(qb, nq - q0)
        s = w % nseg
        qtab = wp + threadid() * wcols
        # The block's tables are built when they save more than they cost;
        # then each query uses them unless direct scoring still pays.
        tables = not L.direct_on
        if not tables:
            excess = 0
            for i in range(nqb):
                excess = excess + max(0, direct_excess(&L, pp + (q0 + i) * nprobe,
                                                       nprobe))
            tables = excess > (TABLE_BLOCK if nqb > 1 else TABLE_ALONE) * nqb * L.ksub * d
        if tables:
            memset(qtab, 0, nqb * mk * sizeof(float))
            pqfast_dot_tables(xp + q0 * d, d, nqb, L.cbt, L.M, L.dsub, L.ksub,
                              -2.0 if l2 else -1.0, qtab, mk)
        for i in range(nqb):
            q = q0 + i
            hd = Dp + (q * nseg + s) * k
            hi = Ip + (q * nseg + s) * k
            heap_init(hd, hi, k)
            res = row_reservoir(qtab + roff, k)
            if not tables or (L.direct_on
                              and direct_excess(&L, pp + q * nprobe, nprobe) <= 0):
                scan_lists_direct(&L, xp + q * d, pp + q * nprobe, cp + q * nprobe,
                                  nprobe * s // nseg, nprobe * (s + 1) // nseg,
                                  qtab + qb * mk, hd, hi, k, &selector, res)
            else:
                scan_lists(&L, qtab + i * mk, pp + q * nprobe, cp + q * nprobe,
                           nprobe * s // nseg, nprobe * (s + 1) // nseg, qtab + qb * mk,
                           hd, hi, k, &selector, res)
            finish_row(res, hd, hi, k, nseg == 1)
    free(block)


cdef void flat_query(const Lists* L, const float* x, const float* cnorms,
                     Py_ssize_t nlist, Py_ssize_t d, bint l2, Py_ssize_t nprobe,
                     float* w, int64_t* pi, float* hd, int64_t* hi, Py_ssize_t k,
                     const Selector* sel) noexcept nogil:
    """One query of ivfpq_search_flat: its coarse search, then the scan of its
    probed lists into the sorted row hd, hi.  w: the thread's scratch row
    (flat_columns); pi: room for nprobe list numbers."""
    cdef Py_ssize_t mk = L.M * L.ksub
    cdef float* pd = w + 2 * mk + nearest_columns(nlist, nprobe)
    cdef Reservoir* res = row_reservoir(pd + round16(nprobe), k)
    nearest_lists(x, L.centroids, cnorms, nlist, d, l2, w + 2 * mk, pd, pi, nprobe)
    heap_init(hd, hi, k)
    if use_direct(L, pi, nprobe):
        scan_lists_direct(L, x, pi, pd, 0, nprobe, w + mk, hd, hi, k, sel, res)
    else:
        memset(w, 0, mk * sizeof(float))
        pqfast_dot_tables(x, d, 1, L.cbt, L.M, L.dsub, L.ksub, -2.0 if l2 else -1.0,
                          w, mk)
        scan_lists(L, w, pi, pd, 0, nprobe, w + mk, hd, hi, k, sel, res)
    finish_row(res, hd, hi, k, True)


cdef inline Py_ssize_t flat_columns(Py_ssize_t mk, Py_ssize_t nlist, Py_ssize_t nprobe,
                                    Py_ssize_t k) noexcept nogil:
    """A thread's scratch floats in ivfpq_search_flat: the query table, a list
    table, the coarse distances (nearest_lists), the probes' coarse terms and,
    for large k, a Reservoir."""
    return (2 * mk + nearest_columns(nlist, nprobe) + round16(nprobe)
            + row_reservoir_columns(k))


def ivfpq_search_flat(x,          # IN  (nq, d) float32 queries, nq small
                      Py_ssize_t nprobe,
                      cnorms,     # IN  (nlist,) ||c||^2 of the coarse centroids
                      cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs, sizes,
                      Py_ssize_t code_size, int nbits, bint l2,
                      sel,        # IN  id filter (kind, lo, hi, sorted ids)
                      D,          # OUT (nq, k) float32, sorted
                      I,          # OUT (nq, k) int64
                      cents=None, bint direct=False,  # as for ivfpq_search
                      terms=None):
    """ivfpq_search for a flat coarse quantizer of the index's metric, whose
    centroids are `centroids`: each query's coarse search and list scan in one
    call (no per-call arrays for the probes; for one query, most of the time
    was outside the kernels).  Arguments as for ivfpq_search; the scratch
    space is allocated here, per call, so concurrent calls share nothing.
    Unlike the other kernels, D comes out in faiss's form, inner products
    positive (a one-query search then needs no numpy call after it)."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cnp = <const float*>checked(cnorms, F32, 1, False, "cnorms")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Lists L = checked_lists(cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs,
                                 sizes, d, code_size, nbits, l2, cents, True,
                                 direct, 2, terms)
    cdef Py_ssize_t nlist = dim(sizes, 0), mk = L.M * L.ksub
    expect(dim(cnorms, 0) == nlist, "centroid norms")
    expect(1 <= nprobe <= nlist, "nprobe")
    expect(dim(D, 0) == nq and dim(I, 0) == nq and dim(I, 1) == k and k >= 1,
           "heap shapes")
    cdef Selector selector = make_selector(sel)
    cdef int nt = team_size(nq, 1, 0)
    # Per thread: flat_columns floats, and the probes' list numbers (pip)
    cdef Py_ssize_t wcols, ncols = nearest_columns(nlist, nprobe)
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, flat_columns(mk, nlist, nprobe, k), &wcols)
    cdef int64_t* pip = <int64_t*>malloc(nt * nprobe * sizeof(int64_t))
    if pip == NULL:
        free(block)
        raise MemoryError()
    cdef Py_ssize_t q, t
    cdef float* w
    cdef float* pd
    cdef int64_t* pi
    cdef Reservoir* res
    # One query and two or more threads: the coarse search and the query
    # table (about 6 and 4 us at d=384, nlist 379) run on two threads at once,
    # then the scan on this one.  A third faster when the second core is
    # free; when another process holds it, the wait for the second thread can
    # last a scheduler time slice (measured on 2 cores with one busy process:
    # median 16 -> 11 us, but mean 16 -> 22 us).  Not when the table will
    # most likely go unused (surely_direct).
    if (nq == 1 and omp_get_max_threads() >= 2
            and not surely_direct(&L, nlist, nprobe)):
        w, pd, pi = wp, wp + 2 * mk + ncols, pip
        for t in prange(2, nogil=True, schedule="static", num_threads=2):
            if t == 0:
                nearest_lists(xp, L.centroids, cnp, nlist, d, l2, w + 2 * mk, pd, pi,
                              nprobe)
            else:
                memset(w, 0, mk * sizeof(float))
                pqfast_dot_tables(xp, d, 1, L.cbt, L.M, L.dsub, L.ksub,
                                  -2.0 if l2 else -1.0, w, mk)
        with nogil:
            heap_init(Dp, Ip, k)
            res = row_reservoir(pd + round16(nprobe), k)
            # The table, built meanwhile, is not counted as paid for: at 2
            # threads, IP M=32 nprobe 1 took 1.6x longer with it than direct.
            if use_direct(&L, pi, nprobe):
                scan_lists_direct(&L, xp, pi, pd, 0, nprobe, w + mk, Dp, Ip, k,
                                  &selector, res)
            else:
                scan_lists(&L, w, pi, pd, 0, nprobe, w + mk, Dp, Ip, k, &selector, res)
            finish_row(res, Dp, Ip, k, True)
            if not l2:
                pqfast_negate(Dp, k)
        free(block)
        free(pip)
        return
    if nt == 1:  # no OpenMP region for a team of one (see team_size)
        with nogil:
            for q in range(nq):
                flat_query(&L, xp + q * d, cnp, nlist, d, l2, nprobe, wp, pip,
                           Dp + q * k, Ip + q * k, k, &selector)
    else:
        for q in prange(nq, nogil=True, schedule="dynamic", num_threads=nt):
            flat_query(&L, xp + q * d, cnp, nlist, d, l2, nprobe,
                       wp + threadid() * wcols, pip + threadid() * nprobe,
                       Dp + q * k, Ip + q * k, k, &selector)
    if not l2:
        pqfast_negate(Dp, nq * k)
    free(block)
    free(pip)


def ivfflat_search(x,          # IN  (nq, d) float32 queries
                   probes,     # IN  (nq, nprobe) int64 list numbers, -1 = none
                   code_ptrs,  # IN  (nlist,) uint64 address of each list's vectors
                   id_ptrs,    # IN  (nlist,) uint64 address of each list's ids
                   sizes,      # IN  (nlist,) int64 entries per list
                   bint l2, Py_ssize_t nseg,
                   sel,        # IN  id filter (kind, lo, hi, sorted ids)
                   D,          # OUT (nq * nseg, k) float32
                   I):         # OUT (nq * nseg, k) int64
    """IVFFlat: exact distances to the stored vectors of the probed lists."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False,
                                                          "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Py_ssize_t nlist = dim(sizes, 0), k = dim(D, 1), n_items = nq * nseg
    cdef Py_ssize_t wcols
    expect(dim(code_ptrs, 0) == nlist and dim(id_ptrs, 0) == nlist, "list arrays")
    check_probes(probes, None, nq, nlist)
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1, "shapes")
    cdef Py_ssize_t w, q, s, p, l, b0, nb, j
    cdef int nt = omp_get_max_threads()
    cdef Selector selector = make_selector(sel)
    cdef const float* vecs
    cdef const int64_t* ids
    cdef float* dist
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, 256, &wcols)
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    chunksize=heap_chunk(n_items, nt),
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        dist = wp + threadid() * wcols
        heap_init(Dp + w * k, Ip + w * k, k)
        for p in range(nprobe * s // nseg, nprobe * (s + 1) // nseg):
            l = pp[q * nprobe + p]
            if l < 0 or szp[l] == 0:
                continue
            vecs = <const float*><uintptr_t>cptr[l]
            ids = <const int64_t*><uintptr_t>iptr[l]
            b0 = 0
            while b0 < szp[l]:
                nb = min(<Py_ssize_t>256, szp[l] - b0)
                if l2:
                    pqfast_l2sq_rows(xp + q * d, vecs + b0 * d, nb, d, dist)
                else:
                    pqfast_dots(xp + q * d, vecs + b0 * d, nb, d, dist)
                    pqfast_negate(dist, nb)
                if pqfast_min(dist, nb) <= Dp[w * k]:
                    for j in range(nb):
                        if (pair_less(dist[j], ids[b0 + j], Dp[w * k], Ip[w * k])
                                and sel_allows(&selector, ids[b0 + j])):
                            heap_sift_down(Dp + w * k, Ip + w * k, k, 0, dist[j],
                                           ids[b0 + j])
                b0 = b0 + nb
        if nseg == 1:
            heap_sort(Dp + w * k, Ip + w * k, k)
    free(block)


def append_entries(list_nos,   # IN  (n,) int64 list of each entry
                   codes,      # IN  (n, code_size) uint8 flat codes
                   ids,        # IN  (n,) int64 ids
                   code_ptrs,  # IN  (nlist,) uint64 address of each list's code storage
                   id_ptrs,    # IN  (nlist,) uint64 address of each list's id storage, 0: none
                   sizes,      # IN  (nlist,) int64 entries stored in each list
                   capacity,   # IN  (nlist,) int64 entries each list's storage can hold
                   Py_ssize_t M):  # 0: flat rows; > 0: 4-bit codes of M sub-codes in blocks
    """Write entry j to list l = list_nos[j], slot sizes[l] + (entries of l
    before j): a flat row of code_size bytes, or (M > 0) its M sub-codes in
    the fast-scan blocks of fastscan.h (32 slots a block, the unused slots of
    a list's last block zeroed).  The stored entries are not touched and the
    sizes not changed: the caller counts the new entries in afterwards."""
    cdef const int64_t* lp = <const int64_t*>checked(list_nos, I64, 1, False, "list_nos")
    cdef const uint8_t* cp = <const uint8_t*>checked(codes, U8, 2, False, "codes")
    cdef const int64_t* ip = <const int64_t*>checked(ids, I64, 1, False, "ids")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False, "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef const int64_t* capp = <const int64_t*>checked(capacity, I64, 1, False, "capacity")
    cdef Py_ssize_t n = dim(list_nos, 0), cs = dim(codes, 1), nlist = dim(sizes, 0)
    expect(dim(codes, 0) == n and dim(ids, 0) == n and dim(code_ptrs, 0) == nlist
           and dim(id_ptrs, 0) == nlist and dim(capacity, 0) == nlist, "shapes")
    expect(M == 0 or cs == (M + 1) // 2, "code size of 4-bit codes")
    cdef int64_t* pos = <int64_t*>malloc(max(nlist, 1) * sizeof(int64_t))
    if pos == NULL:
        raise MemoryError()
    cdef Py_ssize_t j, l, p, m, end, bb = M * 16
    cdef uint8_t* byte
    cdef uint8_t sub
    try:
        memset(pos, 0, nlist * sizeof(int64_t))
        for j in range(n):
            expect(0 <= lp[j] < nlist, "list numbers outside [0, nlist)")
            pos[lp[j]] += 1
        for l in range(nlist):
            expect(pos[l] == 0 or (szp[l] >= 0 and szp[l] + pos[l] <= capp[l]
                                   and cptr[l] != 0), "list capacity")
        with nogil:
            for l in range(nlist):
                if M and pos[l]:  # zero the slots from sizes[l] to the end of the last block
                    end = (szp[l] + pos[l] + 31) // 32 * 32
                    for p in range(szp[l], end):
                        for m in range(M):
                            byte = <uint8_t*><uintptr_t>cptr[l] + p // 32 * bb + m * 16 + p % 16
                            byte[0] = byte[0] & (0xF0 if p % 32 < 16 else 0x0F)
                pos[l] = szp[l]
            for j in range(n):
                l = lp[j]
                p = pos[l]
                pos[l] = p + 1
                if iptr[l] != 0:
                    (<int64_t*><uintptr_t>iptr[l])[p] = ip[j]
                if M == 0:
                    memcpy(<uint8_t*><uintptr_t>cptr[l] + p * cs, cp + j * cs, cs)
                    continue
                for m in range(M):
                    sub = (cp[j * cs + m // 2] >> (4 * (m % 2))) & 15
                    byte = <uint8_t*><uintptr_t>cptr[l] + p // 32 * bb + m * 16 + p % 16
                    byte[0] = byte[0] | (sub if p % 32 < 16 else sub << 4)
    finally:
        free(pos)
