"""Conversion between pqfast and faiss indexes (faiss imported lazily, here only)."""

from __future__ import annotations

import numpy as np

from pqfast.flat import IndexFlat, IndexFlatIP, IndexFlatL2
from pqfast.ivf import IndexIVFPQ
from pqfast.pq import IndexPQ


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "from_faiss/to_faiss need faiss: pip install faiss-cpu"
        ) from None
    return faiss


def _flat_from(faiss, index) -> IndexFlat:
    out = {faiss.METRIC_L2: IndexFlatL2, faiss.METRIC_INNER_PRODUCT: IndexFlatIP}
    cls = out.get(index.metric_type)
    if cls is None:
        raise ValueError(f"from_faiss: metric {index.metric_type} is not supported.")
    flat = cls(index.d)
    if index.ntotal:
        flat.add(index.reconstruct_n(0, index.ntotal))
    return flat


def _pq_centroids(faiss, pq) -> np.ndarray:
    return faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)


def from_faiss(index: object) -> object:
    """A pqfast copy of a faiss IndexFlat{L2,IP}, IndexPQ or IndexIVFPQ (with a
    flat coarse quantizer): trained state and contents, so searches agree."""
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexFlat):
        return _flat_from(faiss, index)
    if type(index) is faiss.IndexPQ:
        out = IndexPQ(index.d, index.pq.M, index.pq.nbits, index.metric_type)
        if index.is_trained:
            out.pq.centroids = _pq_centroids(faiss, index.pq)
            codes = faiss.vector_to_array(index.codes).reshape(index.ntotal, -1)
            out._codes.append(codes)
        return out
    if type(index) is faiss.IndexIVFPQ:
        if not index.by_residual:
            raise ValueError(
                "from_faiss: IndexIVFPQ with by_residual=False is not supported."
            )
        quantizer = faiss.downcast_index(index.quantizer)
        if not isinstance(quantizer, faiss.IndexFlat):
            raise ValueError("from_faiss: only flat coarse quantizers are supported.")
        out = IndexIVFPQ(_flat_from(faiss, quantizer), index.d, index.nlist, index.pq.M,
                         index.pq.nbits, index.metric_type)  # fmt: skip
        out.nprobe = max(1, index.nprobe)
        if index.is_trained:
            out.pq.centroids = _pq_centroids(faiss, index.pq)
            inv = index.invlists
            sizes = np.array([inv.list_size(i) for i in range(index.nlist)])
            codes = [faiss.rev_swig_ptr(inv.get_codes(i), int(n) * inv.code_size).copy()
                     for i, n in enumerate(sizes)]  # fmt: skip
            ids = [
                faiss.rev_swig_ptr(inv.get_ids(i), int(n)).copy()
                for i, n in enumerate(sizes)
            ]
            codes = np.concatenate(codes).reshape(-1, inv.code_size)
            ids = np.concatenate(ids).astype(np.int64)
            if len(ids) and ids.min() < 0:
                raise ValueError("from_faiss: negative ids are not supported.")
            list_nos = np.repeat(np.arange(index.nlist), sizes)
            out.invlists.add_entries(list_nos, codes, ids)
            out._next_id = int(ids.max()) + 1 if len(ids) else 0
        return out
    raise TypeError(f"from_faiss does not support {type(index).__name__}.")


def to_faiss(index: object) -> object:
    """A faiss copy of a pqfast IndexFlat*, IndexPQ or IndexIVFPQ."""
    faiss = _faiss()
    if isinstance(index, IndexFlat):
        l2 = index.metric_type == faiss.METRIC_L2
        out = faiss.IndexFlatL2(index.d) if l2 else faiss.IndexFlatIP(index.d)
        if index.ntotal:
            out.add(index.reconstruct_n(0, index.ntotal))
        return out
    if type(index) is IndexPQ:
        out = faiss.IndexPQ(index.d, index.pq.M, index.pq.nbits, index.metric_type)
        if index.is_trained:
            faiss.copy_array_to_vector(index.pq.centroids.ravel(), out.pq.centroids)
            out.is_trained = True
            if index.ntotal:
                faiss.copy_array_to_vector(np.ascontiguousarray(index.codes).ravel(),
                                           out.codes)  # fmt: skip
                out.ntotal = index.ntotal
        return out
    if type(index) is IndexIVFPQ:
        if not isinstance(index.quantizer, IndexFlat):
            raise TypeError(
                "to_faiss: the coarse quantizer must be pqfast's flat index."
            )
        quantizer = to_faiss(index.quantizer)
        pq = index.pq
        out = faiss.IndexIVFPQ(
            quantizer, index.d, index.nlist, pq.M, pq.nbits, index.metric_type
        )
        out.referenced_objects = [quantizer]  # keep the quantizer alive with the index
        out.nprobe = index.nprobe
        if index.is_trained:
            faiss.copy_array_to_vector(index.pq.centroids.ravel(), out.pq.centroids)
            out.is_trained = True
            out.precompute_table()
            inv = out.invlists
            for i in range(index.nlist):
                codes = np.ascontiguousarray(index.invlists.get_codes(i))
                ids = np.ascontiguousarray(index.invlists.get_ids(i))
                if len(ids):
                    inv.add_entries(
                        i, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes)
                    )
            out.ntotal = index.ntotal
        return out
    raise TypeError(f"to_faiss does not support {type(index).__name__}.")
