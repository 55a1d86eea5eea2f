"""Growable contiguous row storage, the backing of every index's contents."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels._check import data_address

# Arrays the kernels stream start on a cache line: an AVX-512 load of a row
# that straddles two lines costs two (one-query coarse search, 379 x 384
# centroids at 16 bytes past a line, numpy's usual offset: 5.4 -> 3.5 us
# aligned; PERFORMANCE.md #53).  Arrays under ALIGN_MIN_BYTES (most
# inverted lists of a small index) are left to numpy: the extra steps cost
# about a microsecond an allocation, more than a few lines' loads.
ALIGN = 64
ALIGN_MIN_BYTES = 1 << 14


def aligned_empty(shape: int | tuple[int, ...], dtype: np.dtype) -> NDArray:
    """``np.empty(shape, dtype)``, its data on an ALIGN-byte boundary when it
    holds at least ALIGN_MIN_BYTES."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < ALIGN_MIN_BYTES:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -data_address(raw) % ALIGN
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: NDArray) -> NDArray:
    """A C-contiguous, ALIGN-byte aligned copy of `a`."""
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


class RowBuffer:
    """Rows of a fixed width in one contiguous array, grown by amortized doubling.

    Parameters
    ----------
    width : int
        Items per row (0 for a 1-D buffer, e.g. ids).
    dtype : numpy dtype
        Item type.
    """

    def __init__(self, width: int, dtype: np.dtype) -> None:
        self.width = width
        self.dtype = np.dtype(dtype)
        self._hold(aligned_empty(self._shape(0), self.dtype), owned=True)
        self.size = 0

    def _hold(self, data: NDArray, owned: bool) -> None:
        """Make `data` the storage (owned: allocated here, not a caller's
        array); its address is taken once, here."""
        self._data = data
        self._owned = owned
        self._address = data_address(data)

    def _shape(self, rows: int) -> tuple[int, ...]:
        return (rows, self.width) if self.width else (rows,)

    def view(self) -> NDArray:
        """The stored rows (a view: valid until the next append)."""
        return self._data[: self.size]

    @property
    def capacity(self) -> int:
        """Rows that fit without reallocating."""
        return self._data.shape[0]

    def reserve(self, rows: int) -> None:
        """Make room for `rows` rows in total, doubling the capacity as needed.

        A wrapped array (e.g. a memory map) is copied first, since writes
        follow: spare rows, or a partly filled last row of blocks.
        """
        if rows > self._data.shape[0] or not self._owned:
            capacity = max(rows, 2 * self._data.shape[0], 16)
            grown = aligned_empty(self._shape(capacity), self.dtype)
            if self.size:
                grown[: self.size] = self._data[: self.size]
            self._hold(grown, owned=True)

    def spare(self, n: int) -> NDArray:
        """The n rows past the stored ones, to be written before `size` grows
        over them (reserve first)."""
        if self.size + n > self._data.shape[0]:
            raise ValueError("spare rows past the capacity: reserve first")
        return self._data[self.size : self.size + n]

    def grow(self, n: int) -> None:
        """Count in the n spare rows written (reserve first)."""
        if self.size + n > self._data.shape[0]:
            raise ValueError("grow past the capacity: reserve first")
        self.size += n

    def append(self, rows: NDArray) -> None:
        """Append rows (already of the right width and dtype)."""
        n = rows.shape[0]
        self.reserve(self.size + n)
        self._data[self.size : self.size + n] = rows
        self.size += n

    def assign(self, rows: NDArray) -> None:
        """Replace the contents by `rows` (no more rows than stored: no allocation)."""
        n = rows.shape[0]
        if n > self.size:
            raise ValueError("assign can only shrink a RowBuffer")
        if self._owned:
            self._data[:n] = rows
        else:  # never write into a caller's array (a memory map, say)
            self._hold(aligned_copy(np.asarray(rows, dtype=self.dtype)), owned=True)
        self.size = n

    def wrap(self, rows: NDArray) -> None:
        """Hold `rows` as the contents without copying (e.g. a memory map).

        The first append that needs room copies them into a new array.
        """
        if rows.ndim != len(self._shape(0)) or rows.shape[1:] != self._shape(0)[1:]:
            raise ValueError(f"rows of shape {rows.shape} do not fit this buffer")
        self._hold(rows, owned=False)
        self.size = rows.shape[0]

    def clear(self) -> None:
        """Drop every row and release the memory."""
        self._hold(np.empty(self._shape(0), dtype=self.dtype), owned=True)
        self.size = 0

    @property
    def address(self) -> int:
        """Address of the first row, for the kernels."""
        return self._address

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored rows."""
        return self.view().nbytes
