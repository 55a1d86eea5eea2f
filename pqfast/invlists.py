"""Inverted lists: per list, one contiguous uint8 code array and one int64 id array."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pqfast._storage import RowBuffer


class ArrayInvertedLists:
    """nlist lists of (code, id) entries, grown with amortized doubling.

    The kernels read the lists through ``code_ptrs``, ``id_ptrs`` and
    ``sizes``, arrays kept current by every method that changes a list.

    Parameters
    ----------
    nlist : int
        Number of lists.
    code_size : int
        Bytes per code.
    """

    def __init__(self, nlist: int, code_size: int) -> None:
        self.nlist = nlist
        self.code_size = code_size
        self._codes = [RowBuffer(code_size, np.uint8) for _ in range(nlist)]
        self._ids = [RowBuffer(0, np.int64) for _ in range(nlist)]
        self.sizes = np.zeros(nlist, np.int64)
        self.code_ptrs = np.zeros(nlist, np.uint64)
        self.id_ptrs = np.zeros(nlist, np.uint64)
        for i in range(nlist):
            self._sync(i)

    def _sync(self, i: int) -> None:
        self.sizes[i] = self._ids[i].size
        self.code_ptrs[i] = self._codes[i].address
        self.id_ptrs[i] = self._ids[i].address

    def list_size(self, list_no: int) -> int:
        """Number of entries in list `list_no`."""
        return int(self.sizes[list_no])

    def get_codes(self, list_no: int) -> NDArray[np.uint8]:
        """Codes of list `list_no`, shape (size, code_size) (a read-only view)."""
        view = self._codes[list_no].view()
        view.flags.writeable = False
        return view

    def get_ids(self, list_no: int) -> NDArray[np.int64]:
        """Ids of list `list_no`, shape (size,) (a read-only view)."""
        view = self._ids[list_no].view()
        view.flags.writeable = False
        return view

    def add_entries(
        self, list_nos: NDArray[np.int64], codes: NDArray[np.uint8], ids: NDArray[np.int64]
    ) -> None:
        """Append entry j to list list_nos[j], keeping input order within a list."""
        order = np.argsort(list_nos, kind="stable")
        counts = np.bincount(list_nos, minlength=self.nlist)
        bounds = np.concatenate(([0], np.cumsum(counts)))
        for i in np.flatnonzero(counts):
            sel = order[bounds[i] : bounds[i + 1]]
            self._codes[i].append(codes[sel])
            self._ids[i].append(ids[sel])
            self._sync(i)

    def remove_ids(self, ids: NDArray[np.int64]) -> int:
        """Remove every entry whose id is in `ids`; return how many were removed."""
        removed = 0
        for i in np.flatnonzero(self.sizes):
            drop = np.isin(self._ids[i].view(), ids)
            if drop.any():
                keep = ~drop
                self._codes[i].keep(keep)
                removed += self._ids[i].keep(keep)
                self._sync(i)
        return removed

    def reset(self) -> None:
        """Empty every list."""
        for i in range(self.nlist):
            self._codes[i].clear()
            self._ids[i].clear()
            self._sync(i)

    @property
    def nbytes(self) -> int:
        """Bytes held by stored codes and ids."""
        return int(self.sizes.sum()) * (self.code_size + 8)
