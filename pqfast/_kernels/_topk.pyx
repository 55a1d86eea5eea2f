"""Top-k kernels: exact k-NN by blocked GEMM, heap sorting and merging."""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
from libc.string cimport memcpy

from pqfast._kernels._common cimport gemm_abt, heap_merge, heap_push, heap_sort


def knn(const float[:, ::1] x,      # IN  (nq, d) queries
        const float[::1] qnorm,        # IN  (nq,) ||x_i||^2 (L2)
        const float[:, ::1] xb,        # IN  (nb, d) base vectors
        const float[::1] xnorm,        # IN  (nb,) ||xb_j||^2 (L2)
        bint l2,                       # IN  squared L2, else negated inner product
        Py_ssize_t qb,                 # IN  queries per GEMM block
        Py_ssize_t bb,                 # IN  base rows per GEMM block
        Py_ssize_t nseg,               # IN  base segments per query block
        float[:, ::1] work,            # SCRATCH (n_threads, qb * bb)
        float[:, ::1] D,               # INOUT (nq * nseg, k) heaps, padded
        int64_t[:, ::1] I):            # INOUT (nq * nseg, k)
    """Exact k-NN by blocked GEMM, each block's distances pushed into heaps.

    Work item w covers query block w // nseg against base segment w % nseg;
    query i's heap for segment s is row i * nseg + s.  BLAS runs single-
    threaded inside each OpenMP thread (scikit-learn's k-means scheme).
    """
    cdef Py_ssize_t nq = x.shape[0], nb = xb.shape[0], dim = x.shape[1], k = D.shape[1]
    cdef Py_ssize_t n_qblocks = (nq + qb - 1) // qb
    cdef Py_ssize_t w, q0, q1, s, b0, b1, blo, bhi, i, j, row
    cdef int nt = work.shape[0]
    cdef float d
    cdef float* dots
    if nq == 0 or nb == 0:
        return
    for w in prange(n_qblocks * nseg, nogil=True, schedule="dynamic", num_threads=nt):
        q0 = (w // nseg) * qb
        q1 = min(q0 + qb, nq)
        s = w % nseg
        blo = nb * s // nseg
        bhi = nb * (s + 1) // nseg
        dots = &work[threadid(), 0]
        b0 = blo
        while b0 < bhi:
            b1 = min(b0 + bb, bhi)
            gemm_abt(&x[q0, 0], dim, q1 - q0, &xb[b0, 0], dim, b1 - b0, dim, dots)
            for i in range(q1 - q0):
                row = (q0 + i) * nseg + s
                for j in range(b1 - b0):
                    if l2:
                        d = qnorm[q0 + i] + xnorm[b0 + j] - 2 * dots[i * (b1 - b0) + j]
                        if d < 0:
                            d = 0
                    else:
                        d = -dots[i * (b1 - b0) + j]
                    heap_push(&D[row, 0], &I[row, 0], k, d, b0 + j)
            b0 = b1


def sort_heaps(float[:, ::1] D, int64_t[:, ::1] I):
    """Sort each row's max-heap ascending by (distance, id), in place."""
    cdef Py_ssize_t q, k = D.shape[1]
    with nogil:
        for q in prange(D.shape[0], schedule="static"):
            heap_sort(&D[q, 0], &I[q, 0], k)


def merge_heaps(const float[:, ::1] Dseg,   # IN  (nq * nseg, k) heaps
                const int64_t[:, ::1] Iseg,  # IN
                Py_ssize_t nseg,
                float[:, ::1] D,             # OUT (nq, k) sorted results
                int64_t[:, ::1] I):          # OUT
    """Merge the nseg partial heaps of each query and sort the result."""
    cdef Py_ssize_t q, s, k = D.shape[1]
    with nogil:
        for q in prange(D.shape[0], schedule="static"):
            memcpy(&D[q, 0], &Dseg[q * nseg, 0], k * sizeof(float))
            memcpy(&I[q, 0], &Iseg[q * nseg, 0], k * sizeof(int64_t))
            for s in range(1, nseg):
                heap_merge(&D[q, 0], &I[q, 0], &Dseg[q * nseg + s, 0],
                           &Iseg[q * nseg + s, 0], k)
            heap_sort(&D[q, 0], &I[q, 0], k)
