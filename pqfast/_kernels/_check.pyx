"""Input checks in C: the range check of every vector argument.

numpy's max and min of a single query (two reductions, each a Python call)
took 2 us, a tenth of a one-query IVFPQ search; this loop takes tens of
nanoseconds there, and reads large arrays once instead of twice.
"""

cimport numpy as cnp
from libc.stdlib cimport free, malloc


cdef extern from "simd.h" nogil:
    ctypedef int (*pqfast_copy_row_fn)(const float* x, Py_ssize_t d, float bound,
                                       float* dst, float* norm)
    pqfast_copy_row_fn pqfast_copy_row_impl(int max_level)

cnp.import_array()

# Floats checked at a time: the loop leaves at the first block holding a bad
# value, and arrays of more than one block are checked without the GIL.
cdef enum:
    BLOCK = 4096


cdef bint within(const float* x, Py_ssize_t n, float bound) noexcept nogil:
    """Whether every x[i] is in [-bound, bound] (False for NaN: both compares fail)."""
    cdef Py_ssize_t i0 = 0, i, end
    cdef bint ok = True
    while i0 < n:
        end = min(i0 + BLOCK, n)
        for i in range(i0, end):  # no early exit inside a block: vectorized
            ok &= (x[i] <= bound) & (x[i] >= -bound)
        if not ok:
            return False
        i0 = end
    return True


def all_within(x, float bound):
    """Whether every entry of `x`, a C-contiguous native float32 ndarray of any
    shape, is in [-bound, bound] (False if any is NaN or infinite)."""
    if not (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
            and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_IS_C_CONTIGUOUS(x)):
        raise TypeError("all_within needs a C-contiguous native float32 array")
    cdef const float* p = <const float*>cnp.PyArray_DATA(x)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef bint ok
    if n <= BLOCK:
        return within(p, n, bound)
    with nogil:
        ok = within(p, n, bound)
    return ok


def is_float32_rows(x, Py_ssize_t d):
    """Whether `x` is an ndarray (not a subclass) of native float32,
    C-contiguous, of shape (n, d): the input taken as it is (d < 0: any d)."""
    return (cnp.PyArray_CheckExact(x) and cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
            and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_NDIM(x) == 2
            and (d < 0 or cnp.PyArray_DIM(x, 1) == d) and cnp.PyArray_IS_C_CONTIGUOUS(x))


def is_clean(x, Py_ssize_t d, float bound):
    """Whether `x` needs neither conversion nor anything but this check:
    is_float32_rows(x, d), with every entry in [-bound, bound]."""
    return is_float32_rows(x, d) and all_within(x, bound)


def copy_rows(x, Py_ssize_t d, float bound, dst, norms, int level=2):
    """IndexFlat.add's one pass over `x` (is_float32_rows(x, d)): copy its
    rows into `dst` and their squared norms into `norms`, checking the range.

    Returns 1 when every value is in [-bound, bound], -1 when not (or NaN):
    dst and norms are then partly written, but the caller has not counted
    those rows yet, so nothing is lost.  `dst` is (n, d) and `norms` (n,), C-contiguous
    float32 (the caller's reserved rows).  Reading x once instead of three
    times (range check, copy, norms) matters because adding to a flat index
    is memory-bound.  `level`: the highest SIMD level used (0 portable,
    2 AVX-512), for tests.
    """
    if not is_float32_rows(x, d):
        raise TypeError("copy_rows needs a C-contiguous native float32 (n, d) array")
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), i
    for a, shape in ((dst, (n, d)), (norms, (n,))):
        if not (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32
                and cnp.PyArray_IS_C_CONTIGUOUS(a) and cnp.PyArray_ISWRITEABLE(a)
                and tuple(a.shape) == shape):
            raise ValueError("copy_rows: dst or norms has the wrong shape or type")
    cdef const float* xp = <const float*>cnp.PyArray_DATA(x)
    cdef float* dp = <float*>cnp.PyArray_DATA(dst)
    cdef float* np_ = <float*>cnp.PyArray_DATA(norms)
    cdef bint ok = True
    cdef pqfast_copy_row_fn copy_row = pqfast_copy_row_impl(level)
    with nogil:
        for i in range(n):
            if not copy_row(xp + i * d, d, bound, dp + i * d, np_ + i):
                ok = False
                break
    return 1 if ok else -1


def sq_norms(x, out):
    """out[i] = ||x_i||^2 for the rows of `x` (C-contiguous float32 (n, d)),
    summed exactly as copy_rows sums them (the same kernel, copying each row
    to a scratch row), so stored norms do not depend on how the vectors
    arrived (add, a loaded file, a memory map)."""
    if not is_float32_rows(x, -1):
        raise TypeError("sq_norms needs a C-contiguous native float32 (n, d) array")
    cdef Py_ssize_t n = cnp.PyArray_DIM(x, 0), d = cnp.PyArray_DIM(x, 1), i
    if not (cnp.PyArray_Check(out) and cnp.PyArray_TYPE(out) == cnp.NPY_FLOAT32
            and cnp.PyArray_IS_C_CONTIGUOUS(out) and cnp.PyArray_ISWRITEABLE(out)
            and tuple(out.shape) == (n,)):
        raise ValueError("sq_norms: out must be a writable float32 array of shape (n,)")
    cdef const float* xp = <const float*>cnp.PyArray_DATA(x)
    cdef float* op = <float*>cnp.PyArray_DATA(out)
    cdef pqfast_copy_row_fn copy_row = pqfast_copy_row_impl(2)
    cdef float* row = <float*>malloc(max(d, 1) * sizeof(float))
    if row == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            copy_row(xp + i * d, d, 3.4e38, row, op + i)
    free(row)


def data_address(a):
    """Address of an ndarray's data (ndarray.ctypes.data takes 1.4 us)."""
    if not isinstance(a, cnp.ndarray):
        raise TypeError("data_address takes a numpy array")
    return <size_t>cnp.PyArray_DATA(<cnp.ndarray>a)
