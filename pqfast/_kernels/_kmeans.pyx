"""Lloyd's k-means steps: the centroid update, and the assignment of short
vectors with Elkan's bounds.

Points arrive at the update grouped by cluster (a stable argsort of the
assignment), so each centroid is summed by one thread in a fixed order: the
result does not depend on the number of threads.
"""

from cython.parallel cimport prange, threadid
from libc.float cimport FLT_MIN
from libc.stdint cimport int64_t
from libc.stdlib cimport free

from pqfast._kernels._arrays cimport F32, F64, I64, checked, dim, expect
from pqfast._kernels._common cimport (
    nearest_of,
    omp_get_max_threads,
    pqfast_count_le_fn,
    pqfast_count_le_impl,
    pqfast_elkan_fast,
    pqfast_elkan_fn,
    pqfast_elkan_impl,
    pqfast_min,
    pqfast_prefetch,
    team_size,
    thread_rows,
)


cdef enum:
    PREFETCH_POINTS = 4  # update_centroids asks for the point this many ahead


def update_centroids(x,          # IN  (n, d) float32 points
                     weights,    # IN  (n,) float32 point weights, or (0,) for all ones
                     order,      # IN  (n,) int64 point indices grouped by cluster
                     starts,     # IN  (k + 1,) int64: cluster c is order[starts[c]:starts[c+1]]
                     work,       # SCRATCH (n_threads, >= d) float64
                     centroids):  # INOUT (k, d) float32; empty clusters untouched
    """Set each non-empty centroid to the (weighted) mean of its points, in float64."""
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* wtp = <const float*>checked(weights, F32, 1, False, "weights")
    cdef const int64_t* op = <const int64_t*>checked(order, I64, 1, False, "order")
    cdef const int64_t* sp = <const int64_t*>checked(starts, I64, 1, False, "starts")
    cdef double* wp = <double*>checked(work, F64, 2, True, "work")
    cdef float* cp = <float*>checked(centroids, F32, 2, True, "centroids")
    cdef Py_ssize_t n = dim(x, 0), d = dim(x, 1), k = dim(centroids, 0)
    cdef Py_ssize_t wcols = dim(work, 1), c, i, j
    cdef bint weighted = dim(weights, 0) > 0
    expect(dim(centroids, 1) == d and dim(order, 0) == n and dim(starts, 0) == k + 1
           and wcols >= d and (not weighted or dim(weights, 0) == n), "shapes")
    expect(sp[0] == 0 and sp[k] == n, "starts must run from 0 to n")
    for c in range(k):
        expect(sp[c] <= sp[c + 1], "starts must be non-decreasing")
    for i in range(n):
        expect(0 <= op[i] < n, "order holds indices outside [0, n)")
    cdef int nt = <int>dim(work, 0)
    cdef const float* row
    cdef double* acc
    cdef double total, w
    for c in prange(k, nogil=True, schedule="dynamic", chunksize=16,
                    num_threads=team_size(k, 16, nt)):
        if sp[c + 1] == sp[c]:
            continue
        acc = wp + threadid() * wcols
        for j in range(d):
            acc[j] = 0
        total = 0
        for i in range(sp[c], sp[c + 1]):
            # points come in cluster order, scattered in x: without asking
            # ahead, the loads of each row were 78 % of this loop (perf)
            if i + PREFETCH_POINTS < n:
                pqfast_prefetch(xp + op[i + PREFETCH_POINTS] * d, d * sizeof(float))
            row = xp + op[i] * d
            w = wtp[op[i]] if weighted else 1.0
            total = total + w
            for j in range(d):
                acc[j] = acc[j] + w * row[j]
        if total > 0:
            for j in range(d):
                cp[c * d + j] = <float>(acc[j] / total)


def group_by_cluster(assign,   # IN  (n,) int64 cluster of each point, in [0, k)
                     order,    # OUT (n,) int64 point indices grouped by cluster
                     starts):  # OUT (k + 1,) int64: cluster c is order[starts[c]:starts[c+1]]
    """Counting sort of the points by cluster, stable: O(n), unlike an argsort."""
    cdef const int64_t* ap = <const int64_t*>checked(assign, I64, 1, False, "assign")
    cdef int64_t* op = <int64_t*>checked(order, I64, 1, True, "order")
    cdef int64_t* sp = <int64_t*>checked(starts, I64, 1, True, "starts")
    cdef Py_ssize_t n = dim(assign, 0), k = dim(starts, 0) - 1, i, c
    expect(dim(order, 0) == n and k >= 1, "shapes")
    for i in range(n):
        expect(0 <= ap[i] < k, "assign holds clusters outside [0, k)")
    with nogil:
        for c in range(k + 1):
            sp[c] = 0
        for i in range(n):
            sp[ap[i] + 1] += 1
        for c in range(k):
            sp[c + 1] += sp[c]
        for i in range(n):  # place, then shift the starts back by one cluster
            op[sp[ap[i]]] = i
            sp[ap[i]] += 1
        for c in range(k, 0, -1):
            sp[c] = sp[c - 1]
        sp[0] = 0


