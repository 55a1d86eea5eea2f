"""Two-thread search on a machine where a CPU is shared: the OpenMP wait policy.

``python -m benchmarks.spin_wait`` times IndexIVFPQFastScan (IVF379,PQ16x4fs,
bundled data, nprobe 4, 1000 queries) at 2 threads, 40 batch calls 20 ms
apart and 40 one-query calls.  Run it as is, with GOMP_SPINCOUNT=10000 or
OMP_WAIT_POLICY=passive in the environment, and with a busy process on the
machine (``python3 -c "while True: pass" &``); PERFORMANCE.md ("Two threads
on a shared machine") has the figures.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.datasets import bundled


def main() -> None:
    import pqfast

    ds = bundled()
    xb, xq = ds.xb, ds.xq
    index = pqfast.index_factory(xb.shape[1], "IVF379,PQ16x4fs")
    index.train(xb)
    index.add(xb)
    pqfast.omp_set_num_threads(2)
    index.nprobe = 4
    batch = []
    for _ in range(40):
        time.sleep(0.02)
        t0 = time.perf_counter()
        index.search(xq, 10)
        batch.append(1e3 * (time.perf_counter() - t0))
    one = []
    for r in range(40):
        t0 = time.perf_counter()
        index.search(xq[r : r + 1], 10)
        one.append(1e6 * (time.perf_counter() - t0))
    spin = os.environ.get("GOMP_SPINCOUNT")
    policy = (
        f"GOMP_SPINCOUNT={spin}"
        if spin
        else os.environ.get("OMP_WAIT_POLICY", "default")
    )
    print(
        f"{policy}: batch median {np.median(batch):.1f} ms, p90"
        f" {np.percentile(batch, 90):.1f} ms; one query median {np.median(one):.0f} us"
    )


if __name__ == "__main__":
    main()
