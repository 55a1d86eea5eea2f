"""Input checks in C: the range check of every vector argument.

numpy's max and min of a single query (two reductions, each a Python call)
took 2 us, a tenth of a one-query IVFPQ search; this loop takes tens of
nanoseconds there, and reads large arrays once instead of twice.
"""

cimport numpy as cnp

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


def is_clean(x, Py_ssize_t d, float bound):
    """Whether `x` needs neither conversion nor anything but this check: an
    ndarray (not a subclass) of native float32, C-contiguous, of shape (n, d),
    with every entry in [-bound, bound]."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
            and cnp.PyArray_ISNOTSWAPPED(x) and cnp.PyArray_NDIM(x) == 2
            and cnp.PyArray_DIM(x, 1) == d and cnp.PyArray_IS_C_CONTIGUOUS(x)):
        return False
    return all_within(x, bound)
