"""IVF-PQ search kernel: scan the probed inverted lists of each query.

For L2 by residual, with coarse centroid c and PQ reconstruction y of the
residual (Jegou et al., "Product quantization for nearest neighbor search",
TPAMI 2011, section IV.A):

    ||x - c - y||^2 = ||x - c||^2 + sum_m (||y_m||^2 + 2<c_m, y_m>) - 2 sum_m <x_m, y_m>
                    = coarse term + list table P_l            + query table T_q

T_q is built once per query; P_l is read from a precomputed (nlist, M, ksub)
table when the index holds one, else built per list.  Inner product needs no
list table: <x, c + y> = <x, c> + sum_m <x_m, y_m>.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint64_t, uintptr_t
from libc.string cimport memset

from pqfast._kernels._arrays cimport F32, I64, U64, checked, dim, expect, make_selector
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
    pqfast_dot_table,
    scan_codes,
    sqnorm,
    team_size,
)



cdef struct Lists:
    # An IndexIVFPQ's codebook and inverted lists, as ivfpq_search receives them.
    const float* cbt           # (M, dsub, ksub) transposed codebook
    const float* ynorm         # (M, ksub) ||y_mj||^2
    const float* precomp       # (nlist, M, ksub) list terms, or NULL
    const float* centroids     # (nlist, d) coarse centroids
    const uint64_t* code_ptrs  # (nlist,) address of each list's codes
    const uint64_t* id_ptrs    # (nlist,) address of each list's ids
    const int64_t* sizes       # (nlist,) entries per list
    Py_ssize_t M, dsub, ksub, d, code_size
    int nbits
    bint l2


cdef void scan_lists(const Lists* L, const float* x, const int64_t* probes,
                     const float* coarse, Py_ssize_t p0, Py_ssize_t p1, float* work,
                     float* hd, int64_t* hi, Py_ssize_t k,
                     const Selector* sel) noexcept nogil:
    """Push the codes of lists probes[p0:p1] (-1: none) into the heap (hd, hi),
    coarse[p] being list probes[p]'s coarse term; work holds 2 M ksub floats."""
    cdef Py_ssize_t p, l, mk = L.M * L.ksub
    cdef float* qtab = work
    cdef const float* tab
    memset(qtab, 0, mk * sizeof(float))
    pqfast_dot_table(x, L.cbt, L.M, L.dsub, L.ksub, -2.0 if L.l2 else -1.0, qtab)
    for p in range(p0, p1):
        l = probes[p]
        if l < 0 or L.sizes[l] == 0:
            continue
        tab = list_table(qtab, L.precomp + l * mk if L.precomp != NULL else NULL,
                         L.ynorm, L.centroids + l * L.d, L.cbt, L.M, L.dsub, L.ksub,
                         L.l2, work + mk)
        scan_codes(tab, <const uint8_t*><uintptr_t>L.code_ptrs[l],
                   <const int64_t*><uintptr_t>L.id_ptrs[l], 0, L.sizes[l],
                   L.code_size, L.M, L.nbits, L.ksub, coarse[p], hd, hi, k, sel)


