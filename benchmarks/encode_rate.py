"""Encoding throughput of pqfast against faiss, side by side.

``python -m benchmarks.encode_rate`` encodes seeded Gaussian-mixture vectors
(``benchmarks.datasets.synthetic``) with the same codebooks (8 bits, or
``--nbits``) in both
libraries (trained once by faiss on a sample, then copied into pqfast) and
times, interleaved round by round and at 1 and 2 threads:

* ``ProductQuantizer.compute_codes`` for each (d, M) of the sweep
  (d = 128 and 384, M = 8, 16, 32: dsub 4 to 48);
* ``IndexPQ.add`` and ``IndexIVFPQ.add`` (nlist 1024, same coarse centroids)
  for one configuration at a larger n (default 10^6 x 128, M = 16).

Figures are medians of ``--repeats`` rounds; ``ratio`` is pqfast's rate over
faiss's (> 1: pqfast faster), the median of the per-round ratios.  It also
counts codes that differ from faiss's (float32 ties) and between 1 and 2
threads (must be 0).  Results go to benchmarks/results/encode-rate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.datasets import synthetic
from benchmarks.system import available_cores, cpu_model, settle

HERE = Path(__file__).resolve().parent


def _timed(fn: Callable[[], object]) -> float:
    settle()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _interleaved(ours: Callable, theirs: Callable, n: int, repeats: int) -> dict:
    """Rates (vectors/s) of two callables timed in alternating rounds."""
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(_timed(ours))
        t_theirs.append(_timed(theirs))
    return {
        "pqfast_vectors_per_s": n / statistics.median(t_ours),
        "faiss_vectors_per_s": n / statistics.median(t_theirs),
        "ratio": statistics.median(b / a for a, b in zip(t_ours, t_theirs)),
        "pqfast_s": t_ours,
        "faiss_s": t_theirs,
    }


def _set_threads(n: int) -> None:
    import faiss

    import pqfast

    pqfast.omp_set_num_threads(n)
    faiss.omp_set_num_threads(n)


def _trained_pq(x: np.ndarray, M: int, n_train: int, nbits: int = 8):
    """A faiss ProductQuantizer trained on a sample, and pqfast's copy of it."""
    import faiss

    import pqfast

    fpq = faiss.ProductQuantizer(x.shape[1], M, nbits)
    fpq.cp.niter = 10
    fpq.train(x[:n_train])
    ours = pqfast.ProductQuantizer(x.shape[1], M, nbits)
    ours.centroids = faiss.vector_to_array(fpq.centroids).reshape(M, 1 << nbits, -1)
    return ours, fpq


