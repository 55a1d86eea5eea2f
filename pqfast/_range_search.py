"""Range search plumbing shared by every index: radius checks, exhaustive
storage seen as lists, and faiss's (lims, D, I) output."""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _range
from pqfast._kernels._check import data_address
from pqfast._metrics import METRIC_L2
from pqfast._search import n_segments

RangeResult = tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]
NO_CODEBOOK = (
    np.zeros((0, 0, 0), np.float32),  # cbt: the rows are float32 vectors
    np.zeros((0, 0), np.float32),  # ynorm
    np.zeros((0, 0, 0), np.float32),  # precomputed list tables
    np.zeros((0, 0), np.float32),  # list centroids
    0,  # nbits
    None,  # per-code list terms (pqfast/_code_terms.py)
)


def check_radius(radius: object) -> float:
    """A finite real radius."""
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real):
        raise TypeError(f"radius must be a real number, got {type(radius).__name__}.")
    if not math.isfinite(radius):
        raise ValueError(f"radius must be finite, got {radius}.")
    return float(radius)


def run(
    x: NDArray[np.float32],
    probes: NDArray[np.int64],
    coarse: NDArray[np.float32],
    codebook: tuple,
    lists: tuple[
        NDArray[np.uint64], NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64]
    ],
    code_size: int,
    metric: int,
    radius: float,
    nseg: int,
    sel: tuple,
) -> RangeResult:
    """Call the range kernel; return faiss's (lims, D, I).

    L2 keeps distances < radius; inner product keeps similarities > radius
    (the kernel compares negated similarities against -radius).
    """
    cbt, ynorm, precomp, centroids, nbits, terms = codebook
    code_ptrs, id_ptrs, id0s, sizes = lists
    l2 = metric == METRIC_L2
    lims, D, I = _range.range_search(
        x, probes, coarse, cbt, ynorm, precomp, centroids, code_ptrs, id_ptrs, id0s,
        sizes, code_size, nbits, l2, nseg, radius if l2 else -radius, sel, terms,
    )  # fmt: skip
    if not l2:
        np.negative(D, out=D)
    return lims, D, I


def pq_codebook(
    pq: object,
    precomp: NDArray[np.float32],
    centroids: NDArray[np.float32],
    terms: NDArray[np.uint64] | None = None,
) -> tuple:
    """Codebook arguments of the kernel for ProductQuantizer `pq` and list
    terms (a table, or the addresses of per-code terms)."""
    return pq._cbt, pq._ynorm, precomp, centroids, pq.nbits, terms


def exhaustive(
    x: NDArray[np.float32],
    rows: NDArray,
    metric: int,
    radius: float,
    sel: tuple,
    pq: object = None,
) -> RangeResult:
    """Range search over contiguous storage `rows` with ids 0..n-1: float32
    vectors (n, d), or with `pq` its codes (n, code_size).

    The rows are cut into segments that every query probes, so that a small
    batch still keeps every thread busy.
    """
    nq, n = x.shape[0], rows.shape[0]
    nseg = n_segments(nq, n)
    bounds = np.arange(nseg + 1, dtype=np.int64) * n // nseg
    row_bytes = rows.shape[1] * rows.itemsize
    lists = (
        (data_address(rows) + bounds[:-1] * row_bytes).astype(np.uint64),
        np.zeros(nseg, np.uint64),
        bounds[:-1].copy(),
        np.diff(bounds),
    )
    probes = np.broadcast_to(np.arange(nseg, dtype=np.int64), (nq, nseg)).copy()
    coarse = np.zeros((nq, nseg), np.float32)
    codebook = NO_CODEBOOK
    if pq is not None:
        # PQ tables as for an IVF list with a zero centroid: the list term is
        # ||y||^2 (L2), the coarse term ||x||^2
        ynorm = pq._ynorm
        if metric == METRIC_L2:
            coarse += np.einsum("ij,ij->i", x, x)[:, None]
            precomp = ynorm[None]  # one list term shared by every segment
        else:
            precomp = np.zeros((0, *ynorm.shape), np.float32)
        codebook = pq_codebook(pq, precomp, NO_CODEBOOK[3])
    return run(x, probes, coarse, codebook, lists, row_bytes, metric, radius, nseg, sel)
