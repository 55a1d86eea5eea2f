"""Plumbing shared by the search paths: padded heaps, work splitting, finishing.

Kernels select in "smaller is better" space, padding with (FLT_MAX, -1);
`finish` merges per-segment heaps and restores inner-product signs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pqfast._kernels import _topk
from pqfast._kernels._check import data_address
from pqfast._metrics import METRIC_INNER_PRODUCT
from pqfast._threads import omp_get_max_threads

# A query's scan is split across threads only in pieces of at least this many
# codes: below it, waking another thread costs more than it saves.
CODES_PER_SEGMENT = 8192
# dtype objects, not the scalar types: np.empty then skips a conversion per call
_F32, _I64 = np.dtype(np.float32), np.dtype(np.int64)


def n_segments(nq: int, work_per_query: int) -> int:
    """How many pieces to split each query's work into so all threads are busy.

    Parameters
    ----------
    nq : int
        Independent work items (queries or query blocks); each runs on one thread.
    work_per_query : int
        Codes (or base vectors) one item scans.
    """
    max_segments = work_per_query // CODES_PER_SEGMENT
    if nq == 0 or max_segments <= 1:  # (before asking OpenMP: 0.1 us a query)
        return 1
    threads = omp_get_max_threads()
    if nq >= threads:
        return 1
    return int(min(-(-threads // nq), max_segments))


def result_arrays(rows: int, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Uninitialised (D, I) for a kernel, which pads them itself (FLT_MAX, -1)."""
    return np.empty((rows, k), _F32), np.empty((rows, k), _I64)


_LINE = 64  # bytes in a cache line


def scratch(per_thread: int, dtype: type = np.float32) -> NDArray:
    """One row of scratch space per OpenMP thread (at least `per_thread` items).

    Rows start on cache lines and are a line apart: a thread writing the end
    of its row (per-block sums, say) must not evict the start of the next
    thread's (measured: IndexPQFastScan at 2 threads scaled 1.26x, not 2x).
    """
    item = np.dtype(dtype).itemsize
    cols = -(-max(per_thread, 1) * item // _LINE) * _LINE // item + _LINE // item
    rows = omp_get_max_threads()
    buf = np.empty(rows * cols + _LINE // item, dtype=dtype)
    start = (-data_address(buf) % _LINE) // item
    return buf[start : start + rows * cols].reshape(rows, cols)


def finish(
    D: NDArray[np.float32], I: NDArray[np.int64], nseg: int, metric: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Return faiss's (D, I) from kernel output.

    With nseg == 1 the kernels leave each row sorted by (distance, id); with
    more, each query has nseg heaps, merged and sorted here.  Inner-product
    kernels work on negated similarities: their sign is restored.
    """
    if nseg > 1:
        nq, k = D.shape[0] // nseg, D.shape[1]
        Dout, Iout = result_arrays(nq, k)
        _topk.merge_heaps(D, I, nseg, Dout, Iout)
        D, I = Dout, Iout
    if metric == METRIC_INNER_PRODUCT:
        np.negative(D, out=D)
    return D, I
