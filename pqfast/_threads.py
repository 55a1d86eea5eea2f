"""Thread control: OpenMP thread count as faiss exposes it, and BLAS pinning.

The GEMM kernels call BLAS from inside OpenMP threads, so BLAS itself must run
single-threaded meanwhile: otherwise its worker threads spin on the same cores
as ours (about 25x slower k-means on 2 cores, measured).  scikit-learn's
k-means does the same with threadpoolctl.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

from pqfast._kernels import _openmp
from pqfast._validation import check_positive_int

_controller: ThreadpoolController | None = None


def omp_set_num_threads(n: int) -> None:
    """Set the number of threads the search, encoding and k-means kernels use."""
    _openmp.set_num_threads(check_positive_int(n, "n"))


def omp_get_max_threads() -> int:
    """Number of threads the next parallel kernel will use."""
    return _openmp.get_max_threads()


def serial_blas() -> AbstractContextManager:
    """Context in which BLAS libraries run on the calling thread only."""
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
