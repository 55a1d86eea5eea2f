"""Cost of the final sort of a k-NN result row (a max-heap of k pairs).

``python -m benchmarks.sort_rate [--out FILE]`` times pqfast's heap-to-sorted
step through ``_topk.merge_heaps`` with one segment (a copy, then the sort) on
rows that are max-heaps of random (distance, id) pairs, one thread, and writes
microseconds per row for each k to benchmarks/results/sort-rate.json.  Run it
on two builds to compare them (PERFORMANCE.md, optimization 33).
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.system import cpu_model

HERE = Path(__file__).resolve().parent
KS = (10, 24, 48, 100, 256, 512)


def heaps(rows: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """`rows` max-heaps of k random float32 distances."""
    out = np.empty((rows, k), np.float32)
    for r, row in enumerate(rng.random((rows, k)).astype(np.float32)):
        h = (-row).tolist()
        heapq.heapify(h)
        out[r] = -np.array(h, np.float32)
    return out


def main() -> None:
    import pqfast
    from pqfast._kernels import _topk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "results" / "sort-rate.json"))
    args = parser.parse_args()
    pqfast.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    per_row = {}
    for k in KS:
        D = heaps(args.rows, k, rng)
        ids = rng.integers(0, 10**6, (args.rows, k)).astype(np.int64)
        Do, Io = np.empty_like(D), np.empty_like(ids)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            _topk.merge_heaps(D, ids, 1, Do, Io)
            times.append(time.perf_counter() - t0)
        per_row[str(k)] = round(1e6 * min(times) / args.rows, 3)
        print(f"k = {k:4d}: {per_row[str(k)]:.2f} us a row")
    result = {"cpu": cpu_model(), "rows": args.rows, "us_per_row_min": per_row}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
