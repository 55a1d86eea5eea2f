"""Lloyd's centroid update.

Points arrive grouped by cluster (a stable argsort of the assignment), so each
centroid is summed by one thread in a fixed order: the result does not depend
on the number of threads.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t

from pqfast._kernels._common cimport team_size


def update_centroids(const float[:, ::1] x,        # IN  (n, d) points
                     const int64_t[::1] order,     # IN  (n,) point indices grouped by cluster
                     const int64_t[::1] starts,    # IN  (k + 1,) cluster c: order[starts[c]:starts[c+1]]
                     double[:, ::1] work,          # SCRATCH (n_threads, d)
                     float[:, ::1] centroids):     # INOUT (k, d); empty clusters untouched
    """Set each non-empty centroid to the mean of its points (summed in float64)."""
    cdef Py_ssize_t c, i, j, n_c, k = centroids.shape[0], d = centroids.shape[1]
    cdef int nt = work.shape[0]
    cdef const float* row
    cdef double* acc
    for c in prange(k, nogil=True, schedule="dynamic", chunksize=16,
                    num_threads=team_size(k, 16, nt)):
        n_c = starts[c + 1] - starts[c]
        if n_c == 0:
            continue
        acc = &work[threadid(), 0]
        for j in range(d):
            acc[j] = 0
        for i in range(starts[c], starts[c + 1]):
            row = &x[order[i], 0]
            for j in range(d):
                acc[j] = acc[j] + row[j]
        for j in range(d):
            centroids[c, j] = <float>(acc[j] / n_c)
