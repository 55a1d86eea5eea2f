"""What to run: the quick / full / scaling presets and the index configurations.

`Settings` holds every knob of a run; `PRESETS` gives the three modes and the
command line overrides single fields.  `index_specs` expands the settings into
the `IndexSpec`s built for one data set and metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from benchmarks.libraries import INDEX_KINDS, LIBRARY_NAMES, IndexSpec
from benchmarks.system import available_cores


@dataclass(frozen=True)
class Settings:
    """Sweep and measurement protocol of one run.

    nlists are used in addition to nlist = 4 * sqrt(n) when `auto_nlist` is
    set; nprobe values above nlist are skipped.  `threads` lists the OpenMP
    thread counts each configuration is measured at; `repeats` (searches) and
    `build_repeats` (train + add) are interleaved across libraries and their
    medians reported.
    """

    mode: str
    Ms: tuple[int, ...] = (16,)
    nbits: tuple[int, ...] = (8,)
    nlists: tuple[int, ...] = ()
    auto_nlist: bool = True
    nprobes: tuple[int, ...] = (1, 4, 16, 64)
    ks: tuple[int, ...] = (10,)
    metrics: tuple[str, ...] | None = None  # None: the data set's own
    kinds: tuple[str, ...] = INDEX_KINDS
    libraries: tuple[str, ...] = LIBRARY_NAMES
    threads: tuple[int, ...] = ()  # () : 1 and all cores
    repeats: int = 3
    build_repeats: int = 3
    single_queries: int = 200
    max_train: int = 100_000
    seed: int = 1234
    faiss_scalar: bool = False
    scaling_sizes: tuple[int, ...] = (10_000, 30_000, 100_000, 300_000, 1_000_000)
    dim: int = 128
    nq: int = 1000
    plots: bool = True
    progress: bool = True

    @property
    def thread_counts(self) -> tuple[int, ...]:
        """Thread counts to measure at, ascending and without duplicates."""
        return tuple(sorted(set(self.threads or (1, available_cores()))))


PRESETS: dict[str, Settings] = {
    "quick": Settings(mode="quick", nq=500),
    "full": Settings(
        mode="full",
        Ms=(8, 16, 32),
        nbits=(4, 8),
        nprobes=(1, 2, 4, 8, 16, 32, 64, 128),
        ks=(1, 10, 100),
        faiss_scalar=True,
    ),
    "scaling": Settings(
        mode="scaling",
        nprobes=(16,),
        metrics=("l2",),
        kinds=("IVFPQ", "PQ"),
        threads=(available_cores(),),
        build_repeats=1,
    ),
}


def preset(mode: str, **overrides: object) -> Settings:
    """The preset for `mode` with the non-None `overrides` applied."""
    return replace(
        PRESETS[mode], **{k: v for k, v in overrides.items() if v is not None}
    )


def auto_nlist(n: int) -> int:
    """faiss's rule of thumb: about 4 * sqrt(n) inverted lists."""
    return max(1, round(4 * math.sqrt(n)))


def index_specs(
    settings: Settings, d: int, n: int, n_train: int, metric: str
) -> tuple[list[IndexSpec], list[str]]:
    """Index configurations for one data set and metric, and why any were dropped."""
    specs: list[IndexSpec] = []
    dropped: list[str] = []
    nlists = sorted(
        {*settings.nlists, *((auto_nlist(n),) if settings.auto_nlist else ())}
    )
    for kind in settings.kinds:
        if kind == "Flat":
            specs.append(IndexSpec("Flat", d, metric, seed=settings.seed))
            continue
        for M in settings.Ms:
            if M > d or d % M:
                dropped.append(f"M={M}: d={d} is not a multiple")
                continue
            for nbits in (4,) if kind.endswith("fs") else settings.nbits:
                if n_train < 2**nbits:
                    dropped.append(f"nbits={nbits}: only {n_train} training vectors")
                    continue
                base = IndexSpec(kind, d, metric, M, nbits, seed=settings.seed)
                if kind in ("PQ", "PQfs"):
                    specs.append(base)
                    continue
                for nlist in nlists:
                    if nlist > n_train:
                        dropped.append(
                            f"nlist={nlist}: only {n_train} training vectors"
                        )
                    else:
                        specs.append(replace(base, nlist=nlist))
    return specs, sorted(set(dropped))


def nprobes_for(settings: Settings, spec: IndexSpec) -> list[int | None]:
    """nprobe values searched for `spec` (None for indexes without nprobe)."""
    if spec.nlist is None:
        return [None]
    return [p for p in settings.nprobes if p <= spec.nlist] or [spec.nlist]
