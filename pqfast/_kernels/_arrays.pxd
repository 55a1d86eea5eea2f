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


cdef inline Selector make_selector(object sel) except *:
    """Selector struct from (kind, lo, hi, sorted int64 ids) built in Python."""
    cdef Selector s
    kind, lo, hi, ids = sel
    if kind not in (0, 1, 2):
        raise ValueError(f"kernel argument sel: unknown selector kind {kind}")
    s.kind = kind
    s.lo = lo
    s.hi = hi
    s.ids = <const int64_t*>checked(ids, I64, 1, False, "selector ids")
    s.n = dim(ids, 0)
    return s
