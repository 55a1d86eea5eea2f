"""OPQMatrix (learned rotation for PQ) and IndexPreTransform, as in faiss."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._threads import serial_blas
from pqfast._validation import NotTrainedError, check_positive_int, check_vectors
from pqfast.kmeans import train_centroids
from pqfast.pq import ProductQuantizer


class OPQMatrix:
    """Orthogonal rotation (optionally to fewer dimensions) that lowers PQ error.

    Ge, He, Ke and Sun, "Optimized product quantization", TPAMI 2014 (the
    non-parametric version): alternate training a PQ on the rotated data
    (warm-started from the previous codebooks) and the orthogonal Procrustes
    update of the rotation.  ``y = x @ R`` with R of shape (d_in, d_out) and
    orthonormal columns; faiss's ``A`` is its transpose.

    Parameters
    ----------
    d : int
        Input dimension.
    M : int
        Sub-quantizers of the PQ the rotation is optimized for; divides d_out.
    d2 : int, default -1
        Output dimension (-1: same as d).

    Attributes
    ----------
    niter : int, default 50
        Rotation updates.
    niter_pq, niter_pq_0 : int, default 4 and 40
        k-means iterations per update, and for the first one.
    max_train_points : int, default 65536
        Training sample size.
    seed : int, default 1234
    """

    def __init__(self, d: int = 0, M: int = 1, d2: int = -1) -> None:
        self.d_in = check_positive_int(d, "d")
        self.d_out = self.d_in if d2 == -1 else check_positive_int(d2, "d2")
        self.M = check_positive_int(M, "M")
        if self.d_out > self.d_in:
            raise ValueError(f"d2={d2} must not exceed d={d}.")
        if self.d_out % self.M:
            raise ValueError(f"d2={self.d_out} is not divisible by M={self.M}.")
        self.niter, self.niter_pq, self.niter_pq_0 = 50, 4, 40
        self.max_train_points = 256 * 256
        self.seed = 1234
        self.verbose = False
        self.R: NDArray[np.float32] | None = None

    @classmethod
    def _from_A(cls, A: ArrayLike, M: int = 1) -> OPQMatrix:
        """A trained OPQMatrix from faiss's matrix A of shape (d_out, d_in), y = A x.

        Raises a ValueError unless A's rows are orthonormal (a rotation, as OPQ
        learns): other linear transforms are not supported.
        """
        A = np.asarray(A, dtype=np.float32)
        if A.ndim != 2 or not np.isfinite(A).all():
            raise ValueError(f"A must be a finite 2-D matrix, got shape {A.shape}.")
        if np.abs(A @ A.T - np.eye(A.shape[0])).max(initial=0) > 1e-3:
            raise ValueError(
                "only orthonormal linear transforms (OPQ rotations) are supported; "
                "this one is not orthonormal."
            )
        out = cls(A.shape[1], M, A.shape[0])
        out.R = np.ascontiguousarray(A.T)
        return out

    @property
    def is_trained(self) -> bool:
        return self.R is not None

    @property
    def A(self) -> NDArray[np.float32] | None:
        """faiss's matrix: y = A x, shape (d_out, d_in)."""
        return None if self.R is None else self.R.T.copy()

    def train(self, x: ArrayLike) -> None:
        """Learn the rotation from training vectors of shape (n, d_in)."""
        x = check_vectors(x, self.d_in)
        if x.shape[0] < 256:
            raise ValueError(
                f"too few training points for OPQ: got {x.shape[0]}, need 256."
            )
        rng = np.random.default_rng(self.seed)
        if x.shape[0] > self.max_train_points:
            x = x[np.sort(rng.choice(x.shape[0], self.max_train_points, replace=False))]
        q, _ = np.linalg.qr(rng.standard_normal((self.d_in, self.d_in)))
        R = q[:, : self.d_out].astype(np.float32)
        pq = ProductQuantizer(self.d_out, self.M, 8)
        codebooks = None
        x64 = x.astype(np.float64)
        with serial_blas():
            for it in range(self.niter):
                xr = np.ascontiguousarray(x @ R)
                codebooks = self._train_pq(xr, codebooks, it == 0)
                pq.centroids = codebooks
                y = pq.decode(pq.compute_codes(xr))
                if self.verbose:
                    print(f"OPQ iteration {it}: PQ error {np.mean((xr - y) ** 2):.6g}")
                u, _, vt = np.linalg.svd(x64.T @ y, full_matrices=False)
                R = (u @ vt).astype(np.float32)
        self.R = np.ascontiguousarray(R)

    def _train_pq(self, xr, codebooks, first: bool) -> NDArray[np.float32]:
        dsub = self.d_out // self.M
        out = np.empty((self.M, 256, dsub), np.float32)
        for m in range(self.M):
            sub = np.ascontiguousarray(xr[:, m * dsub : (m + 1) * dsub])
            out[m], _ = train_centroids(
                sub, 256, niter=self.niter_pq_0 if first else self.niter_pq,
                seed=self.seed + m, init=None if codebooks is None else codebooks[m],
            )  # fmt: skip
        return out

    def apply(self, x: ArrayLike) -> NDArray[np.float32]:
        """Rotate vectors: (n, d_in) -> (n, d_out)."""
        if self.R is None:
            raise NotTrainedError("OPQMatrix.apply called before train.")
        return np.ascontiguousarray(check_vectors(x, self.d_in) @ self.R)

    apply_py = apply

    def reverse_transform(self, y: ArrayLike) -> NDArray[np.float32]:
        """Map rotated vectors back: (n, d_out) -> (n, d_in)."""
        if self.R is None:
            raise NotTrainedError("OPQMatrix.reverse_transform called before train.")
        return np.ascontiguousarray(check_vectors(y, self.d_out) @ self.R.T)


