"""Nearest codebook entry of every sub-vector: the step shared by PQ encoding
and by k-means on short vectors (a PQ sub-quantizer's training)."""

from __future__ import annotations

import contextlib

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _pq
from pqfast._threads import OWN_GEMM, omp_get_max_threads, serial_blas

# Encoding GEMM blocks hold (rows x ksub) dot products: 1 MiB per thread.
ENCODE_FLOATS = 1 << 18
# Largest dsub encoded with direct distances rather than GEMMs (measured:
# benchmarks/encode_rate.py, PERFORMANCE.md, optimization 10).
DIRECT_MAX_DSUB = 48
# Direct encoding blocks: rows whose vectors fill 64 KiB (read M times each).
DIRECT_BLOCK_BYTES = 1 << 16
_NO_MINS = np.empty((0, 0), np.float32)


def nearest(
    x: NDArray[np.float32],
    cents: NDArray[np.float32],
    cbt: NDArray[np.float32],
    ynorm: NDArray[np.float32] | None,
    mins: NDArray[np.float32] | None = None,
) -> NDArray[np.uint16]:
    """idx[i, m] = argmin_j ||x_im - cents[m, j]||^2 (the first j on exact ties).

    Parameters
    ----------
    x : (n, M * dsub) float32, C-contiguous
    cents : (M, ksub, dsub) float32 codebooks; cbt the same as (M, dsub, ksub)
    ynorm : (M, ksub) float32 squared norms of the codebook entries (may be
        None when dsub <= DIRECT_MAX_DSUB, where they are not used)
    mins : (n, M) float32, optional
        Receives each sub-vector's squared distance to its centroid, as
        computed (relative error below (dsub + 2) 2^-24); only for
        dsub <= DIRECT_MAX_DSUB.
    """
    n, d = x.shape
    M, ksub, dsub = cents.shape
    direct = dsub <= DIRECT_MAX_DSUB
    if not direct and (mins is not None or ynorm is None):
        raise ValueError("mins, and no ynorm, need dsub <= DIRECT_MAX_DSUB")
    if ynorm is None:
        ynorm = np.zeros((M, ksub), np.float32)
    per_thread = -(-n // (4 * omp_get_max_threads()))
    if direct:  # the block is read once per sub-quantizer: keep it in cache
        chunk = max(1, min(DIRECT_BLOCK_BYTES // (4 * d), per_thread))
    else:  # bounded scratch, and GEMMs of at least 256 rows
        chunk = max(1, min(max(1, ENCODE_FLOATS // ksub), max(256, per_thread)))
    idx = np.empty((n, M), np.uint16)
    # only the GEMM path calls BLAS (from OpenMP threads), unless OWN_GEMM
    with serial_blas() if not (direct or OWN_GEMM) else contextlib.nullcontext():
        _pq.assign_codes(
            x, cents, cbt, ynorm, chunk, direct, 2, idx,
            _NO_MINS if mins is None else mins,
        )  # fmt: skip
    return idx
