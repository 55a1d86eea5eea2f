"""Scan rate of exhaustive 8-bit PQ search, per core, against faiss and the CPU's limit.

``python -m benchmarks.scan_rate`` times IndexPQ.search on one thread for
pqfast and faiss (faiss at its default SIMD level and, where the API exists,
at its scalar level, which scans 8-bit codes faster on some CPUs) and reports
codes scanned per second: for the batch, and for single queries (searched
one at a time, so a call's fixed cost, about 10 us for pqfast, is included).
The lookup-and-add limit is the load-port model of PERFORMANCE-FACTS.md:
two loads (code byte, table entry) per sub-quantizer, three loads per
cycle, at the CPU's sustained clock (--ghz; the VM's /proc/cpuinfo shows
only the nominal one).  Results go to
benchmarks/results/scan-rate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.system import cpu_model, settle

HERE = Path(__file__).resolve().parent


def _time_search(index, xq: np.ndarray, k: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        settle()
        t0 = time.perf_counter()
        index.search(xq, k)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_one_by_one(index, xq: np.ndarray, k: int) -> float:
    """Seconds per query when the queries are searched one call each."""
    settle()
    t0 = time.perf_counter()
    for i in range(xq.shape[0]):
        index.search(xq[i : i + 1], k)
    return (time.perf_counter() - t0) / xq.shape[0]


def measure(
    n: int, nq: int, d: int, Ms: list[int], k: int, repeats: int, ghz: float
) -> dict:
    import faiss

    import pqfast

    pqfast.omp_set_num_threads(1)
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    simd = getattr(faiss, "SIMDConfig", None)
    default_level = simd.get_level() if simd is not None else None
    rows = []
    for M in Ms:
        codebooks = rng.standard_normal((M, 256, d // M)).astype(np.float32)
        ours = pqfast.IndexPQ(d, M, 8)
        ours.pq.centroids = codebooks
        ours.add(xb)
        theirs = faiss.IndexPQ(d, M, 8)
        faiss.copy_array_to_vector(codebooks.ravel(), theirs.pq.centroids)
        theirs.is_trained = True
        theirs.add(xb)
        t_ours, t_theirs, t_scalar = [], [], []
        one_ours, one_theirs, one_scalar = [], [], []
        for _ in range(repeats):  # interleaved rounds
            t_ours.append(_time_search(ours, xq, k, 1))
            t_theirs.append(_time_search(theirs, xq, k, 1))
            one_ours.append(_time_one_by_one(ours, xq, k))
            one_theirs.append(_time_one_by_one(theirs, xq, k))
            if simd is not None:
                simd.set_level(faiss.SIMDLevel_NONE)
                t_scalar.append(_time_search(theirs, xq, k, 1))
                one_scalar.append(_time_one_by_one(theirs, xq, k))
                simd.set_level(default_level)
        rate = lambda ts: n * nq / statistics.median(ts) if ts else None  # noqa: E731
        one = lambda ts: n / statistics.median(ts) if ts else None  # noqa: E731
        row = {
            "M": M,
            "pqfast_codes_per_s": rate(t_ours),
            "faiss_codes_per_s": rate(t_theirs),
            "faiss_scalar_codes_per_s": rate(t_scalar),
            "pqfast_one_query_codes_per_s": one(one_ours),
            "faiss_one_query_codes_per_s": one(one_theirs),
            "faiss_scalar_one_query_codes_per_s": one(one_scalar),
            "load_port_limit_codes_per_s": ghz * 1e9 * 3 / (2 * M),
        }
        best_faiss = max(
            r for r in (row["faiss_codes_per_s"], row["faiss_scalar_codes_per_s"]) if r
        )
        row["pqfast_vs_best_faiss"] = row["pqfast_codes_per_s"] / best_faiss
        row["pqfast_fraction_of_limit"] = (
            row["pqfast_codes_per_s"] / row["load_port_limit_codes_per_s"]
        )
        rows.append(row)
    return {
        "what": "IndexPQ 8-bit exhaustive search, 1 thread, codes scanned per second",
        "n": n,
        "nq": nq,
        "d": d,
        "k": k,
        "repeats": repeats,
        "cpu": cpu_model(),
        "assumed_ghz": ghz,
        "faiss_version": faiss.__version__,
        "pqfast_version": pqfast.__version__,
        "faiss_simd_level": simd.get_level_name() if simd is not None else None,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scan_rate", description=__doc__
    )
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--nq", type=int, default=100)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--M", default="8,16,32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--ghz",
        type=float,
        default=3.67,
        help="sustained clock for the limit (PERFORMANCE-FACTS.md: 3.67)",
    )
    p.add_argument("--out", default=str(HERE / "results" / "scan-rate.json"))
    a = p.parse_args()
    Ms = [int(m) for m in a.M.split(",")]
    result = measure(a.n, a.nq, a.d, Ms, 10, a.repeats, a.ghz)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    head = ("M", "pqfast", "faiss", "faiss scalar", "limit")
    for title, suffix in (("batch", ""), ("one query a call", "_one_query")):
        print(f"{title}, codes scanned per second:")
        print(f"{head[0]:>3} {head[1]:>12} {head[2]:>12} {head[3]:>13} {head[4]:>12}")
        keys = ("pqfast", "faiss", "faiss_scalar")
        for r in result["rows"]:
            rates = [r[f"{key}{suffix}_codes_per_s"] for key in keys]
            rates.append(r["load_port_limit_codes_per_s"])
            cells = [f"{v / 1e6:10.0f} M" if v else "         -" for v in rates]
            print(f"{r['M']:>3} " + " ".join(cells))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
