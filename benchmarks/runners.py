"""The measurement protocol.

For each data set, metric, index configuration and thread count:

1. build: `build_repeats` rounds, each creating, training and filling the
   index once per library in turn (pqfast, faiss, nanopq, pqfast, ...), so
   that drifting machine load hits every library alike;
2. for each nprobe and k, `repeats` rounds of: the whole query batch in one
   call, then a fixed sample of single-query calls, again library by library;
3. one record per library with medians, recall against the ground truth,
   memory, and pqfast/faiss ratios taken as the median of per-round ratios.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from benchmarks.config import Settings, index_specs, nprobes_for
from benchmarks.datasets import Dataset
from benchmarks.groundtruth import GroundTruth, ground_truth, recall
from benchmarks.libraries import Faiss, IndexSpec, Library, load_libraries
from benchmarks.system import (
    Progress,
    available_cores,
    captured_chatter,
    cpu_model,
    peak_rss_mb,
    settle,
)

Record = dict[str, Any]
T = TypeVar("T")


@dataclass
class Results:
    """What a run produced: run-wide facts, one record per configuration, notes."""

    meta: dict[str, Any]
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_meta(libs: list[Library], settings: Settings) -> dict[str, Any]:
    """Machine, versions and protocol shared by every record of a run."""
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    versions.update({lib.name: lib.version for lib in libs})
    faiss = next((lib for lib in libs if isinstance(lib, Faiss)), None)
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": available_cores(),
        "platform": platform.platform(),
        "versions": versions,
        "faiss_simd_level": faiss.simd_level() if faiss else None,
        "settings": asdict(settings),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    """1/5/15-minute load averages: a busy machine makes timings unreliable."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


@contextlib.contextmanager
def thread_count(n: int, libs: list[Library]) -> Iterator[None]:
    """Run the block with `n` OpenMP threads in every library and <= n BLAS threads."""
    for lib in libs:
        lib.set_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limit: contextlib.AbstractContextManager = contextlib.nullcontext()
    else:
        limit = threadpool_limits(limits=n, user_api="blas")
    try:
        with limit:
            yield
    finally:
        for lib in libs:
            lib.set_threads(available_cores())


def _timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """Wall time and result of fn(*args), started once the process is idle."""
    settle()
    t0 = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t0, result


def _single_queries(
    lib: Library, index: Any, xq: NDArray[np.float32], rows: NDArray[np.int64], k: int
) -> None:
    """Search the given query rows one call each."""
    for i in rows:
        lib.search(index, xq[i : i + 1], k)


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _rate(count: int, seconds: float | None) -> float | None:
    return count / seconds if seconds else None


def _paired_speedup(ours: list[float], theirs: list[float]) -> float | None:
    """Median over rounds of theirs/ours seconds (>1: ours is faster)."""
    return _median([t / o for o, t in zip(ours, theirs) if o > 0])


@dataclass
class Built:
    """One library's index for a configuration and its build timings."""

    index: Any
    train_s: list[float] = field(default_factory=list)
    add_s: list[float] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


def build(
    libs: list[Library],
    spec: IndexSpec,
    xt: NDArray[np.float32],
    xb: NDArray[np.float32],
    rounds: int,
    notes: set[str],
) -> dict[str, Built]:
    """Build every library's index `rounds` times, interleaved; keep the last ones."""
    built = {lib.name: Built(None) for lib in libs}
    for _ in range(rounds):
        for lib in libs:
            b = built[lib.name]
            b.index = None
            gc.collect()
            index = lib.create(spec)
            with captured_chatter(notes):
                if spec.kind != "Flat":  # exact search has nothing to train
                    b.train_s.append(_timed(lib.train, index, xt)[0])
                b.add_s.append(_timed(lib.add, index, xb)[0])
            b.index = index
            b.figures = {
                "index_bytes": lib.index_bytes(index, spec),
                "serialized_bytes": lib.serialized_bytes(index),
                "peak_rss_mb": round(peak_rss_mb(), 1),
            }
    return built


@dataclass
class Searched:
    """One library's search timings for a (nprobe, k) point and its first result."""

    batch_s: list[float]
    single_s: list[float]
    variant: str
    ids: NDArray[np.int64]


def search(
    libs: list[Library],
    built: dict[str, Built],
    xq: NDArray[np.float32],
    sample: NDArray[np.int64],
    nprobe: int | None,
    k: int,
    rounds: int,
) -> dict[str, Searched]:
    """Time batch and single-query search, interleaved across libraries.

    A library with several variants (faiss SIMD levels) is timed under each in
    every round; the variant with the lower median batch time is reported.
    """
    times: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    first: dict[str, NDArray[np.int64]] = {}
    for _ in range(rounds):
        for lib in libs:
            index = built[lib.name].index
            lib.set_nprobe(index, nprobe)
            for name, variant in lib.variants():
                batch, single = times.setdefault((lib.name, name), ([], []))
                with variant():
                    seconds, (_, ids) = _timed(lib.search, index, xq, k)
                    batch.append(seconds)
                    first.setdefault(lib.name, ids)
                    single.append(_timed(_single_queries, lib, index, xq, sample, k)[0])
    out: dict[str, Searched] = {}
    for lib in libs:
        name = min(
            (v for v, _ in lib.variants()),
            key=lambda v, lib=lib: _median(times[(lib.name, v)][0]),
        )
        batch, single = times[(lib.name, name)]
        out[lib.name] = Searched(batch, single, name, first[lib.name])
    return out


@dataclass(frozen=True)
class Setup:
    """What all measurements of one index configuration share."""

    ds: Dataset
    truth: GroundTruth
    xt: NDArray[np.float32]
    settings: Settings
    threads: int


