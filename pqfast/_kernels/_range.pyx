"""Range search kernel: every stored vector closer than a threshold.

One kernel serves every index.  The database is seen as lists of rows, as in
an IVF index; an exhaustive index passes its storage cut into segments, each a
"list" that every query probes (so a single query still uses every thread).
Rows are PQ codes (scored through lookup tables, as in _ivf.pyx) or, when the
codebook is empty, float32 vectors (scored exactly).

Work item w = (query w // nseg, probe segment w % nseg) appends its hits to its
own growable buffer; the buffers are then concatenated in item order, so the
output does not depend on the thread count.  Distances are in "smaller is
better" space: squared L2, or negated inner products.
"""

cimport numpy as cnp
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset

from pqfast._kernels._arrays cimport (
    F32,
    I64,
    U64,
    check_probes,
    checked,
    dim,
    expect,
    list_term_stride,
    make_selector,
)
from pqfast._kernels._common cimport (
    SCAN_BLOCK,
    Selector,
    adc_block,
    list_table,
    pqfast_dot_tables,
    pqfast_dots,
    pqfast_l2sq_rows,
    pqfast_min,
    pqfast_negate,
    sel_allows,
    omp_get_max_threads,
    team_size,
    thread_rows,
)

import numpy as np

cnp.import_array()



cdef struct Hits:
    float* d
    int64_t* i
    Py_ssize_t n
    Py_ssize_t cap     # -1 once an allocation has failed


cdef bint hits_push(Hits* h, float d, int64_t i) noexcept nogil:
    """Append (d, i), doubling the buffers when full; False if out of memory."""
    cdef Py_ssize_t cap
    cdef float* nd
    cdef int64_t* ni
    if h.cap < 0:
        return False
    if h.n == h.cap:
        cap = 2 * h.cap if h.cap else 64
        nd = <float*>realloc(h.d, cap * sizeof(float))
        if nd != NULL:
            h.d = nd
        ni = <int64_t*>realloc(h.i, cap * sizeof(int64_t))
        if ni != NULL:
            h.i = ni
        if nd == NULL or ni == NULL:
            h.cap = -1
            return False
        h.cap = cap
    h.d[h.n] = d
    h.i[h.n] = i
    h.n = h.n + 1
    return True


cdef inline void push_block(Hits* h, const float* dist, Py_ssize_t nb,
                            const int64_t* ids, int64_t id0, float thr,
                            const Selector* sel) noexcept nogil:
    """Append the rows of a block with dist < thr that the selector allows."""
    cdef Py_ssize_t j
    cdef int64_t idx
    if pqfast_min(dist, nb) >= thr:
        return
    for j in range(nb):
        if dist[j] < thr:
            idx = ids[j] if ids != NULL else id0 + j
            if sel_allows(sel, idx):
                hits_push(h, dist[j], idx)


