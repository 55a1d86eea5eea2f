"""Exact search: IndexFlatL2, IndexFlatIP and the blocked GEMM k-NN they share."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast import _range_search
from pqfast._kernels import _topk
from pqfast._kernels._check import is_float32_rows
from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2
from pqfast._search import finish, n_segments, result_arrays
from pqfast._storage import RowBuffer
from pqfast._threads import OWN_GEMM, serial_blas
from pqfast._validation import (
    check_key,
    check_metric,
    check_positive_int,
    check_range,
    check_vectors,
    copy_checked,
    sq_norms,
)
from pqfast.selectors import (
    NO_SELECTOR,
    IDSelector,
    SearchParameters,
    remove_positions,
    selector_args,
)

# GEMM blocks of queries x base rows: at least 128 queries (512 KiB of
# distances, in L2), up to 512 while a batch still makes two blocks
# (measured: 9000 x 379 x 384 at 1 thread, 25.3 -> 23.1 ms; 1000 x 379 x 384
# in two blocks rather than four, 3.58 -> 3.41 ms at 1 thread, 1.80 -> 1.72
# at 2).  The size does not depend on the thread count, so neither does any
# GEMM rounding.
_QUERY_BLOCK = 128
_QUERY_BLOCK_MAX = 512
_MIN_BLOCKS = 2
_BASE_BLOCK = 1024
# OpenBLAS runs a GEMM of at most this many multiply-adds on the calling thread
# (SMP_THRESHOLD_MIN * GEMM_MULTITHREAD_THRESHOLD in its interface/gemm.c).
_BLAS_SERIAL_FLOPS = 65536 * 4
_EMPTY = np.empty(0, np.float32)


def knn(
    xq: ArrayLike, xb: ArrayLike, k: int, metric: int = METRIC_L2
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Exact k nearest rows of `xb` for each row of `xq` (faiss's ``knn``).

    Parameters
    ----------
    xq : array-like of shape (nq, d)
    xb : array-like of shape (nb, d)
    k : int, k >= 1
    metric : METRIC_L2 (squared distances) or METRIC_INNER_PRODUCT

    Returns
    -------
    D, I : float32 and int64 arrays of shape (nq, k), best first, padded with
        (+FLT_MAX, -1) for L2 and (-FLT_MAX, -1) for inner product.
    """
    if np.ndim(xb) != 2:
        raise ValueError(f"xb must be 2-D (nb, d), got shape {np.shape(xb)}.")
    xb = check_vectors(xb, np.shape(xb)[1], "xb")
    xq = check_vectors(xq, xb.shape[1], "xq")
    return _knn(xq, xb, check_positive_int(k, "k"), check_metric(metric))