def measure_encode(
    d: int, M: int, n: int, threads: list[int], repeats: int, nbits: int = 8
) -> list:
    """compute_codes rows for one (d, M), one per thread count."""
    x = synthetic(n, d, nq=1).xb
    ours, theirs = _trained_pq(x, M, min(n, 20_000), nbits)
    rows, codes = [], {}
    for t in threads:
        _set_threads(t)
        row = {"what": "compute_codes", "d": d, "M": M, "dsub": d // M, "n": n}
        row["nbits"] = nbits
        row["threads"] = t
        row.update(
            _interleaved(
                lambda: ours.compute_codes(x),
                lambda: theirs.compute_codes(x),
                n,
                repeats,
            )
        )
        codes[t] = ours.compute_codes(x)
        row["codes_differing_from_faiss"] = int(
            np.any(codes[t] != theirs.compute_codes(x), axis=1).sum()
        )
        rows.append(row)
    if len(codes) > 1:
        first = codes[threads[0]]
        for row in rows:
            row["codes_differing_across_threads"] = int(
                np.any(codes[row["threads"]] != first, axis=1).sum()
            )
    return rows


def measure_add(d: int, M: int, n: int, nlist: int, threads: list[int], repeats: int):
    """IndexPQ.add and IndexIVFPQ.add rows for one (d, M)."""
    import faiss

    import pqfast

    x = synthetic(n, d, nq=1).xb
    sample = x[: min(n, 50 * nlist)]
    fivf = faiss.IndexIVFPQ(faiss.IndexFlatL2(d), d, nlist, M, 8)
    fivf.cp.niter = fivf.pq.cp.niter = 10
    fivf.train(sample)
    codebooks = faiss.vector_to_array(fivf.pq.centroids).reshape(M, 256, -1)
    coarse = pqfast.IndexFlatL2(d)
    coarse.add(fivf.quantizer.reconstruct_n(0, nlist))
    ivf = pqfast.IndexIVFPQ(coarse, d, nlist, M, 8)
    ivf.pq.centroids = codebooks
    fpq = faiss.IndexPQ(d, M, 8)
    faiss.copy_array_to_vector(codebooks.ravel(), fpq.pq.centroids)
    fpq.is_trained = True
    opq = pqfast.IndexPQ(d, M, 8)
    opq.pq.centroids = codebooks

    def add(index):
        def run():
            index.reset()
            index.add(x)

        return run

    rows = []
    for t in threads:
        _set_threads(t)
        for what, a, b in (("IndexPQ.add", opq, fpq), ("IndexIVFPQ.add", ivf, fivf)):
            row = {"what": what, "d": d, "M": M, "dsub": d // M, "n": n, "threads": t}
            if what == "IndexIVFPQ.add":
                row["nlist"] = nlist
            row.update(_interleaved(add(a), add(b), n, repeats))
            rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.encode_rate", description=__doc__
    )
    p.add_argument("--n", type=int, default=200_000, help="vectors per encode row")
    p.add_argument("--configs", default="128x8,128x16,128x32,384x8,384x16,384x32")
    p.add_argument("--add-n", type=int, default=1_000_000)
    p.add_argument("--add-config", default="128x16", help="dxM of the add rows")
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument(
        "--nbits", type=int, default=8, help="bits per sub-code of the encode rows"
    )
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(HERE / "results" / "encode-rate.json"))
    a = p.parse_args()
    import faiss

    import pqfast

    threads = [int(t) for t in a.threads.split(",")]
    configs = [tuple(int(v) for v in c.split("x")) for c in a.configs.split(",") if c]
    started = time.time()
    rows = []
    for d, M in configs:
        rows += measure_encode(d, M, a.n, threads, a.repeats, a.nbits)
        _print(rows[-len(threads) :])
    if a.add_n > 0:
        d, M = (int(v) for v in a.add_config.split("x"))
        rows += measure_add(d, M, a.add_n, a.nlist, threads, a.repeats)
        _print(rows[-2 * len(threads) :])
    result = {
        "what": f"{a.nbits}-bit PQ encoding rate, pqfast vs faiss (same codebooks;"
        " add rows 8-bit)",
        "cpu": cpu_model(),
        "cores": available_cores(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        "faiss_version": faiss.__version__,
        "faiss_simd_level": faiss.SIMDConfig.get_level_name()
        if hasattr(faiss, "SIMDConfig")
        else None,
        "pqfast_version": pqfast.__version__,
        "repeats": a.repeats,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": time.time() - started,
        "rows": rows,
    }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


def _print(rows: list[dict]) -> None:
    for r in rows:
        extra = ""
        if "codes_differing_from_faiss" in r:
            extra = f"  differ(faiss)={r['codes_differing_from_faiss']}"
        if "codes_differing_across_threads" in r:
            extra += f" differ(threads)={r['codes_differing_across_threads']}"
        print(
            f"{r['what']:>15} d={r['d']:<4} M={r['M']:<3} dsub={r['dsub']:<3} "
            f"t={r['threads']}  pqfast {r['pqfast_vectors_per_s'] / 1e6:6.2f} M/s  "
            f"faiss {r['faiss_vectors_per_s'] / 1e6:6.2f} M/s  "
            f"ratio {r['ratio']:.2f}{extra}",
            flush=True,
        )


if __name__ == "__main__":
    main()