cdef object gather(Hits* hits, Py_ssize_t nq, Py_ssize_t nseg):
    """(lims, D, I) from the per-item buffers, which it frees."""
    cdef Py_ssize_t w, total = 0
    cdef bint failed = False
    for w in range(nq * nseg):
        total += hits[w].n
        failed = failed or hits[w].cap < 0
    lims = np.zeros(nq + 1, np.uint64)
    D = np.empty(0 if failed else total, np.float32)
    I = np.empty(0 if failed else total, np.int64)
    cdef uint64_t* lp = <uint64_t*>cnp.PyArray_DATA(lims)
    cdef float* Dp = <float*>cnp.PyArray_DATA(D)
    cdef int64_t* Ip = <int64_t*>cnp.PyArray_DATA(I)
    cdef Py_ssize_t at = 0
    for w in range(nq * nseg):
        if not failed:
            memcpy(Dp + at, hits[w].d, hits[w].n * sizeof(float))
            memcpy(Ip + at, hits[w].i, hits[w].n * sizeof(int64_t))
            at += hits[w].n
            lp[w // nseg + 1] = at
        free(hits[w].d)
        free(hits[w].i)
    if failed:
        raise MemoryError("range_search: out of memory for the results")
    return lims, D, I


def range_search(x,          # IN  (nq, d) float32 queries
                 probes,     # IN  (nq, nprobe) int64 list numbers, -1 = none
                 coarse,     # IN  (nq, nprobe) float32 term added per probe
                 cbt,        # IN  (M, dsub, ksub) float32 codebook, (0, 0, 0): floats
                 ynorm,      # IN  (M, ksub) float32 ||y_mj||^2
                 precomp,    # IN  (nlist or 1, M, ksub) float32 list terms, or (0, ., .)
                 centroids,  # IN  (nlist, d) float32 list centroids (PQ, L2)
                 code_ptrs,  # IN  (nlist,) uint64 address of each list's rows
                 id_ptrs,    # IN  (nlist,) uint64 address of each list's ids, or 0
                 id0s,       # IN  (nlist,) int64 id of row 0 where id_ptrs is 0
                 sizes,      # IN  (nlist,) int64 rows per list
                 Py_ssize_t code_size, int nbits, bint l2, Py_ssize_t nseg,
                 float thr,  # IN  keep distances < thr
                 sel,        # IN  id filter (selectors.py)
                 terms=None):  # IN  (nlist,) uint64 address of each list's code
                               #     terms (PQ, L2 by residual; see _ivf), or None
    """Return (lims, D, I): query q's hits are D/I[lims[q]:lims[q + 1]], in
    probe order then row order (not sorted by distance, as in faiss).
    Scratch space: 2 M ksub + SCAN_BLOCK floats a thread."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef const float* cp = <const float*>checked(coarse, F32, 2, False, "coarse")
    cdef const float* cbtp = <const float*>checked(cbt, F32, 3, False, "cbt")
    cdef const float* ynp = <const float*>checked(ynorm, F32, 2, False, "ynorm")
    cdef const float* prep = <const float*>checked(precomp, F32, 3, False, "precomp")
    cdef const float* centp = <const float*>checked(centroids, F32, 2, False, "centroids")
    cdef const uint64_t* cptr = <const uint64_t*>checked(code_ptrs, U64, 1, False, "code_ptrs")
    cdef const uint64_t* iptr = <const uint64_t*>checked(id_ptrs, U64, 1, False, "id_ptrs")
    cdef const int64_t* i0p = <const int64_t*>checked(id0s, I64, 1, False, "id0s")
    cdef const int64_t* szp = <const int64_t*>checked(sizes, I64, 1, False, "sizes")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nprobe = dim(probes, 1)
    cdef Py_ssize_t M = dim(cbt, 0), dsub = dim(cbt, 1), ksub = dim(cbt, 2)
    cdef Py_ssize_t nlist = dim(sizes, 0), mk = M * ksub, wcols
    cdef bint is_pq = M > 0, have_precomp = dim(precomp, 0) > 0
    cdef Py_ssize_t pstride = 0
    cdef const uint64_t* tptr = NULL
    if terms is not None:
        tptr = <const uint64_t*>checked(terms, U64, 1, False, "terms")
        expect(is_pq and l2 and dim(terms, 0) == nlist, "code terms")
    check_probes(probes, coarse, nq, nlist)
    expect(dim(code_ptrs, 0) == nlist and dim(id_ptrs, 0) == nlist
           and dim(id0s, 0) == nlist, "list arrays")
    if is_pq:
        expect(M * dsub == d and dim(ynorm, 0) == M and dim(ynorm, 1) == ksub,
               "codebook")
        expect(ksub == (1 << nbits) and code_size == (M * nbits + 7) // 8, "nbits")
        pstride = list_term_stride(precomp, nlist, M, ksub)
        expect(have_precomp or not l2 or (dim(centroids, 0) == nlist
                                          and dim(centroids, 1) == d), "centroids")
    else:
        expect(code_size == 4 * d, "rows of float32 vectors")
    expect(nseg >= 1, "nseg")
    cdef Py_ssize_t w, q, s, p, l, b0, nb, j
    cdef Selector selector = make_selector(sel)
    cdef int nt = omp_get_max_threads()
    cdef Py_ssize_t n_items = nq * nseg
    cdef void* block
    cdef float* wp = thread_rows(&block, nt, 2 * mk + SCAN_BLOCK, &wcols)
    cdef Hits* hits = <Hits*>realloc(NULL, max(n_items, 1) * sizeof(Hits))
    if hits == NULL:
        free(block)
        raise MemoryError("range_search: out of memory")
    memset(hits, 0, max(n_items, 1) * sizeof(Hits))
    cdef float* qtab
    cdef float* dist
    cdef const float* tab
    cdef const float* ct
    cdef const uint8_t* rows
    cdef const int64_t* ids
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q = w // nseg
        s = w % nseg
        qtab = wp + threadid() * wcols
        dist = qtab + 2 * mk
        if is_pq:
            memset(qtab, 0, mk * sizeof(float))
            pqfast_dot_tables(xp + q * d, d, 1, cbtp, M, dsub, ksub,
                              -2.0 if l2 else -1.0, qtab, mk)
        for p in range(nprobe * s // nseg, nprobe * (s + 1) // nseg):
            l = pp[q * nprobe + p]
            if l < 0 or szp[l] == 0:
                continue
            rows = <const uint8_t*><uintptr_t>cptr[l]
            ids = <const int64_t*><uintptr_t>iptr[l]
            if tptr != NULL:
                tab = qtab  # + each code's list term
                ct = <const float*><uintptr_t>tptr[l]
            elif is_pq:
                tab = list_table(qtab, prep + l * pstride if have_precomp else NULL, ynp,
                                 centp + l * d, cbtp, M, dsub, ksub, l2, qtab + mk)
            b0 = 0
            while b0 < szp[l]:
                nb = min(<Py_ssize_t>SCAN_BLOCK, szp[l] - b0)
                if is_pq:
                    adc_block(tab, NULL, rows + b0 * code_size, nb, code_size, M, nbits,
                              ksub, cp[q * nprobe + p], dist)
                    if tptr != NULL:
                        for j in range(nb):
                            dist[j] = dist[j] + ct[b0 + j]
                elif l2:
                    pqfast_l2sq_rows(xp + q * d, <const float*>rows + b0 * d, nb, d,
                                     dist)
                else:
                    pqfast_dots(xp + q * d, <const float*>rows + b0 * d, nb, d, dist)
                    pqfast_negate(dist, nb)
                push_block(&hits[w], dist, nb, ids + b0 if ids != NULL else NULL,
                           i0p[l] + b0, thr, &selector)
                b0 = b0 + nb
    free(block)
    try:
        return gather(hits, nq, nseg)
    finally:
        free(hits)
