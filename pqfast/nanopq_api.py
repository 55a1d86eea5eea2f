"""nanopq's API on pqfast's kernels: ``import pqfast as nanopq`` for PQ and OPQ.

Same names, arguments, attributes and results as nanopq 0.2 for the same
codewords (training itself uses pqfast's k-means, so learned codewords differ
from nanopq's for the same seed).  Input checks raise ValueError/TypeError
instead of nanopq's asserts, and float64 input is converted.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._validation import check_positive_int, check_vectors
from pqfast.kmeans import ClusteringParameters, train_centroids
from pqfast.pq import ProductQuantizer


def _check_2d(vecs: ArrayLike, name: str) -> NDArray[np.float32]:
    if np.ndim(vecs) != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {np.shape(vecs)}.")
    return check_vectors(vecs, np.shape(vecs)[1], name)


class DistanceTable:
    """Distances (l2: squared) or inner products (dot) from one query to every
    codeword: ``dtable[m][ks]``, shape (M, Ks), float32."""

    def __init__(self, dtable: NDArray[np.float32], metric: str = "l2") -> None:
        dtable = np.asarray(dtable)
        if dtable.ndim != 2:
            raise ValueError(f"dtable must be 2-D (M, Ks), got shape {dtable.shape}.")
        if metric not in ("l2", "dot"):
            raise ValueError(f"metric must be 'l2' or 'dot', got {metric!r}.")
        self.dtable = dtable.astype(np.float32, copy=False)
        self.metric = metric

    def adist(self, codes: ArrayLike) -> NDArray[np.float32]:
        """Asymmetric distance to each of N codes of shape (N, M): shape (N,)."""
        codes = np.asarray(codes)
        M, Ks = self.dtable.shape
        if codes.ndim != 2 or codes.shape[1] != M:
            raise ValueError(f"codes must have shape (N, {M}), got {codes.shape}.")
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"codes must be integers, got dtype {codes.dtype}.")
        if codes.size and (codes.min() < 0 or codes.max() >= Ks):
            raise ValueError(f"codes must be in [0, {Ks}).")
        return self.dtable[np.arange(M), codes].sum(axis=1, dtype=np.float32)


class PQ:
    """Product quantizer with nanopq's interface.

    Parameters
    ----------
    M : int
        Number of sub-spaces.
    Ks : int, default 256
        Codewords per sub-space: a power of two up to 65536.
    metric : {"l2", "dot"}
        What ``dtable`` computes.
    verbose : bool, default True
        Print progress, as nanopq does.
    """

    def __init__(self, M: int, Ks: int = 256, metric: str = "l2", verbose: bool = True):
        self.M = check_positive_int(M, "M")
        self.Ks = check_positive_int(Ks, "Ks")
        if self.Ks > 65536 or self.Ks & (self.Ks - 1) or self.Ks < 2:
            raise ValueError(f"Ks must be a power of two from 2 to 65536, got {Ks}.")
        if metric not in ("l2", "dot"):
            raise ValueError(f"metric must be 'l2' or 'dot', got {metric!r}.")
        self.metric, self.verbose = metric, bool(verbose)
        self.code_dtype = np.uint8 if self.Ks <= 256 else np.uint16
        self.codewords: NDArray[np.float32] | None = None
        self.Ds: int | None = None
        if self.verbose:
            print(f"M: {M}, Ks: {Ks}, metric: {metric}, code_dtype: {self.code_dtype}")

    def _pq(self) -> ProductQuantizer:
        """A ProductQuantizer over the current codewords (for the kernels)."""
        if self.codewords is None:
            raise ValueError("codewords must be set by fit() before use.")
        M, Ks, Ds = self.codewords.shape
        pq = ProductQuantizer(M * Ds, M, Ks.bit_length() - 1)
        pq.centroids = self.codewords
        return pq

    def fit(
        self, vecs: ArrayLike, iter: int = 20, seed: int = 123, minit: str = "points"
    ):
        """Learn the codewords by k-means in each sub-space; returns self."""
        if minit != "points":
            raise ValueError(
                "pqfast's k-means starts from random points: minit='points'."
            )
        vecs = check_vectors(
            vecs, np.shape(vecs)[-1] if np.ndim(vecs) == 2 else -1, "vecs"
        )
        N, D = vecs.shape
        if self.Ks >= N:
            raise ValueError(f"the number of training vectors ({N}) must exceed Ks.")
        if D % self.M:
            raise ValueError(f"input dimension {D} must be divisible by M={self.M}.")
        self.Ds = D // self.M
        cp = ClusteringParameters(niter=check_positive_int(iter, "iter"), seed=seed)
        codewords = np.empty((self.M, self.Ks, self.Ds), np.float32)
        for m in range(self.M):
            if self.verbose:
                print(f"Training the subspace: {m} / {self.M}")
            sub = np.ascontiguousarray(vecs[:, m * self.Ds : (m + 1) * self.Ds])
            codewords[m], _ = train_centroids(sub, self.Ks, **cp.kwargs(m))
        self.codewords = codewords
        return self

    def encode(self, vecs: ArrayLike) -> NDArray:
        """PQ codes of shape (N, M), dtype code_dtype."""
        pq = self._pq()
        return pq.unpack(pq.compute_codes(vecs)).astype(self.code_dtype)

    def decode(self, codes: ArrayLike) -> NDArray[np.float32]:
        """Vectors of shape (N, D) reconstructed from codes of shape (N, M)."""
        if self.codewords is None:
            raise ValueError("codewords must be set by fit() before decode().")
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] != self.M:
            raise ValueError(f"codes must have shape (N, {self.M}), got {codes.shape}.")
        out = self.codewords[np.arange(self.M), codes]  # (N, M, Ds)
        return out.reshape(codes.shape[0], -1)

    def dtable(self, query: ArrayLike) -> DistanceTable:
        """Distance table of one query of shape (D,)."""
        if self.codewords is None:
            raise ValueError("codewords must be set by fit() before dtable().")
        query = np.asarray(query)
        if query.ndim != 1:
            raise ValueError("input must be a single vector of shape (D,).")
        q = check_vectors(query, self.M * self.Ds, "query")[0].reshape(self.M, 1, -1)
        if self.metric == "l2":
            table = ((self.codewords - q) ** 2).sum(-1)
        else:
            table = (self.codewords * q).sum(-1)
        return DistanceTable(table.astype(np.float32), metric=self.metric)


class OPQ:
    """Optimized product quantizer (a learned rotation, then PQ), nanopq's interface.

    Parameters are PQ's.  Attributes: ``R`` (D, D) rotation, ``pq`` the PQ on
    rotated vectors, and ``M``, ``Ks``, ``Ds``, ``codewords``, ``code_dtype``.
    """

    def __init__(self, M: int, Ks: int = 256, metric: str = "l2", verbose: bool = True):
        self.pq = PQ(M, Ks, metric=metric, verbose=verbose)
        self.R: NDArray[np.float32] | None = None

    M = property(lambda self: self.pq.M)
    Ks = property(lambda self: self.pq.Ks)
    verbose = property(lambda self: self.pq.verbose)
    code_dtype = property(lambda self: self.pq.code_dtype)
    codewords = property(lambda self: self.pq.codewords)
    Ds = property(lambda self: self.pq.Ds)

    def eigenvalue_allocation(self, vecs: ArrayLike) -> NDArray[np.float32]:
        """Initial rotation assuming Gaussian data (Ge et al., "Optimized product
        quantization", TPAMI 2014): PCA directions dealt to the sub-spaces so
        that the products of their variances are balanced."""
        vecs = np.asarray(vecs, dtype=np.float64)
        D = vecs.shape[1]
        if D % self.M:
            raise ValueError(f"input dimension {D} must be divisible by M={self.M}.")
        w, v = np.linalg.eigh(np.cov(vecs, rowvar=False))
        order = np.argsort(np.abs(w))[::-1]
        logs = np.log(np.abs(w[order]) + 1e-10)
        logs = logs - logs.min() + 1
        Ds, buckets = D // self.M, [[] for _ in range(self.M)]
        load = np.zeros(self.M)
        for dim, value in zip(order, logs):
            m = min(
                (m for m in range(self.M) if len(buckets[m]) < Ds),
                key=lambda m: load[m],
            )
            buckets[m].append(dim)
            load[m] += value
        return v[:, [d for b in buckets for d in b]].astype(np.float32)

    def fit(
        self,
        vecs: ArrayLike,
        parametric_init: bool = False,
        pq_iter: int = 20,
        rotation_iter: int = 10,
        seed: int = 123,
        minit: str = "points",
    ):
        """Alternate PQ training and the Procrustes rotation update; returns self."""
        vecs = check_vectors(
            vecs, np.shape(vecs)[-1] if np.ndim(vecs) == 2 else -1, "vecs"
        )
        D = vecs.shape[1]
        rotation_iter = check_positive_int(rotation_iter, "rotation_iter")
        self.R = self.eigenvalue_allocation(vecs) if parametric_init else np.eye(
            D, dtype=np.float32)  # fmt: skip
        for i in range(rotation_iter):
            X = vecs @ self.R
            last = i == rotation_iter - 1
            pq = PQ(self.M, self.Ks, metric=self.pq.metric, verbose=False)
            pq.fit(X, iter=pq_iter if last else 1, seed=seed, minit=minit)
            if last:
                self.pq = pq
                break
            X_ = pq.decode(pq.encode(X))
            U, _, Vt = np.linalg.svd(vecs.T.astype(np.float64) @ X_)
            self.R = (U @ Vt).astype(np.float32)
        return self

    def rotate(self, vecs: ArrayLike) -> NDArray[np.float32]:
        """Vectors (N, D) or one vector (D,) times R."""
        if self.R is None:
            raise ValueError("R must be set by fit() before rotate().")
        return (np.asarray(vecs, dtype=np.float32) @ self.R).astype(np.float32)

    def encode(self, vecs: ArrayLike) -> NDArray:
        return self.pq.encode(self.rotate(vecs))

    def decode(self, codes: ArrayLike) -> NDArray[np.float32]:
        return (self.pq.decode(codes) @ self.R.T).astype(np.float32)

    def dtable(self, query: ArrayLike) -> DistanceTable:
        return self.pq.dtable(self.rotate(query))
