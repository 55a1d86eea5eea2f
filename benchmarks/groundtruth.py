"""Exact neighbours (NumPy, library-neutral), their on-disk cache, and recall.

Scores are "lower is better" throughout: squared L2 distance, or minus the
inner product.  Recall is tie-tolerant: a returned id counts as a true
neighbour when its exact score is no worse than the k-th true score (plus a
relative 1e-5), so equidistant points and float32 rounding in the exact
search itself cannot lower it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.datasets import Dataset
from benchmarks.system import Progress

GT_K = 100
RECALL_AT = (1, 10, 100)
_TOL = 1e-5
_CHUNK_ELEMS = 1 << 25  # bound on temporary score matrices (floats)


@dataclass(frozen=True)
class GroundTruth:
    """True neighbour ids (nq, k) and their exact scores, best first."""

    ids: NDArray[np.int64]
    scores: NDArray[np.float64]
    source: str  # "file", "cache" or "computed"


def smallest_k(scores: NDArray, k: int) -> tuple[NDArray, NDArray[np.int64]]:
    """Per row, the `k` smallest scores ascending and their column indices."""
    k = min(k, scores.shape[1])
    part = np.argpartition(scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, 1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, 1), np.take_along_axis(
        part, order, 1
    ).astype(np.int64)


def exact_knn(
    xb: NDArray[np.float32],
    xq: NDArray[np.float32],
    k: int,
    metric: str,
    progress: bool = False,
) -> NDArray[np.int64]:
    """Brute-force k nearest ids with NumPy BLAS, queries processed in chunks."""
    bnorm = (
        (xb.astype(np.float64) ** 2).sum(1).astype(np.float32)
        if metric == "l2"
        else None
    )
    step = max(1, _CHUNK_ELEMS // xb.shape[0])
    out = np.empty((xq.shape[0], min(k, xb.shape[0])), np.int64)
    with Progress(xq.shape[0], "ground truth", progress) as bar:
        for s in range(0, xq.shape[0], step):
            scores = xq[s : s + step] @ xb.T
            scores *= -2.0 if bnorm is not None else -1.0
            if bnorm is not None:
                scores += bnorm
            out[s : s + step] = smallest_k(scores, k)[1]
            bar.update(min(step, xq.shape[0] - s))
    return out


def scores_of(
    xb: NDArray[np.float32],
    xq: NDArray[np.float32],
    ids: NDArray[np.int64],
    metric: str,
) -> NDArray[np.float64]:
    """Exact float64 scores of the given ids (nq, k); +inf where an id is -1."""
    ids = np.asarray(ids, np.int64)
    out = np.full(ids.shape, np.inf)
    step = max(1, _CHUNK_ELEMS // 8 // max(1, ids.shape[1] * xb.shape[1]))
    for s in range(0, ids.shape[0], step):
        blk = ids[s : s + step]
        valid = blk >= 0
        vecs = xb[np.where(valid, blk, 0)].astype(np.float64)
        q = xq[s : s + step, None, :].astype(np.float64)
        sc = ((vecs - q) ** 2).sum(-1) if metric == "l2" else -(vecs * q).sum(-1)
        out[s : s + step] = np.where(valid, sc, np.inf)
    return out


def ground_truth(
    ds: Dataset, metric: str, cache_dir: Path | None, progress: bool = False
) -> GroundTruth:
    """Ground truth from the data file, else the cache, else computed and cached."""
    if metric in ds.gt:
        ids, source = ds.gt[metric], "file"
    else:
        k = min(GT_K, ds.n)
        path = cache_dir / f"gt-{ds.digest}-{metric}-k{k}.npy" if cache_dir else None
        if path is not None and path.exists():
            ids, source = np.load(path), "cache"
        else:
            ids, source = exact_knn(ds.xb, ds.xq, k, metric, progress), "computed"
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, ids)
    return GroundTruth(ids, scores_of(ds.xb, ds.xq, ids, metric), source)


def recall(
    found: NDArray[np.int64], truth: GroundTruth, ds: Dataset, metric: str
) -> dict[str, float | None]:
    """recall@r and 1-recall@r for r in RECALL_AT (None where k or truth is too short).

    recall@r: share of the true r nearest found among the first r results.
    1-recall@r: share of queries whose true nearest is among the first r results.
    """
    s = scores_of(ds.xb, ds.xq, found, metric)
    nn = truth.scores[:, :1]
    out: dict[str, float | None] = {}
    for r in RECALL_AT:
        if r <= found.shape[1] and r <= truth.scores.shape[1]:
            thr = truth.scores[:, r - 1 : r]
            hits = (s[:, :r] <= thr + _TOL * (1 + np.abs(thr))).sum(1)
            out[f"recall@{r}"] = float(np.minimum(hits, r).mean() / r)
        else:
            out[f"recall@{r}"] = None
        if r <= found.shape[1]:
            out[f"1-recall@{r}"] = float(
                (s[:, :r] <= nn + _TOL * (1 + np.abs(nn))).any(1).mean()
            )
        else:
            out[f"1-recall@{r}"] = None
    return out