def _record(
    lib: Library,
    spec: IndexSpec,
    setup: Setup,
    b: Built,
    s: Searched,
    nprobe: int | None,
    k: int,
    n_single: int,
) -> Record:
    ds = setup.ds
    add_s, batch_s = _median(b.add_s), _median(s.batch_s)
    return {
        "dataset": ds.name,
        "family": ds.family,
        "n": ds.n,
        "d": ds.d,
        "nq": ds.nq,
        "n_train": setup.xt.shape[0],
        "metric": spec.metric,
        "library": lib.name,
        "library_version": lib.version,
        "index": spec.kind,
        "M": spec.M,
        "nbits": spec.nbits,
        "nlist": spec.nlist,
        "nprobe": nprobe,
        "k": k,
        "threads": setup.threads,
        "variant": s.variant,
        "train_s": _median(b.train_s),
        "add_s": add_s,
        "add_vectors_per_s": _rate(ds.n, add_s),
        "search_batch_s": batch_s,
        "search_batch_qps": _rate(ds.nq, batch_s),
        "search_single_qps": _rate(n_single, _median(s.single_s)),
        "single_queries": n_single,
        **recall(s.ids, setup.truth, ds, spec.metric),
        **b.figures,
        "bytes_per_vector": b.figures["index_bytes"] / ds.n,
        "ground_truth": setup.truth.source,
        "raw_seconds": {
            "train": b.train_s,
            "add": b.add_s,
            "search_batch": s.batch_s,
            "search_single": s.single_s,
        },
        "speedup_vs_faiss": None,
    }


def _add_speedups(
    records: list[Record], built: dict[str, Built], searched: dict[str, Searched]
) -> None:
    """pqfast's throughput over faiss's for the same configuration and rounds."""
    if "pqfast" not in searched or "faiss" not in searched:
        return
    bp, bf = built["pqfast"], built["faiss"]
    sp, sf = searched["pqfast"], searched["faiss"]
    speedup = {
        "train": _paired_speedup(bp.train_s, bf.train_s),
        "add": _paired_speedup(bp.add_s, bf.add_s),
        "search_batch": _paired_speedup(sp.batch_s, sf.batch_s),
        "search_single": _paired_speedup(sp.single_s, sf.single_s),
    }
    for rec in records:
        if rec["library"] == "pqfast":
            rec["speedup_vs_faiss"] = speedup


def measure(
    libs: list[Library], spec: IndexSpec, setup: Setup, notes: set[str]
) -> list[Record]:
    """All records of one index configuration at one thread count."""
    settings, ds = setup.settings, setup.ds
    n_single = min(settings.single_queries, ds.nq)
    sample = np.linspace(0, ds.nq - 1, n_single).astype(np.int64)
    records: list[Record] = []
    with thread_count(setup.threads, libs):
        built = build(libs, spec, setup.xt, ds.xb, settings.build_repeats, notes)
        for nprobe in nprobes_for(settings, spec):
            for k in settings.ks:
                searched = search(
                    libs, built, ds.xq, sample, nprobe, k, settings.repeats
                )
                point = [
                    _record(
                        lib,
                        spec,
                        setup,
                        built[lib.name],
                        searched[lib.name],
                        nprobe,
                        k,
                        n_single,
                    )
                    for lib in libs
                ]
                _add_speedups(point, built, searched)
                records.extend(point)
    return records


def _users(
    libs: list[Library], spec: IndexSpec, threads: int, lowest: int
) -> list[Library]:
    """Libraries measured for `spec` at `threads` (unthreaded ones at `lowest` only)."""
    return [
        lib
        for lib in libs
        if spec.kind in lib.kinds and (lib.threaded or threads == lowest)
    ]


def run(
    settings: Settings,
    datasets: Iterable[Callable[[], Dataset]],
    cache_dir: Path | None,
    log: Callable[[str], None] = print,
) -> Results:
    """Run the benchmark over lazily loaded data sets and collect the results."""
    libs, skipped = load_libraries(list(settings.libraries), settings.faiss_scalar)
    for msg in skipped:
        log(msg)
    results = Results(run_meta(libs, settings))
    notes: set[str] = set()
    shared = {key: results.meta[key] for key in ("date", "cpu", "cores")}
    for load in datasets:
        ds = load()
        xt = ds.train_sample(settings.max_train, settings.seed)
        log(f"{ds.name}: n={ds.n} d={ds.d} nq={ds.nq} train={xt.shape[0]}")
        for metric in settings.metrics or ds.metrics:
            specs, dropped = index_specs(settings, ds.d, ds.n, xt.shape[0], metric)
            results.notes.extend(f"{ds.name}: {why}, skipped" for why in dropped)
            truth = ground_truth(ds, metric, cache_dir, settings.progress)
            units = [
                (spec, t, users)
                for spec in specs
                for t in settings.thread_counts
                if (users := _users(libs, spec, t, settings.thread_counts[0]))
            ]
            with Progress(len(units), f"{ds.name} {metric}", settings.progress) as bar:
                for spec, threads, users in units:
                    bar.update(0, f"{spec.label()} threads={threads}")
                    setup = Setup(ds, truth, xt, settings, threads)
                    for rec in measure(users, spec, setup, notes):
                        rec.update(
                            shared,
                            mode=settings.mode,
                            versions=results.meta["versions"],
                        )
                        results.records.append(rec)
                    bar.update()
        del ds, xt
        gc.collect()
    results.notes.extend(sorted(notes))
    results.notes[:0] = skipped + [
        f"{lib.name} has no thread setting: measured at "
        f"{settings.thread_counts[0]} thread(s) only"
        for lib in libs
        if not lib.threaded and len(settings.thread_counts) > 1
    ]
    results.meta["loadavg_end"] = _loadavg()
    return results
