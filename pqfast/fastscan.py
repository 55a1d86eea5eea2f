"""IndexPQFastScan and IndexIVFPQFastScan: 4-bit PQ codes scanned 32 at a time."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pqfast._blocks import BLOCK, BlockCodes
from pqfast._kernels import _fastscan
from pqfast._kernels._check import data_address
from pqfast._metrics import METRIC_L2
from pqfast._validation import (
    check_key,
    check_positive_int,
    check_range,
)
from pqfast.invlists import BlockInvertedLists
from pqfast.ivf import IndexIVFPQ
from pqfast.pq import PQCodesIndex


def _check_fast_scan(name: str, nbits: int, bbs: int) -> None:
    if check_positive_int(nbits, "nbits") != 4:
        raise ValueError(f"{name} needs nbits=4, got {nbits}.")
    if check_positive_int(bbs, "bbs") != BLOCK:
        raise ValueError(f"{name} supports bbs=32 only, got {bbs}.")


class IndexPQFastScan(PQCodesIndex):
    """Exhaustive search over 4-bit PQ codes (faiss's ``IndexPQFastScan``).

    Codes are stored in blocks of 32 vectors (M * 16 bytes a block: 4 bits per
    sub-code, as in IndexPQ with nbits=4) and scored 32 at a time with byte
    shuffles on 8-bit quantized lookup tables (AVX2 when the CPU has it, a
    portable loop otherwise).  Unlike faiss, the k best are re-scored with the
    float table, so the returned distances are exact ADC distances.

    Parameters
    ----------
    d : int
        Vector dimension, a multiple of M.
    M : int
        Number of sub-quantizers.
    nbits : int, default 4
        Must be 4.
    metric : int, default METRIC_L2
        METRIC_L2 or METRIC_INNER_PRODUCT.
    bbs : int, default 32
        Block size; must be 32.
    seed : int, default 1234
        Seeds training.
    """

    def __init__(
        self,
        d: int,
        M: int,
        nbits: int = 4,
        metric: int = METRIC_L2,
        bbs: int = 32,
        seed: int = 1234,
    ) -> None:
        _check_fast_scan(type(self).__name__, nbits, bbs)
        super().__init__(d, M, 4, metric, seed)
        self.bbs = BLOCK
        self._codes = BlockCodes(self.pq.M)

    def _scan(self, x, nseg, sel, D, I) -> None:  # noqa: ANN001
        pq = self.pq
        _fastscan.pq4_search(
            x, pq._cbt, pq._ynorm, self._codes.blocks.view(), self.ntotal,
            self.metric_type == METRIC_L2, nseg, True, sel, D, I,
        )  # fmt: skip

    def reconstruct_n(self, i0: int = 0, n: int | None = None) -> NDArray[np.float32]:
        """Decoded vectors i0 .. i0 + n - 1, shape (n, d)."""
        self._check_trained("reconstruct_n")
        i0, n = check_range(i0, n, self.ntotal)
        sub = self._codes.sub_codes(i0, n)
        pq = self.pq
        return pq.centroids[np.arange(pq.M), sub].reshape(n, pq.d)

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        """Decoded vector `key`, shape (d,)."""
        return self.reconstruct_n(check_key(key, self.ntotal), 1)[0]

    def __repr__(self) -> str:
        return f"IndexPQFastScan(d={self.d}, M={self.pq.M}, ntotal={self.ntotal})"


class IndexIVFPQFastScan(IndexIVFPQ):
    """IVF index with 4-bit PQ residuals scanned 32 at a time (faiss's
    ``IndexIVFPQFastScan``).

    Training, adding, ids, removal and reconstruction are IndexIVFPQ's (with
    nbits=4).  Each inverted list keeps its codes only in blocks of 32 (see
    IndexPQFastScan; ``invlists.get_codes`` unpacks them); per query and
    probed list, the float table (query term plus the precomputed list term,
    as in IndexIVFPQ) is quantized to 8 bits to filter codes, and codes that
    pass are scored exactly.

    Parameters
    ----------
    quantizer, d, nlist, M, metric, seed
        As for IndexIVFPQ.
    nbits : int, default 4
        Must be 4.
    bbs : int, default 32
        Block size; must be 32.
    """

    def __init__(
        self,
        quantizer: object,
        d: int,
        nlist: int,
        M: int,
        nbits: int = 4,
        metric: int = METRIC_L2,
        bbs: int = 32,
        seed: int = 1234,
    ) -> None:
        _check_fast_scan(type(self).__name__, nbits, bbs)
        super().__init__(quantizer, d, nlist, M, 4, metric, seed)
        self.bbs = BLOCK
        self.invlists = BlockInvertedLists(self.nlist, self.pq.M)

    _per_code_terms = False  # list terms go into each list's quantized table

    def _fused_kernel(self, x, nprobe, args, terms, sel, D, I) -> None:  # noqa: ANN001
        """IndexIVFPQ's one-call path (coarse search and list scan in one
        kernel call, for few queries) with the fast-scan kernel."""
        _fastscan.ivfpq4_search_flat(x, nprobe, *args, True, sel, D, I)

    def _range_lists(self, probes: NDArray[np.int64]) -> tuple:
        """The range kernel reads flat codes: the probed lists are unpacked (a
        transient copy); the others are passed as empty."""
        inv = self.invlists
        probed = np.unique(probes[probes >= 0])
        codes = {int(i): np.ascontiguousarray(inv.get_codes(i)) for i in probed}
        ptrs = np.zeros(self.nlist, np.uint64)
        sizes = np.zeros(self.nlist, np.int64)
        for i, c in codes.items():
            ptrs[i], sizes[i] = data_address(c), c.shape[0]
        _, id_ptrs, _ = inv.kernel_arrays()
        return (ptrs, id_ptrs, np.zeros(self.nlist, np.int64), sizes), codes

    def _scan_lists(
        self,
        x: NDArray[np.float32],
        probes: NDArray[np.int64],
        base: NDArray[np.float32],
        nseg: int,
        D: NDArray[np.float32],
        I: NDArray[np.int64],
        sel: tuple,
    ) -> None:
        pq = self.pq
        precomp = self._precomputed_table()
        block_ptrs, id_ptrs, sizes = self.invlists.kernel_arrays()
        _fastscan.ivfpq4_search(
            x, probes, base, pq._cbt, pq._ynorm, precomp, self._coarse_centroids(),
            block_ptrs, id_ptrs, sizes, self.metric_type == METRIC_L2, nseg,
            True, sel, D, I,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"IndexIVFPQFastScan(d={self.d}, nlist={self.nlist}, M={self.pq.M}, "
            f"ntotal={self.ntotal})"
        )
