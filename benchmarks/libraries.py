"""Adapters giving pqfast, faiss and nanopq one interface for the runner.

pqfast and faiss share faiss's Python API, so one adapter drives both; the
faiss subclass adds SIMD-level variants.  nanopq (pure NumPy PQ) gets its own
adapter.  Each library is imported lazily and skipped, with a message, when it
is not installed.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.groundtruth import smallest_k

INDEX_KINDS = ("IVFPQ", "IVFPQfs", "PQ", "PQfs", "Flat")  # fs: 4-bit fast scan
LIBRARY_NAMES = ("pqfast", "faiss", "nanopq")

SearchResult = tuple[NDArray[np.float32], NDArray[np.int64]]
Variant = tuple[str, Callable[[], AbstractContextManager]]


@dataclass(frozen=True)
class IndexSpec:
    """One index configuration, identical for every library that builds it."""

    kind: str  # "IVFPQ", "PQ", their 4-bit fast-scan "IVFPQfs"/"PQfs", or "Flat"
    d: int
    metric: str  # "l2" or "ip"
    M: int | None = None
    nbits: int | None = None
    nlist: int | None = None
    seed: int = 1234

    def label(self) -> str:
        parts = [self.kind, self.metric]
        if self.M is not None:
            parts.append(f"M{self.M}x{self.nbits}")
        if self.nlist is not None:
            parts.append(f"nlist{self.nlist}")
        return " ".join(parts)


class Library:
    """Interface: build, fill, search and measure one library's indexes."""

    name: str = ""
    kinds: tuple[str, ...] = ()
    threaded = True  # False: no thread setting, measured at one thread count only

    def __init__(self, module: ModuleType) -> None:
        self.module = module

    @property
    def version(self) -> str:
        return str(getattr(self.module, "__version__", "unknown"))

    def set_threads(self, n: int) -> None:
        """Set the library's OpenMP thread count (no-op where it has none)."""

    def variants(self) -> list[Variant]:
        """Settings a search is timed under; the fastest is reported."""
        return [("default", contextlib.nullcontext)]

    def create(self, spec: IndexSpec) -> Any:
        raise NotImplementedError

    def train(self, index: Any, xt: NDArray[np.float32]) -> None:
        index.train(xt)

    def add(self, index: Any, xb: NDArray[np.float32]) -> None:
        index.add(xb)

    def set_nprobe(self, index: Any, nprobe: int | None) -> None:
        if nprobe is not None:
            index.nprobe = nprobe

    def search(self, index: Any, xq: NDArray[np.float32], k: int) -> SearchResult:
        return index.search(xq, k)

    def index_bytes(self, index: Any, spec: IndexSpec) -> int:
        """Bytes the index holds for its vectors (codes and, for IVF, ids, and
        the L2 list terms: faiss's precomputed table, pqfast's per-code terms
        or table, whichever it holds)."""
        raise NotImplementedError

    def serialized_bytes(self, index: Any) -> int | None:
        """Size of the index serialized by the library, None if it cannot."""
        return None