def ivfpq_search(x,            # IN  (nq, d) float32 queries
                 probes,       # IN  (nq, nprobe) int64 list numbers, -1 = none
                 coarse,       # IN  (nq, nprobe) float32 ||x - c||^2 or -<x, c>
                 cbt,          # IN  (M, dsub, ksub) float32 transposed codebook
                 ynorm,        # IN  (M, ksub) float32 ||y_mj||^2
                 precomp,      # IN  (nlist, M, ksub) float32 P_l, or (0, M, ksub)
                 centroids,    # IN  (nlist, d) float32 coarse centroids
                 code_ptrs,    # IN  (nlist,) uint64 address of each list's codes
                 id_ptrs,      # IN  (nlist,) uint64 address of each list's ids
                 sizes,        # IN  (nlist,) int64 entries per list
                 Py_ssize_t code_size, int nbits, bint l2, Py_ssize_t nseg,
                 sel,          # IN  id filter (kind, lo, hi, sorted ids)
                 work,         # SCRATCH (n_threads, >= 2 * M * ksub) float32
                 D,            # OUT (nq * nseg, k) float32
                 I):           # OUT (nq * nseg, k) int64
    """Work item w scans query w // nseg's probe segment w % nseg into heap row w.

    With nseg == 1 the rows come out sorted; otherwise they are heaps for
    merge_heaps.  Every shape and every list number is checked here, with the
    GIL held; the list arrays behind code_ptrs/id_ptrs are the caller's
    (ArrayInvertedLists keeps them in step with sizes).
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const float* cp = <const float*>checked(coarse, F32, 2, False, "coarse")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const float* prep = <const float*>checked(precomp, F32, 3, False, "precomp")
    cdef const float* centp = <const float*>checked(centroids, F32, 2, False, "centroids")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False, "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t nlist = dim(sizes, 0), k = dim(D, 1), mk = M * ksub
    cdef Py_ssize_t wcols = dim(work, 1), n_items = nq * nseg
    cdef bint have_precomp = dim(precomp, 0) > 0
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(ksub == (1 << nbits) and code_size == (M * nbits + 7) // 8, "nbits")
    expect(dim(probes, 0) == nq and dim(coarse, 0) == nq and dim(coarse, 1) == nprobe,
           "probes and coarse")
    expect(not have_precomp or (dim(precomp, 0) == nlist and dim(precomp, 1) == M
                                and dim(precomp, 2) == ksub), "precomputed table")
    expect(dim(centroids, 0) == nlist and dim(centroids, 1) == d, "centroids")
    expect(dim(code_ptrs, 0) == nlist and dim(id_ptrs, 0) == nlist, "list arrays")
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1, "heap shapes")
    expect(wcols >= 2 * mk, "work")
    cdef Py_ssize_t w, q, s
    for w in range(nq * nprobe):
        expect(-1 <= pp[w] < nlist, "probes hold list numbers outside [0, nlist)")
    cdef int nt = <int>dim(work, 0)
    cdef Selector selector = make_selector(sel)
    cdef Lists lists
    lists.cbt, lists.ynorm, lists.centroids = cbtp, ynp, centp
    lists.precomp = prep if have_precomp else NULL
    lists.code_ptrs, lists.id_ptrs, lists.sizes = cptr, iptr, szp
    lists.M, lists.dsub, lists.ksub, lists.d = M, dsub, ksub, d
    lists.code_size, lists.nbits, lists.l2 = code_size, nbits, l2
    cdef float* qtab
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        qtab = wp + threadid() * wcols
        heap_init(Dp + w * k, Ip + w * k, k)
        scan_lists(&lists, xp + q * d, pp + q * nprobe, cp + q * nprobe,
                   nprobe * s // nseg, nprobe * (s + 1) // nseg, qtab,
                   Dp + w * k, Ip + w * k, k, &selector)
        if nseg == 1:
            heap_sort(Dp + w * k, Ip + w * k, k)


cdef void nearest_lists(const float* x, const float* cents, const float* cnorms,
                        Py_ssize_t nlist, Py_ssize_t d, bint l2, float* dist,
                        float* hd, int64_t* hi, Py_ssize_t nprobe) noexcept nogil:
    """The nprobe nearest coarse centroids of x, sorted by (term, list number):
    hi their list numbers, hd their coarse terms (||x - c||^2, or -<x, c>).

    The same arithmetic as the flat quantizer's search of a few queries
    (_topk.knn: pqfast_dots, then pqfast_l2_from_dots), so the same probes.
    dist holds nlist floats."""
    cdef Py_ssize_t j
    pqfast_dots(x, cents, nlist, d, dist)
    if l2:
        pqfast_l2_from_dots(dist, cnorms, sqnorm(x, d), nlist)
    else:
        pqfast_negate(dist, nlist)
    heap_init(hd, hi, nprobe)
    for j in range(nlist):
        if pair_less(dist[j], j, hd[0], hi[0]):
            heap_sift_down(hd, hi, nprobe, 0, dist[j], j)
    heap_sort(hd, hi, nprobe)


def ivfpq_search_flat(x,          # IN  (nq, d) float32 queries, nq small
                      Py_ssize_t nprobe,
                      cnorms,     # IN  (nlist,) ||c||^2 of the coarse centroids
                      cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs, sizes,
                      Py_ssize_t code_size, int nbits, bint l2,
                      sel,        # IN  id filter (kind, lo, hi, sorted ids)
                      work,       # SCRATCH (n_threads, >= 2 * M * ksub + 2 * nlist) f32
                      probe_ids,  # SCRATCH (n_threads, >= nprobe) int64
                      D,          # OUT (nq, k) float32, sorted
                      I):         # OUT (nq, k) int64
    """ivfpq_search for a flat coarse quantizer of the index's metric, whose
    centroids are `centroids`: each query's coarse search and list scan in one
    call (no per-call arrays for the probes; for one query, most of the time
    was outside the kernels).  Arguments as for ivfpq_search."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cnp = <const float*>checked(cnorms, F32, 1, False, "cnorms")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const float* prep = <const float*>checked(precomp, F32, 3, False, "precomp")
    cdef const float* centp = <const float*>checked(centroids, F32, 2, False, "centroids")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False, "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef int64_t* pip = <int64_t*>checked(probe_ids, I64, 2, True, "probe_ids")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), k = dim(D, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t nlist = dim(sizes, 0), mk = M * ksub, wcols = dim(work, 1)
    cdef bint have_precomp = dim(precomp, 0) > 0
    expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub, "codebook")
    expect(ksub == (1 << nbits) and code_size == (M * nbits + 7) // 8, "nbits")
    expect(not have_precomp or (dim(precomp, 0) == nlist and dim(precomp, 1) == M
                                and dim(precomp, 2) == ksub), "precomputed table")
    expect(dim(centroids, 0) == nlist and dim(centroids, 1) == d
           and dim(cnorms, 0) == nlist, "centroids")
    expect(dim(code_ptrs, 0) == nlist and dim(id_ptrs, 0) == nlist, "list arrays")
    expect(1 <= nprobe <= nlist and dim(probe_ids, 1) >= nprobe
           and dim(probe_ids, 0) == dim(work, 0), "nprobe")
    expect(dim(D, 0) == nq and dim(I, 0) == nq and dim(I, 1) == k and k >= 1,
           "heap shapes")
    expect(wcols >= 2 * mk + 2 * nlist, "work")
    cdef int nt = <int>dim(work, 0)
    cdef Selector selector = make_selector(sel)
    cdef Lists lists
    lists.cbt, lists.ynorm, lists.centroids = cbtp, ynp, centp
    lists.precomp = prep if have_precomp else NULL
    lists.code_ptrs, lists.id_ptrs, lists.sizes = cptr, iptr, szp
    lists.M, lists.dsub, lists.ksub, lists.d = M, dsub, ksub, d
    lists.code_size, lists.nbits, lists.l2 = code_size, nbits, l2
    cdef Py_ssize_t q, pcols = dim(probe_ids, 1)
    cdef float* w
    cdef float* pd
    cdef int64_t* pi
    for q in prange(nq, nogil=True, schedule="dynamic",
                    num_threads=team_size(nq, 1, nt)):
        w = wp + threadid() * wcols
        pd = w + 2 * mk + nlist
        pi = pip + threadid() * pcols
        nearest_lists(xp + q * d, centp, cnp, nlist, d, l2, w + 2 * mk, pd, pi, nprobe)
        heap_init(Dp + q * k, Ip + q * k, k)
        scan_lists(&lists, xp + q * d, pi, pd, 0, nprobe, w, Dp + q * k, Ip + q * k,
                   k, &selector)
        heap_sort(Dp + q * k, Ip + q * k, k)


def ivfflat_search(x,          # IN  (nq, d) float32 queries
                   probes,     # IN  (nq, nprobe) int64 list numbers, -1 = none
                   code_ptrs,  # IN  (nlist,) uint64 address of each list's vectors
                   id_ptrs,    # IN  (nlist,) uint64 address of each list's ids
                   sizes,      # IN  (nlist,) int64 entries per list
                   bint l2, Py_ssize_t nseg,
                   sel,        # IN  id filter (kind, lo, hi, sorted ids)
                   work,       # SCRATCH (n_threads, >= 256) float32
                   D,          # OUT (nq * nseg, k) float32
                   I):         # OUT (nq * nseg, k) int64
    """IVFFlat: exact distances to the stored vectors of the probed lists."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False,
                                                          "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef float* wp = <float*>checked(work, F32, 2, True, "work")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Py_ssize_t nlist = dim(sizes, 0), k = dim(D, 1), n_items = nq * nseg
    cdef Py_ssize_t wcols = dim(work, 1)
    expect(dim(probes, 0) == nq and dim(code_ptrs, 0) == nlist
           and dim(id_ptrs, 0) == nlist, "list arrays")
    expect(nseg >= 1 and dim(D, 0) == n_items and dim(I, 0) == n_items
           and dim(I, 1) == k and k >= 1 and wcols >= 256, "shapes")
    cdef Py_ssize_t w, q, s, p, l, b0, nb, j
    for w in range(nq * nprobe):
        expect(-1 <= pp[w] < nlist, "probes hold list numbers outside [0, nlist)")
    cdef int nt = <int>dim(work, 0)
    cdef Selector selector = make_selector(sel)
    cdef const float* vecs
    cdef const int64_t* ids
    cdef float* dist
    for w in prange(n_items, nogil=True, schedule="dynamic",
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
