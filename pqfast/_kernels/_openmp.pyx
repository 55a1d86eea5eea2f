"""OpenMP thread control; a serial build reports one thread."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define PQFAST_HAVE_OPENMP 1
    #else
    #define PQFAST_HAVE_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    static void omp_set_num_threads(int n) { (void)n; }
    #endif
    """
    int PQFAST_HAVE_OPENMP
    int omp_get_max_threads() nogil
    void omp_set_num_threads(int n) nogil


def get_max_threads():
    return omp_get_max_threads()


def set_num_threads(int n):
    omp_set_num_threads(n)


def have_openmp():
    return bool(PQFAST_HAVE_OPENMP)
