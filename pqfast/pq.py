"""Product quantization: ProductQuantizer and the exhaustive IndexPQ."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast import _range_search
from pqfast._assign import nearest
from pqfast._kernels import _pq
from pqfast._metrics import METRIC_L2
from pqfast._search import finish, n_segments, result_arrays
from pqfast._storage import RowBuffer, aligned_copy
from pqfast._threads import serial_blas
from pqfast._validation import (
    NotTrainedError,
    check_is_trained_assignment,
    check_key,
    check_metric,
    check_positive_int,
    check_pq_shape,
    check_range,
    check_vectors,
)
from pqfast.kmeans import ClusteringParameters, train_centroids
from pqfast.selectors import (
    IDSelector,
    SearchParameters,
    remove_positions,
    selector_args,
)


class ProductQuantizer:
    """Split vectors into M sub-vectors and quantize each with its own codebook.

    Codes are packed exactly as faiss packs them: sub-code m occupies bits
    [m*nbits, (m+1)*nbits) of a little-endian bit stream of ``code_size`` bytes.

    Parameters
    ----------
    d : int
        Vector dimension, a multiple of M.
    M : int
        Number of sub-quantizers.
    nbits : int, default 8
        Bits per sub-code, 1 to 16; 8 is the fast path.

    Attributes
    ----------
    dsub, ksub, code_size : int
        d / M, 2**nbits, and ceil(M * nbits / 8).
    centroids : ndarray of shape (M, ksub, dsub), float32
        The codebooks (``codewords[m][ks][ds]``); assignable, e.g. to load
        centroids trained elsewhere.
    """

    def __init__(self, d: int, M: int, nbits: int = 8) -> None:
        self._d, self._M, self._nbits = check_pq_shape(d, M, nbits)
        self.cp = ClusteringParameters()  # sub-quantizer m is seeded cp.seed + m
        self._centroids: NDArray[np.float32] | None = None
        self.version = 0  # bumped whenever the codebooks change

    # The shape parameters are fixed at construction: the kernels size their
    # buffers from them, so they are read-only.
    d = property(lambda self: self._d, doc="Vector dimension.")
    M = property(lambda self: self._M, doc="Number of sub-quantizers.")
    nbits = property(lambda self: self._nbits, doc="Bits per sub-code.")
    dsub = property(lambda self: self._d // self._M, doc="Dimension of a sub-vector.")
    ksub = property(lambda self: 1 << self._nbits, doc="Centroids per sub-quantizer.")
    code_size = property(
        lambda self: (self._M * self._nbits + 7) // 8, doc="Bytes per packed code."
    )

    @property
    def is_trained(self) -> bool:
        return self._centroids is not None

    @property
    def centroids(self) -> NDArray[np.float32] | None:
        """Codebooks of shape (M, ksub, dsub) (read-only), or None before training.

        Assign a whole new array to change them.
        """
        if self._centroids is None:
            return None
        view = self._centroids.view()
        view.flags.writeable = False
        return view

    @centroids.setter
    def centroids(self, value: ArrayLike) -> None:
        shape = (self.M, self.ksub, self.dsub)
        arr = np.asarray(value)
        if arr.size != np.prod(shape):
            raise ValueError(f"centroids must have shape {shape}, got {arr.shape}.")
        arr = check_vectors(arr.reshape(-1, self.dsub), self.dsub, "centroids")
        self._set_centroids(arr.reshape(shape))

    def _set_centroids(self, centroids: NDArray[np.float32]) -> None:
        self.version += 1
        self._centroids = np.array(centroids, dtype=np.float32, order="C")
        # (M, dsub, ksub): the kernels' table loops run over contiguous centroids.
        self._cbt = aligned_copy(self._centroids.transpose(0, 2, 1))
        self._ynorm = np.einsum("mkd,mkd->mk", self._centroids, self._centroids)

    def _check_trained(self) -> None:
        if self._centroids is None:
            raise NotTrainedError(
                "the ProductQuantizer is not trained; call train first."
            )

    def train(self, x: ArrayLike) -> None:
        """Learn the M codebooks by k-means on each sub-vector block.

        Parameters
        ----------
        x : array-like of shape (n, d), n >= ksub
        """
        x = check_vectors(x, self.d)
        if x.shape[0] < self.ksub:
            raise ValueError(
                f"too few training points: got {x.shape[0]}, need at least "
                f"ksub={self.ksub} (2**nbits) to train the product quantizer."
            )
        centroids = np.empty((self.M, self.ksub, self.dsub), np.float32)
        with serial_blas():  # once for all M clusterings (see train_centroids)
            for m in range(self.M):
                sub = np.ascontiguousarray(x[:, m * self.dsub : (m + 1) * self.dsub])
                centroids[m], _ = train_centroids(sub, self.ksub, **self.cp.kwargs(m))
        self._set_centroids(centroids)

    def compute_codes(self, x: ArrayLike) -> NDArray[np.uint8]:
        """Encode vectors to packed codes of shape (n, code_size), uint8."""
        self._check_trained()
        return self._encode(check_vectors(x, self.d))

    def _encode(self, x: NDArray[np.float32]) -> NDArray[np.uint8]:
        idx = nearest(x, self._centroids, self._cbt, self._ynorm)
        codes = np.empty((x.shape[0], self.code_size), np.uint8)
        _pq.pack_codes(idx, self.nbits, codes)
        return codes

    def unpack(self, codes: NDArray[np.uint8]) -> NDArray[np.uint16]:
        """Sub-code indices of shape (n, M) from packed codes."""
        codes = self._check_codes(codes)
        idx = np.empty((codes.shape[0], self.M), np.uint16)
        _pq.unpack_codes(codes, self.nbits, idx)
        return idx

    def pack(self, idx: ArrayLike) -> NDArray[np.uint8]:
        """Packed codes of shape (n, code_size) from sub-code indices (n, M)."""
        idx = np.asarray(idx)
        if idx.ndim != 2 or idx.shape[1] != self.M:
            raise ValueError(f"idx must have shape (n, M={self.M}), got {idx.shape}.")
        if idx.size and (idx.min() < 0 or idx.max() >= self.ksub):
            raise ValueError(f"sub-codes must be in [0, ksub={self.ksub}).")
        codes = np.empty((idx.shape[0], self.code_size), np.uint8)
        _pq.pack_codes(np.ascontiguousarray(idx, np.uint16), self.nbits, codes)
        return codes

    def decode(self, codes: ArrayLike) -> NDArray[np.float32]:
        """Reconstruct vectors of shape (n, d) from packed codes."""
        self._check_trained()
        idx = self.unpack(codes)
        return self._centroids[np.arange(self.M), idx].reshape(idx.shape[0], self.d)

    def _check_codes(self, codes: ArrayLike) -> NDArray[np.uint8]:
        arr = np.asarray(codes)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.code_size:
            raise ValueError(
                f"codes must have shape (n, code_size={self.code_size}), "
                f"got {arr.shape}."
            )
        if arr.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got dtype {arr.dtype}.")
        return np.ascontiguousarray(arr)

    def __repr__(self) -> str:
        return f"ProductQuantizer(d={self.d}, M={self.M}, nbits={self.nbits})"


class PQCodesIndex:
    """What IndexPQ and IndexPQFastScan share: a ProductQuantizer ``pq`` and
    the codes of vectors 0..ntotal-1 in ``self._codes`` (a RowBuffer of flat
    codes, or BlockCodes behaving as one).  Subclasses scan the codes
    (``_scan``) and reconstruct vectors."""

    def __init__(self, d: int, M: int, nbits: int, metric: int, seed: int) -> None:
        self.pq = ProductQuantizer(d, M, nbits)
        self.pq.cp.seed = int(seed)
        self.metric_type = check_metric(metric)

    d = property(lambda self: self.pq.d, doc="Vector dimension.")
    code_size = property(lambda self: self.pq.code_size, doc="Bytes per code.")
    ntotal = property(lambda self: self._codes.size, doc="Number of stored vectors.")

    @property
    def is_trained(self) -> bool:
        return self.pq.is_trained

    @is_trained.setter
    def is_trained(self, value: bool) -> None:
        check_is_trained_assignment(value, self.is_trained, "pq.centroids must be set")

    def _check_trained(self, what: str) -> None:
        if not self.is_trained:
            raise NotTrainedError(f"{type(self).__name__}.{what} called before train.")

    def train(self, x: ArrayLike) -> None:
        """Train the product quantizer on `x` of shape (n, d), n >= 2**nbits."""
        if self.ntotal > 0:
            raise ValueError("the index holds vectors; call reset() before train.")
        self.pq.train(x)

    def add(self, x: ArrayLike) -> None:
        """Encode and append vectors; they get ids ntotal, ntotal + 1, ..."""
        self._check_trained("add")
        self._add_codes(self.pq.compute_codes(x))

    def _add_codes(self, flat: NDArray[np.uint8]) -> None:
        """Append vectors given as flat codes of shape (n, code_size) (as sa_encode)."""
        self._codes.append(flat)

    def sa_encode(self, x: ArrayLike) -> NDArray[np.uint8]:
        """Flat codes of shape (n, code_size) for `x` (faiss's packing; not stored)."""
        self._check_trained("sa_encode")
        return self.pq.compute_codes(x)

    def sa_decode(self, codes: ArrayLike) -> NDArray[np.float32]:
        """Vectors of shape (n, d) reconstructed from flat codes."""
        self._check_trained("sa_decode")
        return self.pq.decode(codes)

    def search(
        self, x: ArrayLike, k: int, *, params: SearchParameters | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Return the approximate k nearest neighbours of each query.

        Parameters
        ----------
        x : array-like of shape (n, d)
            Queries.
        k : int
            Number of neighbours, ``k >= 1``.
        params : SearchParameters, optional
            ``sel``: an IDSelector; only ids it accepts are returned.

        Returns
        -------
        D : ndarray of shape (n, k), float32
            ADC distances (squared L2 ascending, or inner products descending);
            +FLT_MAX (L2) or -FLT_MAX (IP) where fewer than k.
        I : ndarray of shape (n, k), int64
            Ids, -1 where fewer than k vectors exist.
        """
        self._check_trained("search")
        x = check_vectors(x, self.d)
        k = check_positive_int(k, "k")
        nseg = n_segments(x.shape[0], self._scan_work())
        D, I = result_arrays(x.shape[0] * nseg, k)
        self._scan(x, nseg, selector_args(params), D, I)
        return finish(D, I, nseg, self.metric_type)

    def _scan(self, x, nseg, sel, D, I) -> None:  # noqa: ANN001
        """Fill the kernel heaps D, I (see _search.finish) for validated x."""
        raise NotImplementedError

    def _scan_work(self) -> int:
        """A query's scan in codes, the unit of _search.n_segments."""
        return self.ntotal

    def reset(self) -> None:
        """Remove every vector (the trained quantizer is kept)."""
        self._codes.clear()

    def range_search(
        self, x: ArrayLike, radius: float, *, params: SearchParameters | None = None
    ) -> _range_search.RangeResult:
        """Every stored vector within `radius` of each query, by ADC distance;
        arguments and results as for IndexFlat.range_search."""
        self._check_trained("range_search")
        x = check_vectors(x, self.d)
        radius = _range_search.check_radius(radius)
        return _range_search.exhaustive(
            x,
            self._codes.view(),
            self.metric_type,
            radius,
            selector_args(params),
            self.pq,
        )

    def remove_ids(self, ids: ArrayLike | IDSelector) -> int:
        """Remove the vectors with these ids (array or IDSelector); the others
        are renumbered 0..ntotal-1 in order, as in faiss.  Returns the count."""
        return remove_positions(self, ids)

    def _keep_rows(self, keep: NDArray[np.bool_]) -> None:
        """Keep only the codes where `keep` is True (repacked if blocked)."""
        self._codes.assign(self._codes.view()[keep])


class IndexPQ(PQCodesIndex):
    """Exhaustive search over product-quantized vectors (faiss's ``IndexPQ``).

    Parameters
    ----------
    d : int
        Vector dimension, a multiple of M.
    M : int
        Number of sub-quantizers (bytes per vector when nbits=8).
    nbits : int, default 8
        Bits per sub-code, 1 to 16.
    metric : int, default METRIC_L2
        METRIC_L2 or METRIC_INNER_PRODUCT.
    seed : int, default 1234
        Seeds training.
    """

    def __init__(
        self, d: int, M: int, nbits: int = 8, metric: int = METRIC_L2, seed: int = 1234
    ) -> None:
        super().__init__(d, M, nbits, metric, seed)
        self._codes = RowBuffer(self.pq.code_size, np.uint8)

    @property
    def codes(self) -> NDArray[np.uint8]:
        """Stored codes, shape (ntotal, code_size) (a read-only view)."""
        view = self._codes.view()
        view.flags.writeable = False
        return view

    def _scan_work(self) -> int:
        """A code of M sub-codes counts as M / 8 (the table lookups a code
        costs).  At 2 threads, one query over the 9k bundled codes, splitting
        the scan took M=32 from 84 to 51 us, M=16 from 56 to 45, M=8 from 38
        to 35."""
        return self.ntotal * self.pq.M // 8

    def _scan(self, x, nseg, sel, D, I) -> None:  # noqa: ANN001
        pq = self.pq
        _pq.pq_search(
            x, pq._cbt, pq._ynorm, self._codes.view(), pq.nbits,
            self.metric_type == METRIC_L2, nseg, sel, 2, D, I,
        )  # fmt: skip

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        """Decoded vector `key`, shape (d,)."""
        self._check_trained("reconstruct")
        key = check_key(key, self.ntotal)
        return self.pq.decode(self._codes.view()[key : key + 1])[0]

    def reconstruct_n(self, i0: int = 0, n: int | None = None) -> NDArray[np.float32]:
        """Decoded vectors i0 .. i0 + n - 1, shape (n, d)."""
        self._check_trained("reconstruct_n")
        i0, n = check_range(i0, n, self.ntotal)
        return self.pq.decode(self._codes.view()[i0 : i0 + n])

    def __repr__(self) -> str:
        pq = self.pq
        return f"IndexPQ(d={self.d}, M={pq.M}, nbits={pq.nbits}, ntotal={self.ntotal})"
