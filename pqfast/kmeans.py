"""k-means clustering (faiss's ``Kmeans``), Lloyd iterations on the kernels."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._assign import DIRECT_MAX_DSUB, nearest
from pqfast._kernels import _kmeans
from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2
from pqfast._search import scratch
from pqfast._threads import serial_blas
from pqfast._validation import NotTrainedError, check_positive_int, check_vectors
from pqfast.flat import IndexFlat, _knn


@dataclass
class ClusteringParameters:
    """k-means settings of a trainable index, as faiss's ``index.cp`` / ``pq.cp``.

    faiss's defaults: 25 iterations, but 10 for an IVF index's coarse
    quantizer, whose clusterings are large (IndexIVFPQ sets that).
    """

    niter: int = 25
    nredo: int = 1
    seed: int = 1234
    spherical: bool = False
    verbose: bool = False
    max_points_per_centroid: int = 256
    min_points_per_centroid: int = 39

    def kwargs(self, seed_offset: int = 0) -> dict[str, object]:
        """Keyword arguments for ``train_centroids``."""
        kw = asdict(self)
        kw["seed"] = self.seed + seed_offset
        return kw


# faiss splits an empty cluster's neighbour by moving both copies this far apart.
_SPLIT_EPS = 1.0 / 1024


def _split_empty(
    centroids: NDArray[np.float32], sizes: NDArray[np.float64], rng: np.random.Generator
) -> None:
    """Re-seed each empty cluster by splitting a large one (as faiss does).

    A donor is drawn with probability proportional to (size - 1), sizes being
    point counts or weight sums; its centroid is copied and the two copies are
    pushed apart by a relative +-1/1024 in alternating dimensions.  In place.
    """
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0).astype(
        np.float32
    )
    for ci in np.flatnonzero(sizes == 0):
        donors = np.maximum(sizes - 1, 0)
        if donors.sum() <= 0:
            return
        cj = rng.choice(len(sizes), p=donors / donors.sum())
        centroids[ci] = centroids[cj] * (1 + sign * _SPLIT_EPS)
        centroids[cj] = centroids[cj] * (1 - sign * _SPLIT_EPS)
        sizes[ci] = sizes[cj] / 2
        sizes[cj] -= sizes[ci]


def _normalize_rows(x: NDArray[np.float32]) -> None:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)


def lloyd(
    x: NDArray[np.float32],
    k: int,
    niter: int,
    rng: np.random.Generator,
    spherical: bool = False,
    init: NDArray[np.float32] | None = None,
    verbose: bool = False,
    weights: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Run Lloyd's algorithm on validated data, optionally with point weights.

    Assignment is an exact 1-NN search (largest inner product when
    `spherical`, else smallest L2 distance; see _assign); the update averages each
    cluster in a kernel; empty clusters are re-seeded by splitting.

    Returns
    -------
    centroids : ndarray of shape (k, d), float32
    obj : ndarray of shape (niter,), the objective after each assignment
        (weighted sum of squared distances, or of inner products when spherical).
    """
    n, d = x.shape
    centroids = (x[rng.choice(n, k, replace=False)] if init is None else init).copy()
    if spherical:
        _normalize_rows(centroids)
    metric = METRIC_INNER_PRODUCT if spherical else METRIC_L2
    work = scratch(d, np.float64)
    w = np.empty(0, np.float32) if weights is None else weights
    obj = np.empty(niter, np.float64)
    order, starts = np.empty(n, np.int64), np.empty(k + 1, np.int64)
    elkan = _Elkan(x, k) if _Elkan.applies(x.shape, k, metric) else None
    for it in range(niter):
        if elkan is not None:
            assign, dist = elkan.assign(centroids)
        else:
            assign, dist = _assign(x, centroids, metric)
        obj[it] = dist.sum() if weights is None else dist @ weights
        _kmeans.group_by_cluster(assign, order, starts)
        _kmeans.update_centroids(x, w, order, starts, work, centroids)
        sizes = (
            np.diff(starts).astype(np.float64)
            if weights is None
            else np.bincount(assign, weights=weights, minlength=k)
        )
        _split_empty(centroids, sizes, rng)
        if spherical:
            _normalize_rows(centroids)
        if verbose:
            print(
                f"  Iteration {it} ({n} points, {k} centroids): objective={obj[it]:.6g}"
            )
    return centroids, obj