class FaissAPI(Library):
    """pqfast or faiss: both expose IndexFlat*/IndexPQ/IndexIVFPQ as faiss does."""

    kinds = INDEX_KINDS

    def __init__(self, module: ModuleType) -> None:
        super().__init__(module)
        self.name = module.__name__

    def set_threads(self, n: int) -> None:
        self.module.omp_set_num_threads(n)

    def _flat(self, d: int, metric: str) -> Any:
        return (
            self.module.IndexFlatL2(d) if metric == "l2" else self.module.IndexFlatIP(d)
        )

    def create(self, spec: IndexSpec) -> Any:
        m = self.module
        metric = m.METRIC_L2 if spec.metric == "l2" else m.METRIC_INNER_PRODUCT
        if spec.kind == "Flat":
            return self._flat(spec.d, spec.metric)
        if spec.kind == "PQ":
            index = m.IndexPQ(spec.d, spec.M, spec.nbits, metric)
        elif spec.kind == "PQfs":
            index = m.IndexPQFastScan(spec.d, spec.M, 4, metric)
        else:
            ivf = m.IndexIVFPQFastScan if spec.kind == "IVFPQfs" else m.IndexIVFPQ
            index = ivf(
                self._flat(spec.d, spec.metric),
                spec.d,
                spec.nlist,
                spec.M,
                spec.nbits,
                metric,
            )
        for part in (index, getattr(index, "pq", None)):
            if hasattr(part, "cp"):  # ClusteringParameters (faiss and pqfast)
                part.cp.seed = spec.seed
            elif hasattr(part, "seed"):  # pqfast
                part.seed = spec.seed
        return index

    def index_bytes(self, index: Any, spec: IndexSpec) -> int:
        if spec.kind == "Flat":
            return index.ntotal * spec.d * 4
        if spec.kind in ("PQ", "PQfs"):
            return index.ntotal * index.code_size
        held = getattr(index, "nbytes", None)  # pqfast reports it
        if held is not None:
            return int(held)
        table = getattr(index, "precomputed_table", None)
        table_bytes = 0 if table is None else 4 * int(table.size())
        if spec.kind == "IVFPQfs":
            # faiss's BlockInvertedLists give each list whole blocks of bbs
            # codes (bbs * ceil(M / 2) bytes each), as pqfast's do
            inv = index.invlists
            sizes = np.array([inv.list_size(i) for i in range(index.nlist)])
            block = index.bbs * ((index.pq.M + 1) // 2)
            codes = (-(-sizes // index.bbs)).sum() * block + 8 * sizes.sum()
            return int(codes) + table_bytes
        return index.ntotal * (index.code_size + 8) + table_bytes

    def serialized_bytes(self, index: Any) -> int | None:
        serialize = getattr(self.module, "serialize_index", None)
        return None if serialize is None else int(np.asarray(serialize(index)).nbytes)


class Faiss(FaissAPI):
    """faiss, optionally also timed at its scalar SIMD level (SIMDConfig API)."""

    def __init__(self, module: ModuleType, scalar_variant: bool = False) -> None:
        super().__init__(module)
        self.scalar_variant = (
            scalar_variant
            and self.simd_level() is not None
            and hasattr(module, "SIMDLevel_NONE")
        )

    def simd_level(self) -> str | None:
        """faiss.SIMDConfig.get_level_name() where this faiss has it."""
        config = getattr(self.module, "SIMDConfig", None)
        if config is None or not hasattr(config, "get_level_name"):
            return None
        return str(config.get_level_name())

    @contextlib.contextmanager
    def _scalar(self) -> Iterator[None]:
        config = self.module.SIMDConfig
        before = config.get_level()
        config.set_level(self.module.SIMDLevel_NONE)
        try:
            yield
        finally:
            config.set_level(before)

    def variants(self) -> list[Variant]:
        default: Variant = (self.simd_level() or "default", contextlib.nullcontext)
        return [default, ("NONE", self._scalar)] if self.scalar_variant else [default]


@dataclass
class NanopqIndex:
    """A nanopq.PQ, the seed it is fitted with, and the codes added to it."""

    pq: Any
    seed: int
    codes: NDArray


class Nanopq(Library):
    """nanopq: fit, encode, then dtable(query).adist(codes) and a top-k per query."""

    name = "nanopq"
    kinds = ("PQ",)
    threaded = False

    def create(self, spec: IndexSpec) -> NanopqIndex:
        pq = self.module.PQ(
            M=spec.M,
            Ks=2**spec.nbits,
            metric="l2" if spec.metric == "l2" else "dot",
            verbose=False,
        )
        return NanopqIndex(pq, spec.seed, np.empty((0, spec.M), np.uint8))

    def train(self, index: NanopqIndex, xt: NDArray[np.float32]) -> None:
        index.pq.fit(xt, seed=index.seed)

    def add(self, index: NanopqIndex, xb: NDArray[np.float32]) -> None:
        index.codes = np.concatenate([index.codes, index.pq.encode(xb)])

    def search(
        self, index: NanopqIndex, xq: NDArray[np.float32], k: int
    ) -> SearchResult:
        sign = (
            1.0 if index.pq.metric == "l2" else -1.0
        )  # smallest_k wants lower = better
        n = index.codes.shape[0]
        step = max(1, (1 << 24) // max(1, n))
        D = np.empty((xq.shape[0], min(k, n)), np.float32)
        I = np.empty(D.shape, np.int64)  # noqa: E741 (faiss naming)
        for s in range(0, xq.shape[0], step):
            block = np.stack(
                [index.pq.dtable(q).adist(index.codes) for q in xq[s : s + step]]
            )
            vals, ids = smallest_k(sign * block, k)
            D[s : s + step], I[s : s + step] = sign * vals, ids
        return D, I

    def index_bytes(self, index: NanopqIndex, spec: IndexSpec) -> int:
        return int(index.codes.nbytes)

    def serialized_bytes(self, index: NanopqIndex) -> int | None:
        return len(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))


def load_libraries(
    names: list[str], faiss_scalar: bool
) -> tuple[list[Library], list[str]]:
    """Import the requested libraries; return the adapters and skip messages."""
    libs: list[Library] = []
    skipped: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            skipped.append(f"{name}: not installed ({exc}), skipped")
            continue
        if name == "faiss":
            libs.append(Faiss(module, faiss_scalar))
        elif name == "nanopq":
            libs.append(Nanopq(module))
        else:
            libs.append(FaissAPI(module))
    return libs, skipped
