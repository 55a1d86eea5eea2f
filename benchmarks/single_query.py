"""Single-query IndexIVFPQ search time, pqfast against faiss, side by side.

``python -m benchmarks.single_query`` trains faiss's IndexIVFPQ (nlist=379,
8-bit codes) on the bundled MiniLM base (d=384), copies its coarse centroids
and codebooks into pqfast's, adds the base to both and times ``search(x, 10)``
one query at a time (250 queries), interleaved, 7 rounds, for M 8, 16, 32,
nprobe 1, 4, 16, 64 and at 1 and 2 threads.  ``ratio`` is faiss's time over
pqfast's (> 1: pqfast faster), the median of the per-round ratios.

``--base FILE.npy`` uses another (n, d) array instead (its last 1,000 rows are
the queries, the rest the base), ``--out`` names the JSON file written
(default: benchmarks/results/single-query.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import bundled
from benchmarks.system import cpu_model, settle

HERE = Path(__file__).resolve().parent
NLIST = 379


def _per_call(index, queries: list) -> float:
    settle()
    t0 = time.perf_counter()
    for x in queries:
        index.search(x, 10)
    return (time.perf_counter() - t0) / len(queries)


def _pair(xb: np.ndarray, M: int) -> tuple:
    """faiss's IndexIVFPQ trained on xb and pqfast's with the same state, both
    holding xb."""
    import faiss

    import pqfast

    d = xb.shape[1]
    theirs = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, NLIST, M, 8)
    theirs.cp.niter = 10
    theirs.train(xb)
    theirs.add(xb)
    coarse = pqfast.IndexFlatL2(d)
    coarse.add(theirs.quantizer.reconstruct_n(0, NLIST))
    ours = pqfast.IndexIVFPQ(coarse, d, NLIST, M, 8)
    ours.pq.centroids = faiss.vector_to_array(theirs.pq.centroids).reshape(M, 256, -1)
    ours.add(xb)
    return ours, theirs


def main() -> None:
    import faiss

    import pqfast

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--base", type=Path, help="(n, d) .npy; last 1000 rows: queries"
    )
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "single-query.json"
    )
    args = parser.parse_args()
    if args.base is None:
        ds = bundled(500)
        xb, xq, data = ds.xb, ds.xq, "bundled MiniLM, 9k base"
    else:
        x = np.load(args.base).astype(np.float32)
        xb, xq, data = x[:-1000], x[-1000:], f"{args.base.name}, {len(x) - 1000} base"
    queries = [np.ascontiguousarray(xq[i : i + 1]) for i in range(0, 500, 2)]
    rows = []
    for M in (8, 16, 32):
        faiss.omp_set_num_threads(2)
        ours, theirs = _pair(xb, M)
        for threads in (1, 2):
            pqfast.omp_set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            for nprobe in (1, 4, 16, 64):
                ours.nprobe = theirs.nprobe = nprobe
                a, b = [], []
                for _ in range(7):
                    a.append(_per_call(ours, queries))
                    b.append(_per_call(theirs, queries))
                row = {
                    "M": M,
                    "threads": threads,
                    "nprobe": nprobe,
                    "pqfast_us": statistics.median(a) * 1e6,
                    "faiss_us": statistics.median(b) * 1e6,
                    "ratio": statistics.median(y / x for x, y in zip(a, b)),
                }
                rows.append(row)
                print(
                    f"M={M:2d} t={threads} nprobe={nprobe:3d}: "
                    f"pqfast {row['pqfast_us']:6.1f} us  "
                    f"faiss {row['faiss_us']:6.1f} us  ratio {row['ratio']:.2f}",
                    flush=True,
                )
    result = {
        "what": "IndexIVFPQ single-query search, same trained state, nlist 379, k 10",
        "data": data,
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "faiss_version": faiss.__version__,
        "pqfast_version": pqfast.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
