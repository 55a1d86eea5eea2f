"""Plumbing shared by the search paths: padded heaps, work splitting, finishing.

Kernels fill max-heaps in "smaller is better" space; `finish` merges the
per-segment heaps of each query, sorts them and restores inner-product signs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _topk
from pqfast._metrics import METRIC_INNER_PRODUCT
from pqfast._threads import omp_get_max_threads

FLT_MAX = np.finfo(np.float32).max


def n_segments(nq: int, max_segments: int) -> int:
    """How many pieces to split each query's work into so all threads are busy."""
    threads = omp_get_max_threads()
    if nq >= threads or max_segments <= 1:
        return 1
    return int(min(-(-threads // nq), max_segments))


def padded_heaps(rows: int, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Heaps filled with the padding faiss returns: distance FLT_MAX, id -1."""
    return np.full((rows, k), FLT_MAX, dtype=np.float32), np.full((rows, k), -1, np.int64)


def scratch(per_thread: int, dtype: type = np.float32) -> NDArray:
    """One row of scratch space per OpenMP thread."""
    return np.empty((omp_get_max_threads(), max(per_thread, 1)), dtype=dtype)


def finish(
    D: NDArray[np.float32], I: NDArray[np.int64], nseg: int, metric: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Merge segment heaps, sort by (distance, id) and return faiss's (D, I)."""
    if nseg > 1:
        nq, k = D.shape[0] // nseg, D.shape[1]
        Dout, Iout = np.empty((nq, k), np.float32), np.empty((nq, k), np.int64)
        _topk.merge_heaps(D, I, nseg, Dout, Iout)
        D, I = Dout, Iout
    else:
        _topk.sort_heaps(D, I)
    if metric == METRIC_INNER_PRODUCT:
        np.negative(D, out=D)
    return D, I
