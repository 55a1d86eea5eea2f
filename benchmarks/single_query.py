"""Single-query IndexIVFPQ search time, pqfast against faiss, side by side.

``python -m benchmarks.single_query`` trains faiss's IndexIVFPQ on the bundled
MiniLM base (d=384, nlist=379, M=16), copies its coarse centroids and codebooks
into pqfast's, adds the base to both and times ``search(x, 10)`` one query at a
time (250 queries), interleaved, 7 rounds, at nprobe 1, 4, 16, 32 and at 1 and
2 threads.  ``ratio`` is faiss's time over pqfast's (> 1: pqfast faster), the
median of the per-round ratios.  Results go to
benchmarks/results/single-query.json.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.datasets import bundled
from benchmarks.system import cpu_model, settle

HERE = Path(__file__).resolve().parent


def _per_call(index, queries: list) -> float:
    settle()
    t0 = time.perf_counter()
    for x in queries:
        index.search(x, 10)
    return (time.perf_counter() - t0) / len(queries)


def main() -> None:
    import faiss

    import pqfast

    ds = bundled(500)
    d, M, nlist = 384, 16, 379
    theirs = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, M, 8)
    theirs.cp.niter = 10
    theirs.train(ds.xb)
    theirs.add(ds.xb)
    coarse = pqfast.IndexFlatL2(d)
    coarse.add(theirs.quantizer.reconstruct_n(0, nlist))
    ours = pqfast.IndexIVFPQ(coarse, d, nlist, M, 8)
    ours.pq.centroids = faiss.vector_to_array(theirs.pq.centroids).reshape(M, 256, -1)
    ours.add(ds.xb)
    queries = [np.ascontiguousarray(ds.xq[i : i + 1]) for i in range(0, 500, 2)]
    rows = []
    for threads in (1, 2):
        pqfast.omp_set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        for nprobe in (1, 4, 16, 32):
            ours.nprobe = theirs.nprobe = nprobe
            a, b = [], []
            for _ in range(7):
                a.append(_per_call(ours, queries))
                b.append(_per_call(theirs, queries))
            row = {
                "threads": threads,
                "nprobe": nprobe,
                "pqfast_us": statistics.median(a) * 1e6,
                "faiss_us": statistics.median(b) * 1e6,
                "ratio": statistics.median(y / x for x, y in zip(a, b)),
            }
            rows.append(row)
            print(
                f"t={threads} nprobe={nprobe:3d}: pqfast {row['pqfast_us']:6.1f} us  "
                f"faiss {row['faiss_us']:6.1f} us  ratio {row['ratio']:.2f}",
                flush=True,
            )
    out = HERE / "results" / "single-query.json"
    result = {
        "what": "IndexIVFPQ single-query search, bundled data, same trained state",
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "faiss_version": faiss.__version__,
        "pqfast_version": pqfast.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
