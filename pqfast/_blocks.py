"""4-bit PQ codes stored only in fast-scan blocks, behind a row-buffer interface.

``BlockCodes`` holds the codes of n vectors as blocks of 32 (the layout of
fastscan.h, M * 16 bytes a block) and nothing else, yet reads and writes like a
RowBuffer of flat codes (faiss's packing, two sub-codes a byte): ``view``
unpacks, ``append`` writes the new codes into the free slots of the last
block and into new blocks (``_ivf.append_entries``).  So the fast-scan
indexes keep one copy of their codes, as faiss does, and the inverted-list
machinery works on them unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _fastscan, _ivf
from pqfast._storage import RowBuffer

BLOCK = 32  # vectors per block


def pack_blocks(sub: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Sub-codes (n, M), one per byte, as blocks (ceil(n / 32), M * 16)."""
    blocks = np.empty((-(-sub.shape[0] // BLOCK), sub.shape[1] * 16), np.uint8)
    _fastscan.pack_blocks(np.ascontiguousarray(sub), blocks)
    return blocks


def flat_to_sub(codes: NDArray[np.uint8], M: int) -> NDArray[np.uint8]:
    """Flat 4-bit codes (n, ceil(M / 2)) to sub-codes (n, M)."""
    sub = np.empty((codes.shape[0], 2 * codes.shape[1]), np.uint8)
    sub[:, 0::2] = codes & 15
    sub[:, 1::2] = codes >> 4
    return sub[:, :M]


def sub_to_flat(sub: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Sub-codes (n, M) to flat 4-bit codes (n, ceil(M / 2))."""
    if sub.shape[1] % 2:
        sub = np.concatenate([sub, np.zeros((sub.shape[0], 1), np.uint8)], 1)
    return np.ascontiguousarray(sub[:, 0::2] | (sub[:, 1::2] << 4))


class BlockCodes:
    """Flat 4-bit codes of `size` vectors, stored as fast-scan blocks only.

    Parameters
    ----------
    M : int
        Sub-quantizers per code.
    """

    def __init__(self, M: int) -> None:
        self.M = M
        self.width = (4 * M + 7) // 8  # bytes of a flat code
        self.blocks = RowBuffer(M * 16, np.uint8)
        self._size = 0

    @property
    def size(self) -> int:
        """Vectors stored."""
        return self._size

    @size.setter
    def size(self, n: int) -> None:
        """Truncate to n vectors (slots past n in the last block are ignored)."""
        if not 0 <= n <= self._size:
            raise ValueError("BlockCodes can only be truncated")
        self._size = n
        self.blocks.size = -(-n // BLOCK)

    def sub_codes(self, i0: int, n: int) -> NDArray[np.uint8]:
        """Sub-codes (n, M) of vectors i0 .. i0 + n - 1."""
        first, last = i0 // BLOCK, -(-(i0 + n) // BLOCK)
        sub = np.empty(((last - first) * BLOCK, self.M), np.uint8)
        blocks = np.ascontiguousarray(self.blocks.view()[first:last])
        _fastscan.unpack_blocks(blocks, sub)
        return sub[i0 - first * BLOCK : i0 - first * BLOCK + n]

    def view(self) -> NDArray[np.uint8]:
        """All codes, flat (size, width): a new array, not a view."""
        return sub_to_flat(self.sub_codes(0, self._size))

    @property
    def capacity(self) -> int:
        """Vectors that fit without reallocating."""
        return self.blocks.capacity * BLOCK

    def reserve(self, n: int) -> None:
        """Make room for n vectors in total (see RowBuffer.reserve)."""
        self.blocks.reserve(-(-n // BLOCK))

    def grow(self, n: int) -> None:
        """Count in n vectors written past the stored ones (reserve first)."""
        self.blocks.grow(-(-(self._size + n) // BLOCK) - self.blocks.size)
        self._size += n

    def append(self, codes: NDArray[np.uint8]) -> None:
        """Append flat codes; the earlier vectors keep their slots and values
        (all-or-nothing: allocation comes first)."""
        n = codes.shape[0]
        self.reserve(self._size + n)
        _ivf.append_entries(
            np.zeros(n, np.int64), np.ascontiguousarray(codes, np.uint8),
            np.zeros(n, np.int64), np.array([self.address], np.uint64),
            np.zeros(1, np.uint64),  # no ids
            np.array([self._size], np.int64), np.array([self.capacity], np.int64),
            self.M,
        )  # fmt: skip
        self.grow(n)

    def assign(self, codes: NDArray[np.uint8]) -> None:
        """Replace the contents by at most `size` flat codes."""
        if codes.shape[0] > self._size:
            raise ValueError("assign can only shrink a BlockCodes")
        self.blocks.assign(pack_blocks(flat_to_sub(codes, self.M)))
        self._size = codes.shape[0]

    def wrap(self, blocks: NDArray[np.uint8], n: int) -> None:
        """Hold `blocks` (e.g. a memory map) as the blocks of n vectors."""
        if blocks.shape[0] != -(-n // BLOCK):
            raise ValueError(f"{blocks.shape[0]} blocks cannot hold {n} vectors")
        self.blocks.wrap(blocks)
        self._size = n

    def clear(self) -> None:
        self.blocks.clear()
        self._size = 0

    @property
    def address(self) -> int:
        """Address of the first block, for the kernels."""
        return self.blocks.address

    @property
    def nbytes(self) -> int:
        return self.blocks.nbytes