def _knn(
    x: NDArray[np.float32],
    xb: NDArray[np.float32],
    k: int,
    metric: int = METRIC_L2,
    xb_norms: NDArray[np.float32] | None = None,
    sel: tuple = NO_SELECTOR,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """``knn`` on validated C-contiguous float32 input, by blocked GEMM.

    `xb_norms` may hold precomputed squared norms of `xb` (L2 only).
    """
    nq, nb = x.shape[0], xb.shape[0]
    l2 = metric == METRIC_L2
    if l2 and xb_norms is None:
        xb_norms = sq_norms(xb)
    xnorm = xb_norms if l2 else _EMPTY
    qb = min(nq, max(_QUERY_BLOCK, min(_QUERY_BLOCK_MAX, -(-nq // _MIN_BLOCKS)))) or 1
    nseg = n_segments(-(-nq // qb), nb * x.shape[1] // 64)
    D, I = result_arrays(nq * nseg, k)
    # The kernel calls BLAS only for blocks of more than 4 queries without its
    # own GEMM, and BLAS threads itself only above _BLAS_SERIAL_FLOPS:
    # otherwise skip the pinning.
    use_blas = (
        not OWN_GEMM
        and qb > 4
        and qb * min(_BASE_BLOCK, nb) * x.shape[1] > _BLAS_SERIAL_FLOPS
    )
    with serial_blas() if use_blas else nullcontext():
        bb = max(1, min(_BASE_BLOCK, nb))  # scratch sized to use: no 1 MiB per query
        _topk.knn(x, xb, xnorm, l2, qb, bb, nseg, sel, D, I)
    return finish(D, I, nseg, metric)


def normalize_L2(x: NDArray[np.float32]) -> None:
    """Scale each row of `x` to unit L2 norm, in place (rows of zeros stay zero).

    As in faiss, `x` must be a C-contiguous float32 array, since it is
    modified in place.
    """
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.float32
        or not x.flags.c_contiguous
    ):
        raise TypeError(
            "normalize_L2 works in place: x must be a C-contiguous float32 array."
        )
    if not x.flags.writeable:
        raise ValueError("normalize_L2 works in place: x must be writable.")
    rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))[:, None]
    np.divide(rows, norms, out=rows, where=norms > 0, casting="unsafe")


class IndexFlat:
    """Exact search over stored float32 vectors (faiss's ``IndexFlat``).

    Parameters
    ----------
    d : int
        Vector dimension.
    metric : int, default METRIC_L2
        METRIC_L2 (squared Euclidean distances) or METRIC_INNER_PRODUCT.
    """

    def __init__(self, d: int, metric: int = METRIC_L2) -> None:
        self.d = check_positive_int(d, "d")
        self.metric_type = check_metric(metric)
        self.is_trained = True
        self._xb = RowBuffer(self.d, np.float32)
        self._norms = RowBuffer(0, np.float32)
        self._version = (
            0  # counts modifications (indexes using this as quantizer cache)
        )

    @property
    def ntotal(self) -> int:
        """Number of stored vectors."""
        return self._xb.size

    def train(self, x: ArrayLike) -> None:
        """No-op (a flat index needs no training); checks the input shape."""
        check_vectors(x, self.d)

    def add(self, x: ArrayLike) -> None:
        """Append vectors; they get ids ntotal, ntotal + 1, ...

        Parameters
        ----------
        x : array-like of shape (n, d)
        """
        if not is_float32_rows(x, self.d):
            x = check_vectors(x, self.d)  # converts (and checks) anything else
        n0, n = self.ntotal, x.shape[0]
        self._xb.reserve(n0 + n)  # may fail: nothing written yet
        self._norms.reserve(n0 + n)
        # the rows are counted only once all are written: a failure loses nothing
        copy_checked(x, self._xb.spare(n), self._norms.spare(n))
        self._xb.size = self._norms.size = n0 + n
        self._version += 1

    def search(
        self, x: ArrayLike, k: int, *, params: SearchParameters | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Return the exact k nearest neighbours of each query.

        Parameters
        ----------
        x : array-like of shape (n, d)
            Queries.
        k : int
            Number of neighbours, ``k >= 1``.

        Returns
        -------
        D : ndarray of shape (n, k), float32
            Squared L2 distances ascending, or inner products descending;
            +FLT_MAX (L2) or -FLT_MAX (IP) where fewer than k vectors exist.
        I : ndarray of shape (n, k), int64
            Ids of the neighbours, -1 where fewer than k vectors exist.
        """
        x, k = check_vectors(x, self.d), check_positive_int(k, "k")
        return self._search(x, k, selector_args(params))

    def _search(
        self, x: NDArray[np.float32], k: int, sel: tuple = NO_SELECTOR
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``search`` on validated input (for indexes using this as quantizer)."""
        return _knn(x, self._xb.view(), k, self.metric_type, self._norms.view(), sel)

    def range_search(
        self, x: ArrayLike, radius: float, *, params: SearchParameters | None = None
    ) -> _range_search.RangeResult:
        """Return every stored vector within `radius` of each query.

        Parameters
        ----------
        x : array-like of shape (n, d)
            Queries.
        radius : float
            L2: squared distances below `radius` are kept; inner product:
            similarities above it.
        params : SearchParameters, optional
            ``sel``: an IDSelector; only ids it accepts are returned.

        Returns
        -------
        lims : ndarray of shape (n + 1,), uint64
            Query i's results are ``D[lims[i]:lims[i + 1]]``, ``I[...]``.
        D : ndarray, float32
            Their distances (or similarities), in storage order, not sorted
            (as in faiss).
        I : ndarray, int64
            Their ids.
        """
        x = check_vectors(x, self.d)
        radius = _range_search.check_radius(radius)
        return _range_search.exhaustive(
            x, self._xb.view(), self.metric_type, radius, selector_args(params)
        )

    def remove_ids(self, ids: ArrayLike | IDSelector) -> int:
        """Remove the vectors with these ids (array or IDSelector); the others
        are renumbered 0..ntotal-1 in order, as in faiss.  Returns the count."""
        return remove_positions(self, ids)

    def _keep_rows(self, keep: NDArray[np.bool_]) -> None:
        """Keep only the rows where `keep` is True (allocating before changing)."""
        xb, norms = self._xb.view()[keep], self._norms.view()[keep]
        self._xb.assign(xb)
        self._norms.assign(norms)
        self._version += 1

    def reset(self) -> None:
        """Remove every vector."""
        self._xb.clear()
        self._norms.clear()
        self._version += 1

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        """Return stored vector `key` as an array of shape (d,)."""
        key = check_key(key, self.ntotal)
        return self._xb.view()[key].copy()

    def reconstruct_n(self, i0: int = 0, n: int | None = None) -> NDArray[np.float32]:
        """Return stored vectors i0 .. i0 + n - 1 as an (n, d) array."""
        i0, n = check_range(i0, n, self.ntotal)
        return self._xb.view()[i0 : i0 + n].copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(d={self.d}, ntotal={self.ntotal})"


class IndexFlatL2(IndexFlat):
    """Exact search by squared Euclidean distance."""

    def __init__(self, d: int) -> None:
        super().__init__(d, METRIC_L2)


class IndexFlatIP(IndexFlat):
    """Exact search by inner product (largest first)."""

    def __init__(self, d: int) -> None:
        super().__init__(d, METRIC_INNER_PRODUCT)
