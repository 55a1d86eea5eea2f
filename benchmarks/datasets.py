"""Benchmark data: the bundled embeddings, synthetic mixtures and users' files.

Every loader returns a `Dataset` of float32 base vectors, float32 queries,
the metrics it is meant to be searched with, and ground-truth ids when the
file ships them.  Supported files:

* ``.npy``: an (n, d) array; the first `nq` rows become the queries.
* TEXMEX ``.fvecs`` / ``.bvecs`` (base) with ``.ivecs`` ground truth; for a
  ``*base*`` file the sibling ``*query*`` and ``*groundtruth*`` files are
  picked up automatically.
* ann-benchmarks ``.hdf5`` (``train``/``test``/``neighbors``); ``*-angular``
  sets are L2-normalized and searched by inner product.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED = REPO_ROOT / "data" / "minilm-words-10k.npy"
METRICS = ("l2", "ip")


@dataclass
class Dataset:
    """Base vectors, queries, intended metrics and optional file ground truth.

    Attributes
    ----------
    name : str
        Short label used in tables and file names.
    xb, xq : ndarray, float32, C-contiguous
        Base vectors (n, d) and queries (nq, d).
    metrics : tuple of str
        Metrics the data is benchmarked with ("l2" and/or "ip").
    gt : dict
        metric -> (nq, k) int64 neighbour ids shipped with the data.
    family : str
        Datasets differing only in n share a family (used by scaling plots).
    """

    name: str
    xb: NDArray[np.float32]
    xq: NDArray[np.float32]
    metrics: tuple[str, ...]
    gt: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    family: str = ""

    def __post_init__(self) -> None:
        self.xb = np.ascontiguousarray(self.xb, dtype=np.float32)
        self.xq = np.ascontiguousarray(self.xq, dtype=np.float32)
        if (
            self.xb.ndim != 2
            or self.xq.ndim != 2
            or self.xb.shape[1] != self.xq.shape[1]
        ):
            raise ValueError(
                f"{self.name}: base {self.xb.shape} and queries "
                f"{self.xq.shape} must be 2-D with the same d."
            )
        self.family = self.family or self.name

    @property
    def n(self) -> int:
        return self.xb.shape[0]

    @property
    def d(self) -> int:
        return self.xb.shape[1]

    @property
    def nq(self) -> int:
        return self.xq.shape[0]

    @cached_property
    def digest(self) -> str:
        """Content hash of base and queries (keys the ground-truth cache)."""
        h = hashlib.blake2b(digest_size=12)
        for a in (self.xb, self.xq):
            h.update(str(a.shape).encode())
            h.update(memoryview(a).cast("B"))
        return h.hexdigest()

    def train_sample(self, max_train: int, seed: int) -> NDArray[np.float32]:
        """The training set every library gets: a seeded subset of the base."""
        if self.n <= max_train:
            return self.xb
        rows = np.sort(
            np.random.default_rng(seed).choice(self.n, max_train, replace=False)
        )
        return np.ascontiguousarray(self.xb[rows])


def normalize(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit L2 norm (zero rows left as they are)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)


def _split(x: NDArray, nq: int) -> tuple[NDArray, NDArray]:
    if not 0 < nq < x.shape[0]:
        raise ValueError(f"cannot take {nq} queries from {x.shape[0]} vectors.")
    return x[nq:], x[:nq]


BUNDLED_QUERIES = 1000


def bundled(nq: int = BUNDLED_QUERIES) -> Dataset:
    """MiniLM word embeddings shipped in data/ (10k x 384, unit norm), L2 and IP.

    The last 9,000 rows are always the base; the queries are the first `nq`
    (at most 1,000) rows.
    """
    x = np.load(BUNDLED).astype(np.float32)
    xq = x[: min(nq, BUNDLED_QUERIES)]
    return Dataset("minilm-10k", x[BUNDLED_QUERIES:], xq, METRICS)


def synthetic(
    n: int, d: int, nq: int = 1000, seed: int = 1234, n_clusters: int = 100
) -> Dataset:
    """Seeded Gaussian mixture: `n_clusters` centres, unit-variance clusters.

    Base and queries come from the same mixture; the same (n, d, seed) always
    gives the same data.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_clusters, d)).astype(np.float32)

    def draw(count: int, stream: int) -> NDArray[np.float32]:
        r = np.random.default_rng([seed, stream])
        out = np.empty((count, d), np.float32)
        for s in range(0, count, 1 << 16):
            m = min(1 << 16, count - s)
            out[s : s + m] = centres[r.integers(n_clusters, size=m)]
            out[s : s + m] += r.standard_normal((m, d), dtype=np.float32)
        return out

    return Dataset(
        f"synthetic-{n}x{d}", draw(n, 1), draw(nq, 2), METRICS, family=f"synthetic-d{d}"
    )


