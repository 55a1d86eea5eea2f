"""Inverted lists: per list, one contiguous uint8 code array and one int64 id array."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from pqfast._blocks import BlockCodes
from pqfast._kernels import _ivf
from pqfast._storage import RowBuffer


def _read_only(a: NDArray) -> NDArray:
    view = a.view()
    view.flags.writeable = False
    return view


class ArrayInvertedLists:
    """nlist lists of (code, id) entries, grown with amortized doubling.

    The search kernel reads the lists through raw addresses, so the arrays of
    sizes and addresses are private and changed only together with the lists
    (``sizes`` is a read-only view).  Like faiss, concurrent searches are
    safe, but a search must not run while another thread adds or removes.

    Parameters
    ----------
    nlist : int
        Number of lists.
    code_size : int
        Bytes per code.
    """

    _block_M = 0  # append_entries layout: flat rows

    def __init__(self, nlist: int, code_size: int) -> None:
        self.nlist = nlist
        self.code_size = code_size
        self._codes = [self._new_list() for _ in range(nlist)]
        self._ids = [RowBuffer(0, np.int64) for _ in range(nlist)]
        self._sizes = np.zeros(nlist, np.int64)
        self._ntotal = 0  # sum of _sizes, kept by _sync (read per search)
        self._code_ptrs = np.zeros(nlist, np.uint64)
        self._id_ptrs = np.zeros(nlist, np.uint64)
        self.versions = np.zeros(nlist, np.int64)  # bumped on every change of a list
        self.generation = 0  # bumped on every change of any list
        for i in range(nlist):
            self._sync(i)

    def _new_list(self) -> RowBuffer:
        """Storage of one list's codes."""
        return RowBuffer(self.code_size, np.uint8)

    def _sync(self, i: int) -> None:
        """Publish list i's size and addresses; codes and ids always agree in size."""
        size = min(self._codes[i].size, self._ids[i].size)
        self._codes[i].size = self._ids[i].size = size
        self._ntotal += size - int(self._sizes[i])
        self._sizes[i] = size
        self.versions[i] += 1
        self.generation += 1
        self._code_ptrs[i] = self._codes[i].address
        self._id_ptrs[i] = self._ids[i].address

    def _check_list_no(self, list_no: int) -> int:
        list_no = int(list_no)
        if not 0 <= list_no < self.nlist:
            raise ValueError(f"list_no must be in [0, {self.nlist}), got {list_no}.")
        return list_no

    @property
    def ntotal(self) -> int:
        """Entries in all lists."""
        return self._ntotal

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Entries per list (read-only)."""
        return _read_only(self._sizes)

    def kernel_arrays(
        self,
    ) -> tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.int64]]:
        """(code addresses, id addresses, sizes) for the search kernel."""
        return self._code_ptrs, self._id_ptrs, self._sizes

    def list_size(self, list_no: int) -> int:
        """Number of entries in list `list_no`."""
        return int(self._sizes[self._check_list_no(list_no)])

    def get_codes(self, list_no: int) -> NDArray[np.uint8]:
        """Codes of list `list_no`, shape (size, code_size) (a read-only view)."""
        return _read_only(self._codes[self._check_list_no(list_no)].view())

    def get_ids(self, list_no: int) -> NDArray[np.int64]:
        """Ids of list `list_no`, shape (size,) (a read-only view)."""
        return _read_only(self._ids[self._check_list_no(list_no)].view())

    def add_entries(
        self,
        list_nos: NDArray[np.int64],
        codes: NDArray[np.uint8],
        ids: NDArray[np.int64],
    ) -> None:
        """Append entry j to list list_nos[j], keeping input order within a list.

        All or nothing: if anything fails (even KeyboardInterrupt), every list
        is left as it was.
        """
        if not all(
            np.issubdtype(np.asarray(a).dtype, np.integer) for a in (list_nos, ids)
        ):
            raise TypeError("add_entries takes integer list numbers and ids")
        list_nos = np.ascontiguousarray(list_nos, np.int64)
        ids = np.ascontiguousarray(ids, np.int64)
        codes = np.ascontiguousarray(codes, np.uint8)
        if (
            codes.shape != (list_nos.size, self.code_size)
            or ids.shape != list_nos.shape
        ):
            raise ValueError(
                f"add_entries needs n list numbers, (n, {self.code_size}) codes"
                f" and n ids; got {list_nos.shape}, {codes.shape}, {ids.shape}"
            )
        if list_nos.size and not 0 <= list_nos.min() <= list_nos.max() < self.nlist:
            raise ValueError(f"list numbers outside [0, {self.nlist})")
        counts = np.bincount(list_nos, minlength=self.nlist)
        touched = np.flatnonzero(counts)
        old_sizes = self._sizes[touched].copy()
        code_ptrs = np.zeros(self.nlist, np.uint64)
        id_ptrs = np.zeros(self.nlist, np.uint64)
        capacity = np.zeros(self.nlist, np.int64)
        try:
            added = counts[touched].tolist()
            for i, size, n in zip(touched.tolist(), old_sizes.tolist(), added):
                self._codes[i].reserve(size + n)
                self._ids[i].reserve(size + n)
                code_ptrs[i] = self._codes[i].address
                id_ptrs[i] = self._ids[i].address
                capacity[i] = min(self._codes[i].capacity, self._ids[i].capacity)
            _ivf.append_entries(
                list_nos, codes, ids, code_ptrs, id_ptrs, self._sizes, capacity,
                self._block_M,
            )  # fmt: skip
            for i, n in zip(touched.tolist(), added):
                self._codes[i].grow(n)
                self._ids[i].grow(n)
        except BaseException:
            for i, size in zip(touched, old_sizes):
                self._codes[i].size = self._ids[i].size = int(size)
            raise
        finally:
            for i in touched:
                self._sync(i)

    def remove_ids(
        self, member: Callable[[NDArray[np.int64]], NDArray[np.bool_]]
    ) -> int:
        """Remove every entry whose id `member` marks; return how many were removed."""
        removed = 0
        for i in np.flatnonzero(self._sizes):
            drop = member(self._ids[i].view())
            if drop.any():
                kept_codes = self._codes[i].view()[~drop]  # allocate before writing
                kept_ids = self._ids[i].view()[~drop]
                try:
                    self._codes[i].assign(kept_codes)
                    self._ids[i].assign(kept_ids)
                finally:
                    self._sync(i)
                removed += int(drop.sum())
        return removed

    def load_list(
        self, i: int, codes: NDArray[np.uint8], ids: NDArray[np.int64]
    ) -> None:
        """Make list i hold these codes and ids (held as they are, e.g. memory
        maps, until a change needs a copy); for an empty list, when loading."""
        self._codes[i].wrap(codes)
        self._ids[i].wrap(ids)
        self._sync(i)

    def reset(self) -> None:
        """Empty every list."""
        for i in range(self.nlist):
            self._codes[i].clear()
            self._ids[i].clear()
            self._sync(i)

    @property
    def nbytes(self) -> int:
        """Bytes held by stored codes and ids."""
        return sum(c.nbytes for c in self._codes) + 8 * int(self._sizes.sum())


class BlockInvertedLists(ArrayInvertedLists):
    """Inverted lists of 4-bit PQ codes kept only as fast-scan blocks (one
    BlockCodes per list): the same interface, flat codes in and out, while
    the kernels read blocks through ``kernel_arrays``.

    Parameters
    ----------
    nlist : int
        Number of lists.
    M : int
        Sub-quantizers per code.
    """

    def __init__(self, nlist: int, M: int) -> None:
        self.M = M
        self._block_M = M  # append_entries layout: blocks of M 4-bit sub-codes
        super().__init__(nlist, (4 * M + 7) // 8)

    def _new_list(self) -> BlockCodes:
        return BlockCodes(self.M)

    def load_list(
        self, i: int, codes: NDArray[np.uint8], ids: NDArray[np.int64]
    ) -> None:
        """Make list i hold these flat codes (packed into blocks) and ids."""
        self._codes[i].clear()
        self._codes[i].append(codes)
        self._ids[i].wrap(ids)
        self._sync(i)
