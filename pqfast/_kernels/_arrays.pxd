# Argument checks for kernels that take numpy arrays as plain objects.
#
# Typed memoryviews cost about a microsecond each to unpack, which dominates a
# single-query search; these checks cost a few tens of nanoseconds and still
# refuse, with the GIL held and before any nogil code runs, any array whose
# dtype, rank, contiguity, writability or shape the kernel does not expect.

cimport numpy as cnp
from libc.stdint cimport int64_t

from pqfast._kernels._common cimport Selector

cnp.import_array()

cdef enum:
    F32 = cnp.NPY_FLOAT32
    F64 = cnp.NPY_FLOAT64
    I64 = cnp.NPY_INT64
    U64 = cnp.NPY_UINT64
    U8 = cnp.NPY_UINT8
    U16 = cnp.NPY_UINT16


cdef inline void* checked(object obj, int typenum, int ndim, bint writable,
                          str name) except NULL:
    """Data pointer of a C-contiguous ndarray of the given type and rank."""
    if not isinstance(obj, cnp.ndarray):
        raise TypeError(f"kernel argument {name} must be a numpy array")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim:
        raise TypeError(f"kernel argument {name}: unexpected dtype {a.dtype} or rank {a.ndim}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"kernel argument {name} must be C-contiguous")
    if writable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"kernel argument {name} must be writable")
    return cnp.PyArray_DATA(a)


cdef inline Py_ssize_t dim(object a, int i) noexcept:
    """Extent of axis i of an array already accepted by `checked`."""
    return cnp.PyArray_DIM(<cnp.ndarray>a, i)


cdef inline int expect(bint ok, str what) except -1:
    if not ok:
        raise ValueError(f"kernel arguments disagree: {what}")
    return 0


cdef inline int check_probes(object probes, object coarse, Py_ssize_t nq,
                             Py_ssize_t nlist) except -1:
    """An IVF kernel's probes: (nq, nprobe) int64 list numbers in [-1, nlist)
    (-1: none), and, unless coarse is None, their (nq, nprobe) float32 terms."""
    cdef const int64_t* pp = <const int64_t*>checked(probes, I64, 2, False, "probes")
    cdef Py_ssize_t w, nprobe = dim(probes, 1)
    expect(dim(probes, 0) == nq, "probes")
    if coarse is not None:
        checked(coarse, F32, 2, False, "coarse")
        expect(dim(coarse, 0) == nq and dim(coarse, 1) == nprobe, "probes and coarse")
    for w in range(nq * nprobe):
        expect(-1 <= pp[w] < nlist, "probes hold list numbers outside [0, nlist)")
    return 0


cdef inline Py_ssize_t list_term_stride(object precomp, Py_ssize_t nlist, Py_ssize_t M,
                                        Py_ssize_t ksub) except -1:
    """Checks IVF list terms, (nlist, M, ksub), (1, M, ksub) when one term
    serves every list (by_residual=False), or (0, ...) for none; returns the
    stride between lists' terms (0: shared)."""
    cdef Py_ssize_t n = dim(precomp, 0)
    expect(n == 0 or (n in (1, nlist) and dim(precomp, 1) == M
                      and dim(precomp, 2) == ksub), "precomputed table")
    return M * ksub if n == nlist else 0


cdef inline Selector make_selector(object sel) except *:
    """Selector struct from the (nodes, data, root) of selectors.py.

    Every node is checked here: kinds, children numbered below their parent
    (so evaluation terminates), and id sets and bitmaps inside `data`.
    """
    cdef Selector s
    nodes, data, root = sel
    s.nodes = <const int64_t*>checked(nodes, I64, 2, False, "selector nodes")
    s.data = <const int64_t*>checked(data, I64, 1, False, "selector data")
    cdef Py_ssize_t nn = dim(nodes, 0), nw = dim(data, 0), i
    cdef const int64_t* nd
    expect(dim(nodes, 1) == 4 and 0 <= root < nn, "selector nodes")
    for i in range(nn):
        nd = s.nodes + 4 * i
        expect(0 <= nd[0] <= 7, "selector node kind")
        if nd[0] == 2:
            expect(0 <= nd[1] and 0 <= nd[2] and nd[1] + nd[2] <= nw, "selector id set")
        elif nd[0] == 7:
            expect(0 <= nd[1] and 0 <= nd[2] and nd[1] + (nd[2] + 7) // 8 <= nw,
                   "selector bitmap")
        elif nd[0] >= 3:
            expect(0 <= nd[1] < i and (nd[0] == 3 or 0 <= nd[2] < i),
                   "selector children")
    s.root = root
    nd = s.nodes + 4 * s.root
    s.kind = nd[0] if nd[0] <= 2 else 3
    s.lo = nd[1]
    s.hi = nd[2]
    s.ids = s.data + (nd[1] if nd[0] == 2 else 0)
    s.n = nd[2] if nd[0] == 2 else 0
    return s
