"""OpenMP thread control; a serial build reports one thread."""

from pqfast._kernels._common cimport (
    PQFAST_HAVE_OPENMP,
    omp_get_max_threads,
    omp_set_num_threads,
)


def get_max_threads():
    return omp_get_max_threads()


def set_num_threads(int n):
    omp_set_num_threads(n)


def have_openmp():
    return bool(PQFAST_HAVE_OPENMP)
