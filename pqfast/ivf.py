"""Inverted-file indexes: IndexIVF (shared machinery), IndexIVFPQ, IndexIVFFlat."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast import _range_search
from pqfast._code_terms import CodeTerms, list_term_table
from pqfast._kernels import _ivf
from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2
from pqfast._search import finish, n_segments, result_arrays
from pqfast._threads import serial_blas
from pqfast._validation import (
    IdNotFoundError,
    NotTrainedError,
    check_ids,
    check_is_trained_assignment,
    check_key,
    check_metric,
    check_positive_int,
    check_vectors,
)
from pqfast.flat import IndexFlat, _knn
from pqfast.invlists import ArrayInvertedLists
from pqfast.kmeans import ClusteringParameters, train_centroids
from pqfast.pq import ProductQuantizer
from pqfast.selectors import (
    IDSelector,
    SearchParameters,
    ids_to_remove,
    params_nprobe,
    selector_args,
)

# Rows encoded at a time by add: bounds the float32 residual buffer.
_ADD_CHUNK = 1 << 16
_EMPTY_TABLE = np.zeros((0, 0, 0), np.float32)  # "no precomputed table"
# Most queries searched by one fused kernel call (IndexIVFPQ._search_fused):
# up to 4, IndexFlat's search uses the same SIMD dot products, not a GEMM.
_FUSED_MAX_QUERIES = 4
# A query whose probed lists hold few 8-bit codes is scored from the codebook,
# without lookup tables (_ivf.use_direct, PERFORMANCE.md #36); False: never.
DIRECT_SCORING = True


class IndexIVF:
    """Shared inverted-file machinery: coarse quantizer, lists, ids, search.

    Subclasses say how vectors become codes (``_encode``/``_decode``), what
    besides the coarse quantizer is trained (``_train_encoder``), and which
    kernel scans the probed lists (``_scan_lists``).
    """

    def __init__(
        self,
        quantizer: object,
        d: int,
        nlist: int,
        code_size: int,
        metric: int = METRIC_L2,
        seed: int = 1234,
    ) -> None:
        self._d = check_positive_int(d, "d")
        self.nlist = check_positive_int(nlist, "nlist")
        self.metric_type = check_metric(metric)
        for attr in ("d", "ntotal", "search", "add", "reconstruct_n"):
            if not hasattr(quantizer, attr):
                raise TypeError(
                    f"quantizer must be an index such as IndexFlatL2(d); "
                    f"{type(quantizer).__name__} has no '{attr}'."
                )
        if quantizer.d != self._d:
            raise ValueError(
                f"quantizer has d={quantizer.d}, the index has d={self._d}."
            )
        self.quantizer = quantizer
        # faiss's coarse k-means settings: 10 iterations; spherical for IP
        self.cp = ClusteringParameters(
            niter=10, seed=int(seed), spherical=self.metric_type == METRIC_INNER_PRODUCT
        )
        self._code_size = code_size
        self.invlists = ArrayInvertedLists(self.nlist, code_size)
        self._nprobe = 1
        self._next_id = 0
        # Derived state, each cached with the state it was computed from.
        self._centroids: tuple[object, NDArray[np.float32]] | None = None
        self._direct_map: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None

    # Subclass hooks --------------------------------------------------------
    def _encoder_trained(self) -> bool:
        return True

    def _min_train_points(self) -> int:
        return 0

    def _train_encoder(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> object:
        """Train what encodes vectors, given their coarse assignment; return it."""
        return None

    def _set_encoder(self, state: object) -> None:
        """Install what _train_encoder returned."""

    def _encode(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        raise NotImplementedError

    def _decode(self, codes: NDArray[np.uint8], list_no: int) -> NDArray[np.float32]:
        raise NotImplementedError

    def _scan_lists(self, x, probes, base, nseg, D, I, sel) -> None:  # noqa: ANN001
        raise NotImplementedError

    def _range_codebook(self) -> tuple:
        """How the range kernel scores the lists' rows (_range_search)."""
        raise NotImplementedError

    def _range_lists(self, probes: NDArray[np.int64]) -> tuple:
        """(code addresses, id addresses, id offsets, sizes) for the range
        kernel over the probed lists, and the arrays behind the addresses."""
        code_ptrs, id_ptrs, sizes = self.invlists.kernel_arrays()
        return (code_ptrs, id_ptrs, np.zeros(self.nlist, np.int64), sizes), None

    # ------------------------------------------------------------ attributes
    d = property(lambda self: self._d, doc="Vector dimension.")
    code_size = property(lambda self: self._code_size, doc="Bytes per code.")

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = check_positive_int(value, "nprobe")

    @property
    def ntotal(self) -> int:
        return self.invlists.ntotal

    @property
    def is_trained(self) -> bool:
        return self._encoder_trained() and self.quantizer.ntotal == self.nlist

    @is_trained.setter
    def is_trained(self, value: bool) -> None:
        check_is_trained_assignment(
            value,
            self.is_trained,
            "the quantizer must hold nlist centroids and the codebooks must be set",
        )

    @property
    def nbytes(self) -> int:
        """Bytes held for the stored vectors: codes and ids."""
        return self.invlists.nbytes

    @property
    def _version(self) -> int:
        """Changes whenever the stored vectors do (as the flat index's counter),
        so an IVF index can serve as another one's coarse quantizer."""
        return int(self.invlists.versions.sum())

    def get_list_size(self, list_no: int) -> int:
        """Number of vectors in inverted list `list_no`."""
        return self.invlists.list_size(list_no)

    def _check_trained(self, what: str) -> None:
        if not self.is_trained:
            raise NotTrainedError(f"{type(self).__name__}.{what} called before train.")

    def _quantizer_state(self) -> object:
        """Token that changes when the quantizer's centroids may have changed.

        pqfast's flat index counts its modifications; for another quantizer
        (e.g. one of faiss's) only its size is seen, so replace such a
        quantizer's contents through ``train`` rather than by hand.
        """
        q = self.quantizer
        return (id(q), q.ntotal, getattr(q, "_version", None))

    def _coarse_centroids(self) -> NDArray[np.float32]:
        state = self._quantizer_state()
        if self._centroids is None or self._centroids[0] != state:
            cents = self.quantizer.reconstruct_n(0, self.quantizer.ntotal)
            self._centroids = (state, np.ascontiguousarray(cents, dtype=np.float32))
        return self._centroids[1]

    # -------------------------------------------------------------- training
    def train(self, x: ArrayLike) -> None:
        """Train the coarse quantizer (unless it holds nlist centroids) and the PQ.

        The PQ is trained on residuals of `x` with respect to their nearest
        coarse centroid.

        Parameters
        ----------
        x : array-like of shape (n, d), n >= max(nlist, 2**nbits)
        """
        x = check_vectors(x, self.d)
        if self.ntotal > 0:
            raise ValueError("the index holds vectors; call reset() before train.")
        train_coarse = self.quantizer.ntotal != self.nlist
        if train_coarse and self.quantizer.ntotal != 0:
            raise ValueError(
                f"the quantizer holds {self.quantizer.ntotal} centroids; "
                f"expected 0 (to train) or nlist={self.nlist}."
            )
        need = max(self.nlist if train_coarse else 0, self._min_train_points())
        if x.shape[0] < need:
            raise ValueError(
                f"too few training points: got {x.shape[0]}, need at least {need} "
                f"(nlist={self.nlist} coarse centroids, {self._min_train_points()} "
                "for the encoder)."
            )
        with serial_blas():  # once for the whole training (see train_centroids)
            self._train(x, train_coarse)

    def _train(self, x: NDArray[np.float32], train_coarse: bool) -> None:
        if train_coarse:
            cents, _ = train_centroids(x, self.nlist, **self.cp.kwargs())
        else:
            cents = self._coarse_centroids()
        if isinstance(self.quantizer, IndexFlat):
            state = self._train_encoder(x, cents, self._assign(x, cents))
            # nothing is changed before both trainings have succeeded
            if train_coarse:
                self.quantizer.add(cents)
        else:
            # Another quantizer (e.g. an IVF index: two-level clustering) may
            # assign approximately; as in faiss, it is trained on the centroids
            # and filled first, and the encoder learns from its assignment,
            # the one add will use.
            if train_coarse:
                if not self.quantizer.is_trained:
                    self.quantizer.train(cents)
                self.quantizer.add(cents)
            state = self._train_encoder(x, cents, self._assign(x))
        self._set_encoder(state)

    def _quantizer_search(
        self, x: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Coarse search of validated x: pqfast's flat index skips re-validation."""
        if isinstance(self.quantizer, IndexFlat):
            return self.quantizer._search(x, k)
        return self.quantizer.search(x, k)

    def _assign(
        self, x: NDArray[np.float32], cents: NDArray[np.float32] | None = None
    ) -> NDArray[np.int64]:
        """Nearest coarse centroid of each row (by the quantizer's metric)."""
        if cents is None:
            _, I = self._quantizer_search(x, 1)
        else:
            metric = getattr(self.quantizer, "metric_type", METRIC_L2)
            _, I = _knn(x, cents, 1, metric)
        list_nos = np.ascontiguousarray(I[:, 0], dtype=np.int64)
        self._check_list_nos(list_nos)
        return list_nos

    # ---------------------------------------------------------------- adding
    def add(self, x: ArrayLike) -> None:
        """Add vectors with sequential ids that never collide with stored ones
        (through ``_add``, as add_with_ids, not through add_with_ids itself)."""
        self._check_trained("add")
        x = check_vectors(x, self.d)
        self._add(x, np.arange(self._next_id, self._next_id + x.shape[0]))

    def add_with_ids(self, x: ArrayLike, ids: ArrayLike) -> None:
        """Add vectors with the given non-negative int64 ids.

        Parameters
        ----------
        x : array-like of shape (n, d)
        ids : array-like of shape (n,), integer
        """
        self._check_trained("add_with_ids")
        x = check_vectors(x, self.d)
        self._add(x, check_ids(ids, x.shape[0]))

    def _add(self, x: NDArray[np.float32], ids: NDArray[np.int64]) -> None:
        """add_with_ids for validated x and ids (not re-read: 0.4 ms a pass
        over 9000 x 384)."""
        cents = self._coarse_centroids()
        list_nos = np.empty(x.shape[0], np.int64)
        codes = np.empty((x.shape[0], self.code_size), np.uint8)
        for i0 in range(0, x.shape[0], _ADD_CHUNK):
            xc = x[i0 : i0 + _ADD_CHUNK]
            assign = self._assign(xc)
            list_nos[i0 : i0 + _ADD_CHUNK] = assign
            codes[i0 : i0 + _ADD_CHUNK] = self._encode(xc, cents, assign)
        self.invlists.add_entries(list_nos, codes, ids)
        if ids.size:
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._stored_changed()

    def _check_list_nos(self, list_nos: NDArray[np.int64]) -> None:
        if list_nos.size and (list_nos.min() < 0 or list_nos.max() >= self.nlist):
            raise ValueError(
                f"the quantizer assigned list numbers outside [0, {self.nlist}) "
                "(-1: it found no centroid, e.g. for values that overflow float32)."
            )

    # ------------------------------------------------------------- searching
    def _coarse_terms(
        self, x: NDArray[np.float32], nprobe: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Probed lists per query and the coarse distance term for each."""
        Dq, Iq = self._quantizer_search(x, nprobe)
        Iq = np.ascontiguousarray(Iq, dtype=np.int64)  # the kernel checks the values
        qmetric = getattr(self.quantizer, "metric_type", METRIC_L2)
        if qmetric == self.metric_type:
            base = Dq if self.metric_type == METRIC_L2 else -Dq
        else:
            c = self._coarse_centroids()[np.maximum(Iq, 0)]  # (nq, nprobe, d)
            if self.metric_type == METRIC_L2:
                base = ((x[:, None, :] - c) ** 2).sum(-1)
            else:
                base = -np.einsum("qd,qpd->qp", x, c)
        return np.ascontiguousarray(base, dtype=np.float32), Iq

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
            SearchParametersIVF: ``nprobe`` for this call, and ``sel``, an
            IDSelector; only ids it accepts are returned.

        Returns
        -------
        D : ndarray of shape (n, k), float32
            Approximate squared L2 distances ascending (inner products
            descending); +FLT_MAX (L2) or -FLT_MAX (IP) where fewer than k.
        I : ndarray of shape (n, k), int64
            Ids, -1 where fewer than k vectors were found in the probed lists.
        """
        self._check_trained("search")
        x = check_vectors(x, self.d)
        k = check_positive_int(k, "k")
        nprobe = min(params_nprobe(params, self.nprobe), self.nlist)
        sel = selector_args(params)
        nseg = n_segments(x.shape[0], nprobe * self.ntotal // self.nlist)
        D, I = result_arrays(x.shape[0] * nseg, k)
        if nseg == 1 and self._search_fused(x, nprobe, D, I, sel):
            return D, I  # (already in faiss's form)
        base, probes = self._coarse_terms(x, nprobe)
        self._scan_lists(x, probes, base, nseg, D, I, sel)
        return finish(D, I, nseg, self.metric_type)

    def range_search(
        self, x: ArrayLike, radius: float, *, params: SearchParameters | None = None
    ) -> _range_search.RangeResult:
        """Every vector of the probed lists within `radius` of each query.

        Parameters
        ----------
        x : array-like of shape (n, d)
            Queries.
        radius : float
            L2: squared distances below `radius` are kept; inner product:
            similarities above it.
        params : SearchParametersIVF, optional
            ``nprobe`` for this call, and ``sel``, an IDSelector.

        Returns
        -------
        lims : ndarray of shape (n + 1,), uint64
            Query i's results are ``D[lims[i]:lims[i + 1]]``, ``I[...]``.
        D : ndarray, float32
            Their (approximate) distances or similarities, list by list, not
            sorted (as in faiss).
        I : ndarray, int64
            Their ids.
        """
        self._check_trained("range_search")
        x = check_vectors(x, self.d)
        radius = _range_search.check_radius(radius)
        nprobe = min(params_nprobe(params, self.nprobe), self.nlist)
        base, probes = self._coarse_terms(x, nprobe)
        lists, _arrays = self._range_lists(probes)  # (arrays kept alive meanwhile)
        nseg = n_segments(x.shape[0], nprobe * self.ntotal // self.nlist)
        return _range_search.run(
            x, probes, base, self._range_codebook(), lists, self.code_size,
            self.metric_type, radius, nseg, selector_args(params),
        )  # fmt: skip

    def _search_fused(self, x, nprobe, D, I, sel) -> bool:  # noqa: ANN001
        """Coarse search and list scan in one kernel call where a subclass can
        (few queries, pqfast's flat quantizer), D and I left as search returns
        them (inner products positive); False: use the two steps."""
        return False

    # ------------------------------------------------------- removing, ids
    def remove_ids(self, ids: ArrayLike | IDSelector) -> int:
        """Remove the vectors with these ids (an array, or an IDSelector, as in
        faiss); return how many were removed."""
        arr, selector = ids_to_remove(ids)
        removed = self.invlists.remove_ids(
            selector.members if selector else lambda stored: np.isin(stored, arr)
        )
        if removed:
            self._stored_changed()
        return removed

    def merge_from(self, other: IndexIVF, add_id: int = 0) -> None:
        """Move every vector of `other` (same type, quantizer and codebooks) into
        this index, ids shifted by `add_id`; `other` is left empty, as in faiss."""
        if type(other) is not type(self) or other.nlist != self.nlist:
            raise ValueError("merge_from needs an index of the same type and nlist.")
        if other.code_size != self.code_size or not np.array_equal(
            other._coarse_centroids(), self._coarse_centroids()
        ):
            raise ValueError(
                "merge_from needs the same coarse centroids and code size."
            )
        if hasattr(self, "pq") and not (
            np.array_equal(other.pq.centroids, self.pq.centroids)
            and other.by_residual == self.by_residual
        ):
            raise ValueError("merge_from needs the same PQ codebooks and by_residual.")
        inv = other.invlists
        if inv.sizes.sum() == 0:
            return
        codes = np.concatenate([inv.get_codes(i) for i in range(self.nlist)])
        ids = np.concatenate([inv.get_ids(i) for i in range(self.nlist)]) + int(add_id)
        if ids.min() < 0:
            raise ValueError("merge_from: shifted ids must stay >= 0.")
        self._add_encoded(np.repeat(np.arange(self.nlist), inv.sizes), codes, ids)
        other.reset()

    def _add_encoded(
        self,
        list_nos: NDArray[np.int64],
        codes: NDArray[np.uint8],
        ids: NDArray[np.int64],
    ) -> None:
        """Append already encoded entries (e.g. loaded from faiss) to their lists.

        Parameters
        ----------
        list_nos : ndarray of shape (n,), int64, values in [0, nlist)
        codes : ndarray of shape (n, code_size), uint8
        ids : ndarray of shape (n,), non-negative int64
        """
        ids = check_ids(ids, len(list_nos))
        list_nos = np.asarray(list_nos, np.int64)
        self._check_list_nos(list_nos)
        codes = np.asarray(codes, np.uint8).reshape(len(list_nos), self.code_size)
        self.invlists.add_entries(list_nos, codes, ids)
        if ids.size:
            self._next_id = max(self._next_id, int(ids.max()) + 1)
        self._stored_changed()

    def reset(self) -> None:
        """Remove every vector (training is kept)."""
        self.invlists.reset()
        self._next_id = 0
        self._stored_changed()

    def _stored_changed(self) -> None:
        """After vectors were added or removed: drop what derives from them."""
        self._direct_map = None

    def make_direct_map(self, new_maintain: bool = True) -> None:
        """Build the id -> (list, offset) map now (it is otherwise built on demand)."""
        inv = self.invlists
        ids = np.concatenate([inv.get_ids(i) for i in range(self.nlist)] or [[]])
        lists = np.repeat(np.arange(self.nlist, dtype=np.int64), inv.sizes)
        offsets = np.arange(ids.size, dtype=np.int64) - np.repeat(
            np.cumsum(inv.sizes) - inv.sizes, inv.sizes
        )
        order = np.argsort(ids, kind="stable")
        self._direct_map = (
            ids[order].astype(np.int64),
            np.stack([lists, offsets], 1)[order],
        )

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        """Decoded vector with id `key` (centroid + decoded residual), shape (d,)."""
        self._check_trained("reconstruct")
        return self._reconstruct_ids(np.array([check_key(key)], np.int64))[0]

    def reconstruct_n(self, i0: int = 0, n: int | None = None) -> NDArray[np.float32]:
        """Decoded vectors with ids i0 .. i0 + n - 1 (default: up to ntotal - 1),
        shape (n, d); every id must be stored."""
        self._check_trained("reconstruct_n")
        i0 = check_key(i0)
        n = max(self.ntotal - i0, 0) if n is None else check_key(n)
        return self._reconstruct_ids(np.arange(i0, i0 + n, dtype=np.int64))

    def _reconstruct_ids(self, keys: NDArray[np.int64]) -> NDArray[np.float32]:
        """Decode the vectors with these ids, list by list."""
        if self._direct_map is None:
            self.make_direct_map()
        sorted_ids, where = self._direct_map
        pos = np.minimum(np.searchsorted(sorted_ids, keys), max(sorted_ids.size - 1, 0))
        missing = keys[sorted_ids[pos] != keys] if sorted_ids.size else keys
        if missing.size:
            raise IdNotFoundError(f"id {missing[0]} is not in the index.")
        lists, offsets = where[pos].T
        out = np.empty((keys.size, self.d), np.float32)
        for list_no in np.unique(lists):
            rows = lists == list_no
            codes = self.invlists.get_codes(list_no)[offsets[rows]]
            out[rows] = self._decode(codes, list_no)
        return out


class IndexIVFPQ(IndexIVF):
    """Inverted-file index with product-quantized residuals (faiss's ``IndexIVFPQ``).

    Each vector is assigned to its nearest of `nlist` coarse centroids and
    stored in that centroid's inverted list as the PQ code of its residual
    (vector minus centroid).  A search scans the `nprobe` lists nearest to the
    query.

    Parameters
    ----------
    quantizer : IndexFlatL2, IndexFlatIP or another index
        Coarse quantizer.  Empty: ``train`` clusters the data and fills it
        (training it first on the centroids if it needs training, e.g. an
        IndexIVFFlat for two-level clustering); holding exactly `nlist`
        centroids: ``train`` uses them as they are.
    d : int
        Vector dimension, a multiple of M.
    nlist : int
        Number of inverted lists.
    M : int
        Number of PQ sub-quantizers.
    nbits : int, default 8
        Bits per sub-code, 1 to 16.
    metric : int, default METRIC_L2
        METRIC_L2 or METRIC_INNER_PRODUCT.
    seed : int, default 1234
        Seeds coarse and PQ training.

    Attributes
    ----------
    nprobe : int
        Lists scanned per query (default 1; values above nlist act as nlist).
    invlists : ArrayInvertedLists
        The lists; ``invlists.list_size(i)`` gives a list's length.
    pq : ProductQuantizer
        The residual quantizer (its k-means settings: ``pq.cp``).
    cp : ClusteringParameters
        Coarse k-means settings; as in faiss, 10 iterations by default.
    """

    def __init__(
        self,
        quantizer: object,
        d: int,
        nlist: int,
        M: int,
        nbits: int = 8,
        metric: int = METRIC_L2,
        seed: int = 1234,
    ) -> None:
        self.pq = ProductQuantizer(d, M, nbits)
        self.pq.cp.seed = int(seed)
        super().__init__(quantizer, d, nlist, self.pq.code_size, metric, seed)
        self.use_precomputed_table = 0  # 0 auto, -1 never, 1 always
        self.precomputed_table_max_bytes = 1 << 31
        self._precomputed: tuple[object, NDArray[np.float32]] | None = None
        self._terms: CodeTerms | None = None  # see _code_terms
        self._fused: tuple[tuple, tuple] | None = None  # see _fused_args
        self._by_residual = True

    @property
    def by_residual(self) -> bool:
        """True (default): codes encode the vector minus its coarse centroid.
        False: codes encode the vector itself, so one lookup table per query
        serves every list (faster per list, usually less accurate).  Set it
        before ``train``."""
        return self._by_residual

    @by_residual.setter
    def by_residual(self, value: bool) -> None:
        if bool(value) != self._by_residual:
            if self.pq.is_trained:
                raise ValueError(
                    "by_residual can only be changed before train (the codebooks "
                    "depend on it)."
                )
            self._by_residual = bool(value)

    def _residuals(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> NDArray[np.float32]:
        """What the PQ encodes: x - centroid by residual, else x itself."""
        if not self._by_residual:
            return x
        residuals = np.take(cents, assign, axis=0)  # one temporary, not two
        np.subtract(x, residuals, out=residuals)
        return residuals

    def _coarse_terms(
        self, x: NDArray[np.float32], nprobe: int
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        base, probes = super()._coarse_terms(x, nprobe)
        if not self._by_residual:  # the distance does not involve the centroid
            l2 = self.metric_type == METRIC_L2
            base[:] = np.einsum("ij,ij->i", x, x)[:, None] if l2 else 0
        return base, probes

    def _encoder_trained(self) -> bool:
        return self.pq.is_trained

    def _min_train_points(self) -> int:
        return self.pq.ksub

    def _train_encoder(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> None:
        """Train the PQ on the residuals of x to their coarse centroids."""
        pq = ProductQuantizer(self.d, self.pq.M, self.pq.nbits)
        pq.cp = self.pq.cp
        pq.train(self._residuals(x, cents, assign))
        return pq.centroids

    def _set_encoder(self, state: object) -> None:
        self.pq._set_centroids(state)

    def _encode(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        return self.pq._encode(self._residuals(x, cents, assign))

    def _decode(self, codes: NDArray[np.uint8], list_no: int) -> NDArray[np.float32]:
        if not self._by_residual:
            return self.pq.decode(codes)
        return self.pq.decode(codes) + self._coarse_centroids()[list_no]

    def precompute_table(self) -> None:
        """Build the L2 list terms now (otherwise built on first use): the
        table, or the per-code terms where those are used (see _code_terms)."""
        self._check_trained("precompute_table")
        self._precomputed = None
        self._list_terms()

    def _precomputed_table(self) -> NDArray[np.float32]:
        """P[l, m, j] = ||y_mj||^2 + 2 <c_l,m, y_mj>, or an empty table if not used.

        Not by residual, the list term is ||y_mj||^2 for every list: one row.
        """
        pq = self.pq
        if not self._by_residual:
            if self.metric_type != METRIC_L2:
                return _EMPTY_TABLE
            return pq._ynorm[None]
        nbytes = self.nlist * pq.M * pq.ksub * 4
        use = self.use_precomputed_table == 1 or (
            self.use_precomputed_table == 0
            and nbytes <= self.precomputed_table_max_bytes
        )
        if self.metric_type != METRIC_L2 or not use:
            return _EMPTY_TABLE
        cents, state = self._term_state()
        if self._precomputed is None or self._precomputed[0] != state:
            self._precomputed = (state, list_term_table(pq, cents))
        return self._precomputed[1]

    def _term_state(self) -> tuple[NDArray[np.float32], tuple]:
        """The coarse centroids and a token of what list terms derive from:
        those centroids and the codebooks (the pq object and its version)."""
        cents = self._coarse_centroids()
        return cents, (self._centroids[0], self.pq, self.pq.version)

    def _code_terms(self) -> NDArray[np.uint64] | None:
        """Addresses of each list's per-code list terms (pqfast/_code_terms.py),
        brought up to date, or None when the search takes list terms from the
        precomputed table or builds them per list.

        Terms are kept for L2 by residual with ``use_precomputed_table`` 0
        (auto) while there are no more codes than table entries, so they never
        take more memory than the table would (nor than
        ``precomputed_table_max_bytes``); 1 asks for the table, -1 for
        neither.  Whichever form is in use, the other is not kept.  For a
        trained index (its callers check; this runs on every search).
        """
        pq = self.pq
        if not (
            self._per_code_terms
            and self.metric_type == METRIC_L2
            and self._by_residual
            and self.use_precomputed_table == 0
            and self.ntotal <= self.nlist * pq.M * pq.ksub
            and 4 * self.ntotal <= self.precomputed_table_max_bytes
        ):
            self._terms = None
            return None
        if self._terms is None:
            self._terms = CodeTerms(self.nlist)
        if self._precomputed is not None:  # one form of the list terms is held
            self._precomputed = self._fused = None  # (the fused arguments hold it)
        return self._terms.refresh(self.invlists, pq, *self._term_state())

    _per_code_terms = True  # the fast-scan subclass has its own list terms

    def _list_terms(self) -> tuple[NDArray[np.float32], NDArray[np.uint64] | None]:
        """The kernels' list terms: (precomputed table, None), or (an empty
        table, addresses of the per-code terms)."""
        terms = self._code_terms()
        if terms is not None:
            return _EMPTY_TABLE, terms
        return self._precomputed_table(), None

    def _stored_changed(self) -> None:
        """Also bring the list terms up to date, so that their cost is part of
        add.  The change itself is done: if this fails (no memory), the next
        search tries again rather than the add being reported as failed."""
        super()._stored_changed()
        if not self.is_trained:  # (reset; every other caller checks it)
            return
        try:
            self._code_terms()
        except Exception:
            pass

    @property
    def nbytes(self) -> int:
        """Bytes held for the stored vectors (codes and ids) and their list
        terms (per code, or the precomputed table, as held)."""
        held = self._precomputed[1].nbytes if self._precomputed is not None else 0
        return super().nbytes + (self._terms.nbytes if self._terms else 0) + held

    def _scan_lists(
        self,
        x: NDArray[np.float32],
        probes: NDArray[np.int64],
        base: NDArray[np.float32],
        nseg: int,
        D: NDArray[np.float32],
        I: NDArray[np.int64],
        sel: tuple,
    ) -> None:
        """Scan the probed lists' PQ codes (the _ivf kernel)."""
        pq = self.pq
        precomp, terms = self._list_terms()
        _ivf.ivfpq_search(
            x, probes, base, pq._cbt, pq._ynorm, precomp, self._coarse_centroids(),
            *self.invlists.kernel_arrays(), self.code_size, pq.nbits,
            self.metric_type == METRIC_L2, nseg, sel, D, I, pq._centroids,
            self._by_residual, DIRECT_SCORING, terms=terms,
        )  # fmt: skip

    def _range_codebook(self) -> tuple:
        precomp, terms = self._list_terms()
        return _range_search.pq_codebook(
            self.pq, precomp, self._coarse_centroids(), terms
        )

    def _search_fused(
        self,
        x: NDArray[np.float32],
        nprobe: int,
        D: NDArray[np.float32],
        I: NDArray[np.int64],
        sel: tuple,
    ) -> bool:
        """One kernel call for up to _FUSED_MAX_QUERIES queries when the
        quantizer is pqfast's IndexFlat of the index's metric: for one query,
        most of the time went to the Python around the two kernels.  Its coarse
        search computes what IndexFlat's does for so few queries (same SIMD
        dot products, same order), so the probes are the same."""
        if x.shape[0] > _FUSED_MAX_QUERIES:
            return False
        terms = self._code_terms()
        args = self._fused_args(terms is not None)
        if args is None:
            return False
        self._fused_kernel(x, nprobe, args, terms, sel, D, I)
        return True

    def _fused_kernel(self, x, nprobe, args, terms, sel, D, I) -> None:  # noqa: ANN001
        """Call the one-call kernel with _fused_args() and _code_terms()."""
        _ivf.ivfpq_search_flat(
            x, nprobe, *args, sel, D, I, self.pq._centroids, DIRECT_SCORING, terms
        )

    def _fused_args(self, code_terms: bool) -> tuple | None:
        """ivfpq_search_flat's arguments from `cnorms` to `l2`, or None when
        the one-call path does not apply (another quantizer, or codes not by
        residual, whose coarse terms differ).

        Cached with the state they are read from: the quantizer (object and
        modification count), the codebooks (``pq.version``), the inverted
        lists object, the precomputed-table settings and whether the list
        terms are per code (`code_terms`: then no table is passed).  Adding or
        removing vectors needs no new arguments: the lists update their
        address and size arrays in place (``kernel_arrays``), as the terms do
        theirs (``_code_terms``, passed per call).
        """
        q, pq = self.quantizer, self.pq
        if (
            not isinstance(q, IndexFlat)
            or q.metric_type != self.metric_type
            or not self._by_residual
        ):
            return None
        state = (
            q,
            q._version,
            pq,
            pq.version,
            self.invlists,
            self.use_precomputed_table,
            self.precomputed_table_max_bytes,
            code_terms,
        )
        if self._fused is None or self._fused[0] != state:
            precomp = _EMPTY_TABLE if code_terms else self._precomputed_table()
            args = (
                q._norms.view(), pq._cbt, pq._ynorm, precomp,
                q._xb.view(), *self.invlists.kernel_arrays(), self.code_size,
                pq.nbits, self.metric_type == METRIC_L2,
            )  # fmt: skip
            self._fused = (state, args)
        return self._fused[1]

    def __repr__(self) -> str:
        pq = self.pq
        return (
            f"IndexIVFPQ(d={self.d}, nlist={self.nlist}, M={pq.M}, nbits={pq.nbits}, "
            f"ntotal={self.ntotal})"
        )


class IndexIVFFlat(IndexIVF):
    """Inverted file storing the full float32 vectors (faiss's ``IndexIVFFlat``).

    Exact distances within the probed lists: the usual recall reference next to
    IndexIVFPQ.

    Parameters
    ----------
    quantizer : IndexFlatL2, IndexFlatIP or another index
        Coarse quantizer (filled by ``train`` when empty), as for IndexIVFPQ.
    d : int
        Vector dimension.
    nlist : int
        Number of inverted lists.
    metric : int, default METRIC_L2
        METRIC_L2 or METRIC_INNER_PRODUCT.
    seed : int, default 1234
        Seeds the coarse k-means.
    """

    def __init__(
        self,
        quantizer: object,
        d: int,
        nlist: int,
        metric: int = METRIC_L2,
        seed: int = 1234,
    ) -> None:
        super().__init__(
            quantizer, d, nlist, 4 * check_positive_int(d, "d"), metric, seed
        )

    def _encode(
        self,
        x: NDArray[np.float32],
        cents: NDArray[np.float32],
        assign: NDArray[np.int64],
    ) -> NDArray[np.uint8]:
        return np.ascontiguousarray(x).view(np.uint8)

    def _decode(self, codes: NDArray[np.uint8], list_no: int) -> NDArray[np.float32]:
        return np.ascontiguousarray(codes).view(np.float32).reshape(-1, self.d)

    def _scan_lists(
        self,
        x: NDArray[np.float32],
        probes: NDArray[np.int64],
        base: NDArray[np.float32],
        nseg: int,
        D: NDArray[np.float32],
        I: NDArray[np.int64],
        sel: tuple,
    ) -> None:
        """Exact distances to the probed lists' vectors (the coarse term is unused)."""
        code_ptrs, id_ptrs, sizes = self.invlists.kernel_arrays()
        _ivf.ivfflat_search(
            x, probes, code_ptrs, id_ptrs, sizes, self.metric_type == METRIC_L2, nseg,
            sel, D, I,
        )  # fmt: skip

    def _range_codebook(self) -> tuple:
        return _range_search.NO_CODEBOOK

    def __repr__(self) -> str:
        return f"IndexIVFFlat(d={self.d}, nlist={self.nlist}, ntotal={self.ntotal})"
