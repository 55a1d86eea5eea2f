"""Thread control: OpenMP thread count as faiss exposes it, and BLAS pinning.

The GEMM kernels call BLAS from inside OpenMP threads, so BLAS itself must run
single-threaded meanwhile: otherwise its worker threads spin on the same cores
as ours (about 25x slower k-means on 2 cores, measured).  scikit-learn's
k-means does the same with threadpoolctl.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

from pqfast._kernels import _openmp, _topk
from pqfast._validation import check_positive_int


def omp_set_num_threads(n: int) -> None:
    """Set the number of threads the search, encoding and k-means kernels use."""
    _openmp.set_num_threads(check_positive_int(n, "n"))


def omp_get_max_threads() -> int:
    """Number of threads the next parallel kernel will use."""
    return _openmp.get_max_threads()


class _SerialBlas:
    """Context holding every loaded BLAS library to one thread, then restoring it.

    Calls the libraries' own get/set functions through threadpoolctl's
    controllers, found once: about a microsecond per library per call.
    """

    def __init__(self) -> None:
        self._libs = ThreadpoolController().select(user_api="blas").lib_controllers
        self._saved: list[int] = []

    def __enter__(self) -> None:
        self._saved.append([lib.get_num_threads() for lib in self._libs])
        for lib, n in zip(self._libs, self._saved[-1]):
            if n != 1:
                lib.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        for lib, n in zip(self._libs, self._saved.pop()):
            if n != 1:
                lib.set_num_threads(n)


_serial_blas: _SerialBlas | None = None

# Where the CPU has AVX-512 the k-NN and the encoder run pqfast's own GEMM
# and call no BLAS: nothing to pin around them.
OWN_GEMM = _topk.own_gemm()


def serial_blas() -> AbstractContextManager:
    """Context in which BLAS libraries run on the calling thread only."""
    global _serial_blas
    if _serial_blas is None:
        _serial_blas = _SerialBlas()
    return _serial_blas
