"""Per-code list terms of an IndexIVFPQ's inverted lists (L2, by residual).

The L2 distance of a query x to a code y stored in list l, with coarse
centroid c, splits into a query term, a coarse term and a list term:

    ||x - c - y||^2 = ||x - c||^2 - 2 <x, y> + (||y||^2 + 2 <c, y>).

The last term does not depend on the query.  faiss keeps it as a table of
nlist x M x ksub floats (``precomputed_table``) and builds each probed list's
row into the query's lookup table; kept per code instead (one float, as
additive quantizers keep each code's norm), a scan reads only the query's
table, which stays in L1/L2, and no 32 KB row per probed list (M = 32).
The index keeps terms while they take no more memory than the table.
"""

from __future__ import annotations

import threading

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _pq
from pqfast._kernels._check import data_address

# Lists whose table rows are built at once when terms are refreshed.
_LIST_CHUNK = 64


def list_term_table(pq: object, centroids: NDArray[np.float32]) -> NDArray[np.float32]:
    """faiss's precomputed table for these coarse centroids, shape (n, M, ksub):
    P[l, m, j] = ||y_mj||^2 + 2 <c_l,m, y_mj>, each list's rows the same
    whichever other centroids are passed (_pq.list_tables)."""
    table = np.empty((len(centroids), pq.M, pq.ksub), np.float32)
    _pq.list_tables(
        np.ascontiguousarray(centroids, np.float32), pq._cbt, pq._ynorm, table
    )
    return table


class CodeTerms:
    """Each stored code's list term, one float32 array per list.

    ``refresh`` recomputes the terms of the lists that changed since the
    last call (by the inverted lists' per-list versions), or of every list
    when the codebooks or coarse centroids did; ``ptrs`` holds the address
    of each list's terms for the search kernel (0: empty list).  Refreshes
    are serialized, so concurrent searches of an unchanged index never
    replace arrays another search is reading; as for the lists themselves,
    a search must not run while another thread changes the index.

    Parameters
    ----------
    nlist : int
        Number of inverted lists.
    """

    def __init__(self, nlist: int) -> None:
        self.ptrs = np.zeros(nlist, np.uint64)
        self._terms: list[NDArray[np.float32] | None] = [None] * nlist
        self._versions = np.full(nlist, -1, np.int64)
        self._key: tuple | None = None
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held by the terms."""
        return sum(t.nbytes for t in self._terms if t is not None)

    def refresh(
        self,
        invlists: object,
        pq: object,
        centroids: NDArray[np.float32],
        state: object,
    ) -> NDArray[np.uint64]:
        """Bring the terms up to date with `invlists`; return ``ptrs``.

        Parameters
        ----------
        invlists : ArrayInvertedLists
            The index's lists (codes of the residuals to `centroids`).
        pq : ProductQuantizer
            The trained residual quantizer.
        centroids : ndarray of shape (nlist, d), float32
            Coarse centroids.
        state : object
            Token that changes when `centroids` or the codebooks change.
        """
        key = (invlists, invlists.generation, state)
        if key == self._key:
            return self.ptrs
        with self._lock:
            if key != self._key:  # (not brought up to date meanwhile)
                self._refresh(invlists, pq, centroids, key)
        return self.ptrs

    def _refresh(
        self, invlists: object, pq: object, centroids: NDArray[np.float32], key: tuple
    ) -> None:
        state = key[2]
        if self._key is None or self._key[0] is not invlists or self._key[2] != state:
            self._versions[:] = -1
        stale = np.flatnonzero(invlists.versions != self._versions)
        for i0 in range(0, stale.size, _LIST_CHUNK):
            self._recompute(invlists, pq, centroids, stale[i0 : i0 + _LIST_CHUNK])
        self._versions[stale] = invlists.versions[stale]
        self._key = key

    def _recompute(
        self,
        invlists: object,
        pq: object,
        centroids: NDArray[np.float32],
        lists: NDArray[np.int64],
    ) -> None:
        """Terms of these lists: sum_m P[l, m, code_m] (list_term_table)."""
        sizes = invlists.sizes[lists]
        for i in lists[sizes == 0].tolist():
            self._terms[i] = None
            self.ptrs[i] = 0
        kept = sizes > 0
        lists, out_sizes = lists[kept], sizes[kept]
        if lists.size == 0:
            return
        table = list_term_table(pq, centroids[lists])
        terms = [np.empty(n, np.float32) for n in out_sizes.tolist()]
        ptrs = np.array([data_address(t) for t in terms], np.uint64)
        code_ptrs, _, all_sizes = invlists.kernel_arrays()
        _pq.code_sums(
            table, lists, code_ptrs, all_sizes, invlists.code_size, pq.nbits, ptrs,
            out_sizes,
        )  # fmt: skip
        for i, t, ptr in zip(lists.tolist(), terms, ptrs.tolist()):
            self._terms[i] = t
            self.ptrs[i] = ptr