# ------------------------------------------------------------------ files
def read_vecs(path: Path, max_n: int | None = None) -> NDArray:
    """Read a TEXMEX .fvecs (float32), .bvecs (uint8) or .ivecs (int32) file."""
    dtype = {".fvecs": np.float32, ".bvecs": np.uint8, ".ivecs": np.int32}[path.suffix]
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    d = int(raw[:4].view(np.int32)[0])
    row = 4 + d * np.dtype(dtype).itemsize
    if raw.size % row:
        raise ValueError(
            f"{path}: size {raw.size} is not a multiple of {row}-byte rows."
        )
    rows = raw.reshape(-1, row)[:max_n]
    return np.ascontiguousarray(rows[:, 4:]).view(dtype)


def _sibling(path: Path, word: str, suffixes: tuple[str, ...]) -> Path | None:
    """TEXMEX naming: sift_base.fvecs -> sift_query.fvecs, sift_groundtruth.ivecs."""
    if "base" not in path.stem:
        return None
    for suffix in suffixes:
        candidate = path.with_name(path.stem.replace("base", word) + suffix)
        if candidate.exists():
            return candidate
    return None


def _read_array(path: Path, max_n: int | None) -> NDArray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")[:max_n]
    if path.suffix in (".fvecs", ".bvecs", ".ivecs"):
        return read_vecs(path, max_n)
    raise ValueError(
        f"{path}: unsupported format (use .npy, .fvecs, .bvecs, .ivecs, .hdf5)."
    )


def _load_hdf5(path: Path, max_n: int | None) -> Dataset:
    try:
        import h5py
    except ImportError as exc:
        raise SystemExit(
            "reading ann-benchmarks .hdf5 files needs h5py (pip install h5py)."
        ) from exc
    with h5py.File(path, "r") as f:
        distance = str(
            f.attrs.get(
                "distance", "angular" if "angular" in path.stem else "euclidean"
            )
        )
        xb = np.asarray(f["train"][:max_n], np.float32)
        xq = np.asarray(f["test"][:], np.float32)
        full = max_n is None or max_n >= f["train"].shape[0]
        neighbors = (
            np.asarray(f["neighbors"][:], np.int64)
            if full and "neighbors" in f
            else None
        )
    if distance == "angular":
        metric, xb, xq = "ip", normalize(xb), normalize(xq)
    elif distance in ("euclidean", "l2"):
        metric = "l2"
    else:
        raise ValueError(
            f"{path}: distance '{distance}' is not supported (angular, euclidean)."
        )
    gt = {metric: neighbors} if neighbors is not None else {}
    return Dataset(path.stem, xb, xq, (metric,), gt)


def load_file(
    path: str | Path,
    nq: int = 1000,
    max_n: int | None = None,
    queries: str | Path | None = None,
    gt: str | Path | None = None,
    metric: str = "l2",
) -> Dataset:
    """Load a user's data set (see the module docstring for formats).

    Parameters
    ----------
    path : base vectors (.npy/.fvecs/.bvecs) or an ann-benchmarks .hdf5 file.
    nq : queries split off the base when no query file is given or found.
    max_n : read at most this many base vectors (file ground truth is then
        dropped unless `gt` names one explicitly).
    queries, gt : explicit query and ground-truth (.ivecs/.npy) files.
    metric : metric of the file's ground truth, for formats that do not say.
    """
    path = Path(path)
    if path.suffix in (".hdf5", ".h5"):
        return _load_hdf5(path, max_n)
    xb = _read_array(path, max_n)
    qpath = Path(queries) if queries else _sibling(path, "query", (path.suffix,))
    if qpath is not None:
        xq = _read_array(qpath, None)
        if nq < xq.shape[0]:
            xq = xq[:nq]
    else:
        xb, xq = _split(xb, nq)
    gpath = Path(gt) if gt else None
    if gpath is None and max_n is None and qpath is not None:
        gpath = _sibling(path, "groundtruth", (".ivecs", ".npy"))
    truth = {}
    if gpath is not None:
        truth[metric] = np.asarray(_read_array(gpath, None)[: xq.shape[0]], np.int64)
    name = re.sub(r"[_-]?base$", "", path.stem) or path.stem
    if max_n is not None:
        name += f"-{xb.shape[0]}"
    return Dataset(name, xb, xq, (metric,), truth)