def elkan_assign(x,          # IN  (n, d) float32 points (short: direct distances)
                 cents,      # IN  (k, d) float32 centroids, k <= 1024 a multiple of 16
                 cbb,        # IN  (k / 16, d, 16) float32 the same, by blocks of 16
                 shift,      # IN  (k,) float32 how far each centroid has moved since
                             #     the first call, in all, rounded up (ignored when first)
                 bint first,
                 assign,     # INOUT (n,) int64 nearest centroid of each point
                 bounds,     # INOUT (n, k) float32 lower bounds of the distances,
                             #     plus shift when set (pqfast_elkan_point)
                 mins,       # OUT (n,) float32 squared distance to the nearest
                 int simd=2):
    """One Lloyd assignment, the same as an exhaustive one (the first nearest
    centroid on exact ties), computing only the distances Elkan's bounds do
    not rule out (Elkan, "Using the triangle inequality to accelerate
    k-means", ICML 2003), 16 centroids at a time.

    With `first`, every distance is computed and the bounds set.  Then a
    point's distances are computed only for the blocks of 16 centroids
    holding one whose bound is below its distance to its centroid so far
    (their bounds refreshed).  Bounds keep float32 rounding margins, so a
    centroid is ruled out only when it is strictly farther.  (Elkan's second
    test, half the distance between centroids, ruled out almost nothing more
    on PQ sub-vectors; one centroid at a time rather than blocks of 16 cost
    75 cycles a distance, more than it saved.)
    """
    cdef const float* xp = <const float*>checked(x, F32, 2, False, "x")
    cdef const float* cp = <const float*>checked(cents, F32, 2, False, "cents")
    cdef const float* cbbp = <const float*>checked(cbb, F32, 3, False, "cbb")
    cdef const float* dp = <const float*>checked(shift, F32, 1, False, "shift")
    cdef int64_t* ap = <int64_t*>checked(assign, I64, 1, True, "assign")
    cdef float* lp = <float*>checked(bounds, F32, 2, True, "bounds")
    cdef float* mp = <float*>checked(mins, F32, 1, True, "mins")
    cdef Py_ssize_t n = dim(x, 0), d = dim(x, 1), k = dim(cents, 0), i
    expect(dim(cents, 1) == d and k % 16 == 0 and 16 <= k <= 1024 and dim(cbb, 0) == k // 16
           and dim(cbb, 1) == d and dim(cbb, 2) == 16 and dim(shift, 0) == k
           and dim(assign, 0) == n and dim(bounds, 0) == n and dim(bounds, 1) == k
           and dim(mins, 0) == n, "shapes")
    if not first:
        for i in range(n):
            expect(0 <= ap[i] < k, "assign holds clusters outside [0, k)")
    cdef pqfast_count_le_fn count_le = pqfast_count_le_impl(simd, k)
    cdef pqfast_elkan_fn elkan_point = pqfast_elkan_impl(simd)
    cdef float rel = 4.8e-7 * (d + 4)  # distance rounding bound, as in _pq.assign_direct
    cdef int nt = omp_get_max_threads()
    cdef void* block
    cdef Py_ssize_t wcols
    cdef float* wp = thread_rows(&block, nt, k, &wcols)
    cdef float* w
    cdef float* lo
    cdef const float* xs
    cdef Py_ssize_t c
    cdef float mn
    for i in prange(n, nogil=True, schedule="static", chunksize=64,
                    num_threads=team_size(n, 64, nt)):
        w = wp + threadid() * wcols  # distances computed, FLT_MAX for the others
        xs = xp + i * d
        lo = lp + i * k
        c = elkan_point(xs, cp, cbbp, d, k, dp, lo, -1 if first else ap[i], rel, w)
        if c < 0:  # near tie: decided in float64
            mn = pqfast_min(w, k)
            c = nearest_of(xs, cp, d, k, w, mn + rel * mn + FLT_MIN, count_le)
        ap[i] = c
        mp[i] = w[c]
    free(block)


def elkan_level(int simd=2):
    """The SIMD level elkan_assign runs at on this CPU (up to `simd`): 2
    AVX-512, 1 AVX2, 0 portable (where the bounds cost more than they save)."""
    return pqfast_elkan_fast(simd)