def _assign(
    x: NDArray[np.float32], centroids: NDArray[np.float32], metric: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Nearest centroid of each row and its distance (or inner product).

    Short L2 vectors (a PQ sub-quantizer's, up to DIRECT_MAX_DSUB) go through
    the encoder's direct SIMD distances, which beat a GEMM that narrow
    (PERFORMANCE.md); otherwise the blocked GEMM k-NN."""
    k, d = centroids.shape
    if metric == METRIC_L2 and d <= DIRECT_MAX_DSUB and k <= 1 << 16:
        cbt = np.ascontiguousarray(centroids.T)[None]
        mins = np.empty((x.shape[0], 1), np.float32)
        idx = nearest(np.ascontiguousarray(x), centroids[None], cbt, None, mins)
        return idx[:, 0].astype(np.int64), mins[:, 0].astype(np.float64)
    D, I = _knn(x, centroids, 1, metric)
    return np.ascontiguousarray(I[:, 0]), D[:, 0].astype(np.float64)


class _Elkan:
    """Lloyd's assignment step for short L2 vectors (PQ sub-quantizers) with
    Elkan's bounds (_kmeans.elkan_assign): the assignment _assign makes, but
    after the first iteration only the distances the bounds cannot rule out
    are computed (PERFORMANCE.md, optimization 50).

    The bounds take 4 bytes per point and centroid; they are kept up to
    MAX_BYTES (PQ training's largest default sample, 65536 points, at k =
    256).  With fewer than MIN_K centroids, or vectors shorter than MIN_D,
    an exhaustive pass costs about what the bounds' upkeep does (measured,
    PQ training on the bundled data: 0.52-0.62x the time at d = 48, 0.67x
    at d = 12, 0.91x at d = 8).  With AVX2 rather than AVX-512 that holds
    below MIN_D_AVX2 (0.64x at d = 48, 0.96-1.0x at d = 12-32; measured on
    Zen 4 at the AVX2 level), and the portable version costs more than an
    exhaustive pass everywhere.  The labels are the exhaustive ones; the
    objective may differ from the exhaustive pass's in its last bits
    (distances summed in another order).
    """

    MAX_BYTES = 1 << 26
    MIN_K = 64
    MIN_D = 8
    MIN_D_AVX2 = 40

    @classmethod
    def applies(cls, shape: tuple[int, int], k: int, metric: int) -> bool:
        n, d = shape
        level = _kmeans.elkan_level()
        return (
            metric == METRIC_L2
            and (level == 2 or (level == 1 and d >= cls.MIN_D_AVX2))
            and cls.MIN_D <= d <= DIRECT_MAX_DSUB
            and k >= cls.MIN_K
            and k % 16 == 0
            and k <= 1024
            and 4 * n * k <= cls.MAX_BYTES
        )

    def __init__(self, x: NDArray[np.float32], k: int) -> None:
        n = x.shape[0]
        self.x = np.ascontiguousarray(x)
        self.labels = np.zeros(n, np.int64)
        self.bounds = np.empty((n, k), np.float32)
        self.mins = np.empty(n, np.float32)
        self.moved = np.zeros(k, np.float64)  # each centroid's path length so far
        self.previous: NDArray[np.float64] | None = None

    def assign(
        self, centroids: NDArray[np.float32], simd: int = 2
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Nearest centroid of each point and its squared distance, as
        _assign; the labels array is this object's, overwritten next call
        (`simd`: the kernel's highest SIMD level, 0 portable, for tests)."""
        c64 = centroids.astype(np.float64)
        first = self.previous is None
        if not first:  # rounded up (the kernel's margins allow for it)
            self.moved += np.sqrt(((c64 - self.previous) ** 2).sum(1)) * (1 + 1e-6)
        shift = self.moved.astype(np.float32)
        shift = np.where(
            shift < self.moved, np.nextafter(shift, np.float32(np.inf)), shift
        )
        cents = np.ascontiguousarray(centroids, dtype=np.float32)
        k, d = cents.shape
        by16 = np.ascontiguousarray(cents.reshape(k // 16, 16, d).transpose(0, 2, 1))
        _kmeans.elkan_assign(
            self.x, cents, by16, shift, first,
            self.labels, self.bounds, self.mins, simd,
        )  # fmt: skip
        self.previous = c64
        return self.labels, self.mins.astype(np.float64)


class Kmeans:
    """k-means clustering with faiss's interface.

    Parameters
    ----------
    d : int
        Vector dimension.
    k : int
        Number of centroids.
    niter : int, default 25
        Lloyd iterations.
    seed : int, default 1234
        Seeds initialisation, subsampling and cluster splitting.
    verbose : bool, default False
        Print the objective after each iteration.
    spherical : bool, default False
        Normalise centroids after each update and assign by inner product.
    max_points_per_centroid : int, default 256
        Train on a random sample of at most ``k * max_points_per_centroid``
        points (with a warning), as faiss does.
    min_points_per_centroid : int, default 39
        Warn when there are fewer than ``k * min_points_per_centroid`` points.
    nredo : int, default 1
        Run this many times from different initialisations and keep the best.

    Attributes
    ----------
    centroids : ndarray of shape (k, d), float32
        Set by ``train``.
    obj : ndarray of shape (niter,)
        Objective after each iteration of the kept run.
    index : IndexFlat
        Flat index over the centroids, used by ``assign``.
    """

    def __init__(
        self,
        d: int,
        k: int,
        niter: int = 25,
        seed: int = 1234,
        verbose: bool = False,
        spherical: bool = False,
        max_points_per_centroid: int = 256,
        min_points_per_centroid: int = 39,
        nredo: int = 1,
        **kwargs: object,
    ) -> None:
        unknown = set(kwargs) - {
            "gpu",
            "update_index",
            "int_centroids",
            "decode_block_size",
        }
        if unknown:
            raise TypeError(f"Kmeans got unexpected arguments: {sorted(unknown)}.")
        self.d = check_positive_int(d, "d")
        self.k = check_positive_int(k, "k")
        self.niter = check_positive_int(niter, "niter")
        self.nredo = check_positive_int(nredo, "nredo")
        self.seed = int(seed)
        self.verbose = bool(verbose)
        self.spherical = bool(spherical)
        self.max_points_per_centroid = check_positive_int(
            max_points_per_centroid, "max_points_per_centroid"
        )
        self.min_points_per_centroid = int(min_points_per_centroid)
        self.centroids: NDArray[np.float32] | None = None
        self.obj = np.empty(0, np.float64)
        metric = METRIC_INNER_PRODUCT if self.spherical else METRIC_L2
        self.index = IndexFlat(self.d, metric)

    def train(
        self,
        x: ArrayLike,
        weights: ArrayLike | None = None,
        init_centroids: ArrayLike | None = None,
    ) -> float:
        """Cluster `x`; return the final objective.

        Parameters
        ----------
        x : array-like of shape (n, d), n >= k
        weights : array-like of shape (n,), optional
            Non-negative point weights: centroids are weighted means.
        init_centroids : array-like of shape (k, d), optional
            Starting centroids instead of k random points.
        """
        x = check_vectors(x, self.d)
        if weights is not None:
            weights = np.ascontiguousarray(weights, dtype=np.float32)
            if weights.shape != (x.shape[0],):
                raise ValueError(
                    f"weights must have shape ({x.shape[0]},), got {weights.shape}."
                )
            if not np.isfinite(weights).all() or (weights < 0).any():
                raise ValueError("weights must be finite and non-negative.")
        init = None
        if init_centroids is not None:
            init = check_vectors(init_centroids, self.d, "init_centroids")
            if init.shape[0] != self.k:
                raise ValueError(
                    f"init_centroids must have k={self.k} rows, got {init.shape[0]}."
                )
        centroids, obj = train_centroids(
            x,
            self.k,
            niter=self.niter,
            seed=self.seed,
            spherical=self.spherical,
            max_points_per_centroid=self.max_points_per_centroid,
            min_points_per_centroid=self.min_points_per_centroid,
            nredo=self.nredo,
            init=init,
            verbose=self.verbose,
            weights=weights,
        )
        self.centroids, self.obj = centroids, obj
        self.index.reset()
        self.index.add(centroids)
        return float(obj[-1])

    def assign(self, x: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Nearest centroid of each vector: (distances (n,), labels (n,))."""
        if self.centroids is None:
            raise NotTrainedError("Kmeans.assign called before train.")
        D, I = self.index.search(x, 1)
        return D.ravel(), I.ravel()


def train_centroids(
    x: NDArray[np.float32],
    k: int,
    *,
    niter: int = 25,
    seed: int = 1234,
    spherical: bool = False,
    max_points_per_centroid: int = 256,
    min_points_per_centroid: int = 39,
    nredo: int = 1,
    init: NDArray[np.float32] | None = None,
    verbose: bool = False,
    weights: NDArray[np.float32] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Subsample as faiss does, run Lloyd `nredo` times, keep the best run."""
    n = x.shape[0]
    if n < k:
        raise ValueError(
            f"too few training points: got {n}, need at least k={k} (one per centroid)."
        )
    rng = np.random.default_rng(seed)
    if n > k * max_points_per_centroid:
        n_sample = k * max_points_per_centroid
        warnings.warn(
            f"clustering {n} points to {k} centroids: sampling {n_sample} points "
            f"(max_points_per_centroid={max_points_per_centroid})",
            stacklevel=3,
        )
        sample = np.sort(rng.choice(n, n_sample, replace=False))
        x = x[sample]
        weights = None if weights is None else weights[sample]
    elif n < k * min_points_per_centroid:
        warnings.warn(
            f"clustering {n} points to {k} centroids: please provide at least "
            f"{k * min_points_per_centroid} training points",
            stacklevel=3,
        )
    best: tuple[NDArray[np.float32], NDArray[np.float64]] | None = None
    # One BLAS pinning for all iterations: each release wakes BLAS's worker
    # threads, which then spin on the cores the next iteration's kernels use.
    with serial_blas():
        for _ in range(nredo):
            centroids, obj = lloyd(x, k, niter, rng, spherical, init, verbose, weights)
            better = best is None or (
                obj[-1] > best[1][-1] if spherical else obj[-1] < best[1][-1]
            )
            if better:
                best = (centroids, obj)
    assert best is not None
    return best
