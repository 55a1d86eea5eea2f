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

from pqfast._kernels._common cimport dot_table, scan_codes


def ivfpq_search(const float[:, ::1] x,            # IN  (nq, d) queries
                 const int64_t[:, ::1] probes,     # IN  (nq, nprobe) list numbers, -1 = none
                 const float[:, ::1] coarse,       # IN  (nq, nprobe) ||x - c||^2 or -<x, c>
                 const float[:, :, ::1] cbt,       # IN  (M, dsub, ksub) transposed codebook
                 const float[:, ::1] ynorm,        # IN  (M, ksub) ||y_mj||^2
                 const float[:, :, ::1] precomp,   # IN  (nlist, M, ksub) P_l, or shape (0, 0, 0)
                 const float[:, ::1] centroids,    # IN  (nlist, d) coarse centroids
                 const uint64_t[::1] code_ptrs,    # IN  (nlist,) address of each list's codes
                 const uint64_t[::1] id_ptrs,      # IN  (nlist,) address of each list's ids
                 const int64_t[::1] sizes,         # IN  (nlist,) entries per list
                 Py_ssize_t code_size, int nbits, bint l2, Py_ssize_t nseg,
                 float[:, ::1] work,               # SCRATCH (n_threads, 2 * M * ksub)
                 float[:, ::1] D,                  # INOUT (nq * nseg, k) heaps, padded
                 int64_t[:, ::1] I):               # INOUT (nq * nseg, k)
    """Fill the heaps; work item w scans query w // nseg's probe segment w % nseg.

    The caller has checked every list number against nlist and every array
    shape, so nothing here can read out of bounds.
    """
    cdef Py_ssize_t M = cbt.shape[0], dsub = cbt.shape[1], ksub = cbt.shape[2]
    cdef Py_ssize_t nprobe = probes.shape[1], k = D.shape[1], mk = M * ksub
    cdef Py_ssize_t w, q, s, p, t, l
    cdef int nt = work.shape[0]
    cdef bint have_precomp = precomp.shape[0] > 0
    cdef float* qtab
    cdef float* ltab
    cdef float* tab
    cdef const float* ptab
    for w in prange(D.shape[0], nogil=True, schedule="dynamic", num_threads=nt):
        q = w // nseg
        s = w % nseg
        qtab = &work[threadid(), 0]
        ltab = qtab + mk
        memset(qtab, 0, mk * sizeof(float))
        dot_table(&x[q, 0], &cbt[0, 0, 0], M, dsub, ksub, -2.0 if l2 else -1.0, qtab)
        for p in range(nprobe * s // nseg, nprobe * (s + 1) // nseg):
            l = probes[q, p]
            if l < 0 or sizes[l] == 0:
                continue
            tab = qtab
            if l2:
                ptab = &precomp[l, 0, 0] if have_precomp else &ynorm[0, 0]
                for t in range(mk):
                    ltab[t] = qtab[t] + ptab[t]
                if not have_precomp:
                    dot_table(&centroids[l, 0], &cbt[0, 0, 0], M, dsub, ksub, 2.0, ltab)
                tab = ltab
            scan_codes(tab, <const uint8_t*><uintptr_t>code_ptrs[l],
                       <const int64_t*><uintptr_t>id_ptrs[l], 0, sizes[l], code_size,
                       M, nbits, ksub, coarse[q, p], &D[w, 0], &I[w, 0], k)
