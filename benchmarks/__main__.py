"""Command line: ``python -m benchmarks [--quick | --scaling] [options]``.

Without a mode flag the full sweep runs.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from benchmarks import datasets
from benchmarks.config import Settings, preset
from benchmarks.datasets import Dataset
from benchmarks.libraries import INDEX_KINDS, LIBRARY_NAMES
from benchmarks.plots import make_plots
from benchmarks.report import terminal_report, write_json, write_markdown
from benchmarks.runners import Results, run

HERE = Path(__file__).resolve().parent


def _ints(text: str) -> tuple[int, ...]:
    """'1,4,16' or '1e4,1e5' -> (1, 4, 16) / (10000, 100000)."""
    return tuple(int(float(t)) for t in text.split(",") if t.strip())


def _names(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(t.strip() for t in text.split(",") if t.strip())
        bad = [t for t in names if t not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad} not in {choices}")
        return names

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark pqfast against faiss and nanopq: IVFPQ, PQ, exact.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="small sweep on the bundled data (under 2 minutes)",
    )
    mode.add_argument(
        "--scaling",
        action="store_const",
        dest="mode",
        const="scaling",
        help="synthetic data at growing n: time and memory vs n",
    )
    p.set_defaults(mode="full")

    data = p.add_argument_group("data (default: bundled MiniLM embeddings)")
    src = data.add_mutually_exclusive_group()
    src.add_argument(
        "--data",
        metavar="PATH",
        help=".npy, TEXMEX .fvecs/.bvecs, or ann-benchmarks .hdf5",
    )
    src.add_argument(
        "--synthetic",
        metavar="N",
        type=lambda t: int(float(t)),
        help="seeded Gaussian-mixture data with N base vectors",
    )
    data.add_argument("--queries", metavar="PATH", help="query file for --data")
    data.add_argument(
        "--gt", metavar="PATH", help="ground-truth ids (.ivecs/.npy) for --data"
    )
    data.add_argument(
        "--dim", type=int, help="dimension of synthetic data (default 128)"
    )
    data.add_argument("--nq", type=int, help="number of queries (default 1000)")
    data.add_argument(
        "--max-n",
        type=lambda t: int(float(t)),
        help="read at most this many base vectors from --data",
    )
    data.add_argument(
        "--metric",
        choices=("l2", "ip", "both"),
        help="metric(s) to search with (default: the data's own)",
    )

    sweep = p.add_argument_group("sweep (overrides the mode's preset)")
    sweep.add_argument("--M", type=_ints, help="sub-quantizer counts, e.g. 8,16,32")
    sweep.add_argument("--nbits", type=_ints, help="bits per sub-code, e.g. 4,8")
    sweep.add_argument(
        "--nlist",
        type=_ints,
        help="nlist values (added to 4*sqrt(n) in full mode; replace it in quick mode)",
    )
    sweep.add_argument("--nprobe", type=_ints, help="nprobe values")
    sweep.add_argument("--k", type=_ints, help="k values")
    sweep.add_argument(
        "--threads", type=_ints, help="thread counts (default: 1 and all)"
    )
    sweep.add_argument("--libs", type=_names(LIBRARY_NAMES), help="e.g. pqfast,faiss")
    sweep.add_argument("--index", type=_names(INDEX_KINDS), help="e.g. IVFPQ,PQ,Flat")
    sweep.add_argument(
        "--repeats", type=int, help="interleaved search rounds (default 3)"
    )
    sweep.add_argument("--build-repeats", type=int, help="interleaved train+add rounds")
    sweep.add_argument(
        "--single-queries", type=int, help="single-query calls timed (200)"
    )
    sweep.add_argument(
        "--max-train",
        type=lambda t: int(float(t)),
        help="training sample size cap (default 1e5)",
    )
    sweep.add_argument(
        "--seed", type=int, help="seed of data, sample and k-means (1234)"
    )
    sweep.add_argument("--scaling-sizes", type=_ints, help="n values for --scaling")
    sweep.add_argument(
        "--faiss-scalar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time faiss at SIMD level NONE, report the faster "
        "(default: on in full mode)",
    )

    out = p.add_argument_group("output")
    out.add_argument(
        "--out", type=Path, default=HERE / "results", help="output directory"
    )
    out.add_argument(
        "--cache",
        type=Path,
        default=HERE / ".cache",
        help="ground-truth cache directory",
    )
    out.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The mode's preset with the command line's overrides."""
    metrics = {"both": ("l2", "ip"), None: None}.get(args.metric, (args.metric,))
    return preset(
        args.mode,
        Ms=args.M,
        nbits=args.nbits,
        nlists=args.nlist,
        auto_nlist=False if args.nlist and args.mode == "quick" else None,
        nprobes=args.nprobe,
        ks=args.k,
        metrics=metrics,
        kinds=args.index,
        libraries=args.libs,
        threads=args.threads,
        repeats=args.repeats,
        build_repeats=args.build_repeats,
        single_queries=args.single_queries,
        max_train=args.max_train,
        seed=args.seed,
        faiss_scalar=args.faiss_scalar,
        scaling_sizes=args.scaling_sizes,
        dim=args.dim,
        nq=args.nq,
        plots=False if args.no_plots else None,
        progress=False if args.no_progress else None,
    )


def dataset_loaders(
    args: argparse.Namespace, s: Settings
) -> list[Callable[[], Dataset]]:
    """Lazy loaders of the data sets the run covers."""
    if s.mode == "scaling":
        if args.data:
            raise SystemExit("--scaling uses synthetic data; drop --data.")
        return [
            partial(datasets.synthetic, n, s.dim, s.nq, s.seed) for n in s.scaling_sizes
        ]
    if args.synthetic:
        return [partial(datasets.synthetic, args.synthetic, s.dim, s.nq, s.seed)]
    if args.data:
        metric = s.metrics[0] if s.metrics else "l2"
        return [
            partial(
                datasets.load_file,
                args.data,
                s.nq,
                args.max_n,
                args.queries,
                args.gt,
                metric,
            )
        ]
    return [partial(datasets.bundled, s.nq)]


def main(argv: list[str] | None = None) -> Results:
    """Run the benchmark, print the table, write JSON, markdown and plots."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    settings = settings_from(args)
    start = time.perf_counter()
    results = run(settings, dataset_loaders(args, settings), args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = settings.mode
    plots = make_plots(results.records, args.out, prefix) if settings.plots else []
    if settings.plots and not plots and results.records:
        results.notes.append("matplotlib not installed: no plots")
    results.meta["wall_s"] = round(time.perf_counter() - start, 1)
    command = "python -m benchmarks " + shlex.join(argv)
    results.meta["command"] = command  # for python -m benchmarks.report
    write_json(results, args.out / f"results-{prefix}.json")
    write_markdown(results, args.out / f"report-{prefix}.md", plots, command)
    print(terminal_report(results))
    print(
        f"\n{len(results.records)} records in {results.meta['wall_s']} s; "
        f"wrote {args.out / f'results-{prefix}.json'}, report-{prefix}.md "
        f"and {len(plots)} plots"
    )
    return results


if __name__ == "__main__":
    main()