class IndexPreTransform:
    """An index searched through a vector transform (faiss's ``IndexPreTransform``).

    Parameters
    ----------
    transform : OPQMatrix
        Applied to every vector before `index` sees it.
    index : index
        Of dimension ``transform.d_out``.
    """

    def __init__(self, transform: OPQMatrix, index: object) -> None:
        if index.d != transform.d_out:
            raise ValueError(
                f"the index has d={index.d}, the transform outputs {transform.d_out}."
            )
        self.transform, self.index = transform, index
        self.d = transform.d_in
        self.metric_type = index.metric_type

    @property
    def is_trained(self) -> bool:
        return self.transform.is_trained and self.index.is_trained

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def nprobe(self) -> int:
        return self.index.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = value

    def train(self, x: ArrayLike) -> None:
        """Train the transform (unless trained), then the index on transformed x."""
        x = check_vectors(x, self.d)
        if not self.transform.is_trained:
            self.transform.train(x)
        if not self.index.is_trained:
            self.index.train(self.transform.apply(x))

    def add(self, x: ArrayLike) -> None:
        self.index.add(self.transform.apply(x))

    def add_with_ids(self, x: ArrayLike, ids: ArrayLike) -> None:
        self.index.add_with_ids(self.transform.apply(x), ids)

    def search(
        self, x: ArrayLike, k: int, *, params: object = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The wrapped index's search on transformed queries."""
        if not self.is_trained:
            raise NotTrainedError("IndexPreTransform.search called before train.")
        return self.index.search(self.transform.apply(x), k, params=params)

    def range_search(
        self, x: ArrayLike, radius: float, *, params: object = None
    ) -> tuple[NDArray[np.uint64], NDArray[np.float32], NDArray[np.int64]]:
        """The wrapped index's range_search on transformed queries."""
        if not self.is_trained:
            raise NotTrainedError("IndexPreTransform.range_search called before train.")
        return self.index.range_search(self.transform.apply(x), radius, params=params)

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        return self.transform.reverse_transform(self.index.reconstruct(key))[0]

    def remove_ids(self, ids: ArrayLike) -> int:
        return self.index.remove_ids(ids)

    def reset(self) -> None:
        self.index.reset()

    def __repr__(self) -> str:
        return f"IndexPreTransform({type(self.transform).__name__}, {self.index!r})"
