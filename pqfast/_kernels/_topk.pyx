"""Top-k kernels: exact k-NN by blocked GEMM, heap sorting and merging."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy

from pqfast._kernels._arrays cimport F32, I64, checked, dim, expect, make_selector
from pqfast._kernels._common cimport (
    Selector,
    sel_allows,
    gemm_abt,
    heap_init,
    heap_merge,
    heap_sift_down,
    heap_sort,
    pqfast_l2_from_dots,
    pqfast_ctz64,
    pqfast_gemm_own,
    pqfast_lt_bits_fn,
    pqfast_lt_bits_impl,
    pqfast_min,
    pqfast_negate,
    SELECT_MIN_K,
    round16,
    select_columns,
    select_ids,
    select_in,
    sqnorm,
    omp_get_max_threads,
    team_size,
    thread_rows,
)


cdef void select_row(const float* dist, Py_ssize_t nbk, int64_t id0, Py_ssize_t k,
                     const Selector* sel, float* buf, float* hd, int64_t* hi,
                     bint sort) noexcept nogil:
    """The k smallest (distance, id) pairs of one row of a block (ids id0 +
    j, those `sel` allows) into the padded heap row (hd, hi), by
    select_in.  buf: select_columns(nbk, k) floats."""
    cdef int64_t* sid = select_ids(buf, nbk)
    cdef Py_ssize_t j, n = 0
    for j in range(nbk):
        if sel.kind == 0 or sel_allows(sel, id0 + j):
            buf[n] = dist[j]
            sid[n] = id0 + j
            n = n + 1
    select_in(buf, nbk, n, k, hd, hi, sort)


def knn(x,              # IN  (nq, d) float32 queries
        xb,             # IN  (nb, d) float32 base vectors
        xnorm,          # IN  (nb,) ||xb_j||^2, or (0,) for inner product
        bint l2,        # IN  squared L2, else negated inner product
        Py_ssize_t qb,  # IN  queries per GEMM block
        Py_ssize_t bb,  # IN  base rows per GEMM block
        Py_ssize_t nseg,  # IN  base segments per query block
        sel,            # IN  id filter (kind, lo, hi, sorted ids)
        D,              # OUT (nq * nseg, k) float32
        I,              # OUT (nq * nseg, k) int64
        int simd=2):    # IN  2: pqfast's GEMM where it runs (own_gemm), else BLAS
    """Exact k-NN by blocked GEMM, each block's distances pushed into heaps.

    Work item w covers query block w // nseg against base segment w % nseg;
    query i's heap for segment s is row i * nseg + s.  With nseg == 1 the rows
    come out sorted, otherwise they are heaps for merge_heaps.  BLAS runs
    single-threaded inside each OpenMP thread (scikit-learn's k-means scheme);
    where the CPU has AVX-512, pqfast's own GEMM (simd.h) runs instead.
    Scratch space: qb * bb floats a thread, and for large k select_row's.
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* xbp = <const float*>checked(xb, F32, 2, False, "xb")
    cdef const float* xn_p = <const float*>checked(xnorm, F32, 1, False, "xnorm")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t nq = dim(x, 0), d = dim(x, 1), nb = dim(xb, 0), k = dim(D, 1)
    cdef Py_ssize_t wcols
    expect(dim(xb, 1) == d, "xb and x differ in d")
    expect(qb >= 1 and bb >= 1 and nseg >= 1, "block sizes")
    expect(dim(D, 0) == nq * nseg and dim(I, 0) == nq * nseg and dim(I, 1) == k
           and k >= 1, "heap shapes")
    expect(not l2 or dim(xnorm, 0) == nb, "xnorm length")
    cdef Selector selector = make_selector(sel)
    cdef int nt = omp_get_max_threads()
    cdef Py_ssize_t n_items = (nq + qb - 1) // qb * nseg
    cdef Py_ssize_t nblk = (nb + bb - 1) // bb
    cdef Py_ssize_t w, q0, nr, s, b0, nbk, bhi, i, j, j0, row
    cdef uint64_t bits
    cdef pqfast_lt_bits_fn lt_bits = pqfast_lt_bits_impl(2)
    cdef bint own = pqfast_gemm_own(simd)
    cdef float thr, mn
    cdef float* dist
    cdef bint select
    cdef Py_ssize_t gcols = round16(qb * bb)  # the GEMM block's distances
    cdef void* block
    cdef float* wp = thread_rows(
        &block, nt, gcols + (select_columns(bb, k) if k >= SELECT_MIN_K else 0), &wcols)
    for w in prange(n_items, nogil=True, schedule="dynamic",
                    num_threads=team_size(n_items, 1, nt)):
        q0 = (w // nseg) * qb
        nr = min(qb, nq - q0)
        s = w % nseg
        for i in range(nr):
            heap_init(Dp + ((q0 + i) * nseg + s) * k, Ip + ((q0 + i) * nseg + s) * k, k)
        # segments start on GEMM block boundaries: each base row is then in
        # the same block, so gets the same rounding, at any thread count
        b0 = (nblk * s // nseg) * bb
        bhi = min(nb, (nblk * (s + 1) // nseg) * bb)
        select = k >= SELECT_MIN_K and bhi - b0 <= bb
        while b0 < bhi:
            nbk = min(bb, bhi - b0)
            dist = wp + threadid() * wcols
            gemm_abt(xp + q0 * d, <int>d, <int>nr, xbp + b0 * d, <int>d, <int>nbk,
                     <int>d, dist, own)
            for i in range(nr):
                row = (q0 + i) * nseg + s
                # dot products -> distances, then selection; both SIMD passes
                # leave the scalar heap loop only rows holding a candidate.
                if l2:
                    pqfast_l2_from_dots(dist, xn_p + b0, sqnorm(xp + (q0 + i) * d, d), nbk)
                else:
                    pqfast_negate(dist, nbk)
                if select:  # the segment's one block: no heap
                    select_row(dist, nbk, b0, k, &selector,
                               wp + threadid() * wcols + gcols, Dp + row * k,
                               Ip + row * k, nseg == 1)
                    dist = dist + nbk
                    continue
                thr = Dp[row * k]
                mn = pqfast_min(dist, nbk)
                if mn < thr and k == 1 and selector.kind == 0:
                    # the first position of the minimum is the smallest id
                    j = 0
                    while dist[j] != mn:
                        j = j + 1
                    Dp[row] = mn
                    Ip[row] = b0 + j
                elif mn < thr:
                    # Ids arrive in increasing order, so a tie with the heap top
                    # never wins and a plain "<" against the threshold suffices.
                    # Only entries below the threshold of their 64's start are
                    # visited (bits), in order.
                    for j0 in range(0, nbk, 64):
                        bits = lt_bits(dist + j0, min(64, nbk - j0), thr)
                        while bits != 0:
                            j = j0 + pqfast_ctz64(bits)
                            bits = bits & (bits - 1)
                            if dist[j] < thr and sel_allows(&selector, b0 + j):
                                heap_sift_down(Dp + row * k, Ip + row * k, k, 0,
                                               dist[j], b0 + j)
                                thr = Dp[row * k]
                dist = dist + nbk
            b0 = b0 + nbk
        if nseg == 1 and not select:
            for i in range(nr):
                heap_sort(Dp + (q0 + i) * k, Ip + (q0 + i) * k, k)
    free(block)


def own_gemm():
    """True when knn and the encoder run pqfast's AVX-512 GEMM, not BLAS, for
    blocks of more than 4 rows (fewer go through pqfast_dots either way)."""
    return bool(pqfast_gemm_own(2))


def sort_heaps(D, I):
    """Sort each row's max-heap ascending by (distance, id), in place."""
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t q, n = dim(D, 0), k = dim(D, 1)
    expect(dim(I, 0) == n and dim(I, 1) == k, "D and I shapes")
    for q in prange(n, nogil=True, schedule="static", num_threads=team_size(n, 256, 0)):
        heap_sort(Dp + q * k, Ip + q * k, k)


def merge_heaps(Dseg,             # IN  (nq * nseg, k) float32 heaps
                Iseg,             # IN  (nq * nseg, k) int64
                Py_ssize_t nseg,
                D,                # OUT (nq, k) float32, sorted
                I):               # OUT (nq, k) int64
    """Merge the nseg partial heaps of each query and sort the result."""
    cdef const float* Dsp = <const float*>checked(Dseg, F32, 2, False, "Dseg")
    cdef const int64_t* Isp = <const int64_t*>checked(Iseg, I64, 2, False, "Iseg")
    cdef float* Dp = <float*>checked(D, F32, 2, True, "D")
    cdef int64_t* Ip = <int64_t*>checked(I, I64, 2, True, "I")
    cdef Py_ssize_t q, s, nq = dim(D, 0), k = dim(D, 1)
    expect(nseg >= 1 and dim(Dseg, 0) == nq * nseg and dim(Iseg, 0) == nq * nseg
           and dim(Dseg, 1) == k and dim(Iseg, 1) == k and dim(I, 0) == nq
           and dim(I, 1) == k, "heap shapes")
    for q in prange(nq, nogil=True, schedule="static", num_threads=team_size(nq, 256, 0)):
        memcpy(Dp + q * k, Dsp + q * nseg * k, k * sizeof(float))
        memcpy(Ip + q * k, Isp + q * nseg * k, k * sizeof(int64_t))
        for s in range(1, nseg):
            heap_merge(Dp + q * k, Ip + q * k, Dsp + (q * nseg + s) * k,
                       Isp + (q * nseg + s) * k, k)
        heap_sort(Dp + q * k, Ip + q * k, k)
