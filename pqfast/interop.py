"""Conversion between pqfast and faiss indexes (faiss imported lazily, here only).

Supported both ways: IndexFlat{L2,IP}, IndexPQ, IndexPQFastScan, IndexIVFFlat,
IndexIVFPQ and IndexIVFPQFastScan (flat coarse quantizer, by residual),
IndexPreTransform over an OPQ rotation and any of these, and IndexIDMap over
any of these.  Trained state and contents (codes, ids, centroids) are copied
exactly; fast-scan codes go through faiss's block packing.
"""

from __future__ import annotations

import numpy as np

from pqfast.fastscan import IndexIVFPQFastScan, IndexPQFastScan
from pqfast.flat import IndexFlat, IndexFlatIP, IndexFlatL2
from pqfast.idmap import IndexIDMap
from pqfast.ivf import IndexIVF, IndexIVFFlat, IndexIVFPQ
from pqfast.pq import IndexPQ
from pqfast.transform import IndexPreTransform, OPQMatrix


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError(
            "from_faiss/to_faiss need faiss: pip install faiss-cpu"
        ) from None
    return faiss


# ------------------------------------------------------------- from faiss
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


def _unpack_blocks(faiss, packer, packed: np.ndarray, n: int) -> np.ndarray:
    """Flat codes (n, code_size) of n vectors in faiss's fast-scan block layout."""
    nvec, size = packer.nvec, packer.block_size
    flat = np.empty((-(-n // nvec) * nvec, packer.code_size), np.uint8)
    for b in range(flat.shape[0] // nvec):
        block = np.ascontiguousarray(packed[b * size : (b + 1) * size])
        packer.unpack_all(faiss.swig_ptr(block), faiss.swig_ptr(flat[b * nvec :]))
    return flat[:n]


def _list_contents(faiss, index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(list numbers, flat codes, ids) of every entry of a faiss IVF index."""
    inv = index.invlists
    packer = None
    if isinstance(index, faiss.IndexIVFPQFastScan):
        packer = index.get_CodePacker()
    sizes = np.array([inv.list_size(i) for i in range(index.nlist)], np.int64)
    codes = [np.empty((0, index.code_size), np.uint8)]
    ids = [np.empty(0, np.int64)]
    for i, n in enumerate(sizes.tolist()):
        if n == 0:
            continue
        ids.append(faiss.rev_swig_ptr(inv.get_ids(i), n).astype(np.int64))
        if packer is None:
            raw = faiss.rev_swig_ptr(inv.get_codes(i), n * index.code_size)
            codes.append(raw.reshape(n, index.code_size).copy())
        else:
            nbytes = -(-n // packer.nvec) * packer.block_size
            packed = faiss.rev_swig_ptr(inv.get_codes(i), nbytes)
            codes.append(_unpack_blocks(faiss, packer, packed, n))
    list_nos = np.repeat(np.arange(index.nlist), sizes)
    return list_nos, np.concatenate(codes), np.concatenate(ids)


def _ivf_from(faiss, index) -> IndexIVF:
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexFlat):
        raise ValueError(
            f"from_faiss: only flat coarse quantizers are supported, got "
            f"{type(quantizer).__name__}."
        )
    q = _flat_from(faiss, quantizer)
    d, nlist, metric = index.d, index.nlist, index.metric_type
    if isinstance(index, faiss.IndexIVFFlat):
        out = IndexIVFFlat(q, d, nlist, metric)
    else:
        cls = IndexIVFPQ if type(index) is faiss.IndexIVFPQ else IndexIVFPQFastScan
        out = cls(q, d, nlist, index.pq.M, index.pq.nbits, metric)
        out.by_residual = bool(index.by_residual)
    out.nprobe = max(1, index.nprobe)
    if index.is_trained:
        if hasattr(out, "pq"):
            out.pq.centroids = _pq_centroids(faiss, index.pq)
        out._add_encoded(*_list_contents(faiss, index))
    return out


def _pre_transform_from(faiss, index) -> IndexPreTransform:
    if index.chain.size() != 1:
        raise ValueError(
            f"from_faiss: IndexPreTransform with {index.chain.size()} transforms; "
            "pqfast supports exactly one (an OPQ rotation)."
        )
    vt = faiss.downcast_VectorTransform(index.chain.at(0))
    if not isinstance(vt, faiss.LinearTransform) or vt.have_bias:
        raise ValueError(
            f"from_faiss: the transform {type(vt).__name__} is not supported "
            "(pqfast supports OPQ rotations: a LinearTransform without bias)."
        )
    inner = _from(faiss, faiss.downcast_index(index.index))
    # M only matters for retraining; faiss's files do not keep it
    if isinstance(vt, faiss.OPQMatrix):
        M = vt.M
    else:
        M = inner.pq.M if hasattr(inner, "pq") else 1
    if not vt.is_trained:
        return IndexPreTransform(OPQMatrix(vt.d_in, M, vt.d_out), inner)
    A = faiss.vector_to_array(vt.A).reshape(vt.d_out, vt.d_in)
    return IndexPreTransform(OPQMatrix._from_A(A, M), inner)


def _from(faiss, index) -> object:
    if isinstance(index, faiss.IndexFlat):
        return _flat_from(faiss, index)
    kind = type(index)
    if kind in (faiss.IndexPQ, faiss.IndexPQFastScan):
        cls = IndexPQ if kind is faiss.IndexPQ else IndexPQFastScan
        out = cls(index.d, index.pq.M, index.pq.nbits, index.metric_type)
        if index.is_trained:
            out.pq.centroids = _pq_centroids(faiss, index.pq)
        if index.ntotal and kind is faiss.IndexPQ:
            out._codes.append(
                faiss.vector_to_array(index.codes).reshape(index.ntotal, -1)
            )
        elif index.ntotal:
            packed = faiss.AlignedTable_to_array(index.codes)
            packer = index.get_CodePacker()
            out._add_codes(_unpack_blocks(faiss, packer, packed, index.ntotal))
        return out
    if kind in (faiss.IndexIVFFlat, faiss.IndexIVFPQ, faiss.IndexIVFPQFastScan):
        return _ivf_from(faiss, index)
    if kind is faiss.IndexPreTransform:
        return _pre_transform_from(faiss, index)
    if kind in (faiss.IndexIDMap, faiss.IndexIDMap2):
        inner = _from(faiss, faiss.downcast_index(index.index))
        return IndexIDMap._from_parts(inner, faiss.vector_to_array(index.id_map))
    raise TypeError(f"from_faiss does not support {kind.__name__}.")


def from_faiss(index: object) -> object:
    """A pqfast copy of a faiss index: trained state and contents, so searches agree.

    Supported: IndexFlat{L2,IP}, IndexPQ, IndexPQFastScan, IndexIVFFlat,
    IndexIVFPQ and IndexIVFPQFastScan (flat coarse quantizer, by residual),
    IndexPreTransform over one OPQ rotation (any LinearTransform without bias
    whose matrix is orthonormal), IndexIDMap/IndexIDMap2.  Other types and
    options raise a TypeError or ValueError naming them.
    """
    faiss = _faiss()
    return _from(faiss, faiss.downcast_index(index))


# --------------------------------------------------------------- to faiss
def _set_pq(faiss, ours, theirs) -> None:
    faiss.copy_array_to_vector(ours.pq.centroids.ravel(), theirs.pq.centroids)
    theirs.is_trained = True


def _ivf_to(faiss, index: IndexIVF) -> object:
    if not isinstance(index.quantizer, IndexFlat):
        raise TypeError("to_faiss: the coarse quantizer must be pqfast's flat index.")
    quantizer = to_faiss(index.quantizer)
    if type(index) is IndexIVFFlat:
        out = faiss.IndexIVFFlat(quantizer, index.d, index.nlist, index.metric_type)
    else:
        pq = index.pq
        out = faiss.IndexIVFPQ(
            quantizer, index.d, index.nlist, pq.M, pq.nbits, index.metric_type
        )
        out.by_residual = index.by_residual
    out.referenced_objects = [quantizer]  # keep the quantizer alive with the index
    out.nprobe = index.nprobe
    if index.is_trained:
        if hasattr(index, "pq"):
            _set_pq(faiss, index, out)
            out.precompute_table()
        out.is_trained = True
        for i in range(index.nlist):
            codes = np.ascontiguousarray(index.invlists.get_codes(i))
            ids = np.ascontiguousarray(index.invlists.get_ids(i))
            if len(ids):
                out.invlists.add_entries(
                    i, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes)
                )
        out.ntotal = index.ntotal
    if type(index) is IndexIVFPQFastScan:
        fast = faiss.IndexIVFPQFastScan(out, index.bbs)  # repacks the lists
        fast.referenced_objects = [quantizer]
        fast.nprobe = index.nprobe
        return fast
    return out


def _to(faiss, index: object) -> object:
    if isinstance(index, IndexFlat):
        l2 = index.metric_type == faiss.METRIC_L2
        out = faiss.IndexFlatL2(index.d) if l2 else faiss.IndexFlatIP(index.d)
        if index.ntotal:
            out.add(index.reconstruct_n(0, index.ntotal))
        return out
    if type(index) in (IndexPQ, IndexPQFastScan):
        pq = index.pq
        out = faiss.IndexPQ(index.d, pq.M, pq.nbits, index.metric_type)
        if index.is_trained:
            _set_pq(faiss, index, out)
            codes = index._codes.view()  # flat codes (fast scan: unpacked blocks)
            faiss.copy_array_to_vector(np.ascontiguousarray(codes).ravel(), out.codes)
            out.ntotal = index.ntotal
        return out if type(index) is IndexPQ else faiss.IndexPQFastScan(out, index.bbs)
    if isinstance(index, IndexIVF):
        return _ivf_to(faiss, index)
    if type(index) is IndexPreTransform:
        t = index.transform
        opq = faiss.OPQMatrix(t.d_in, t.M, t.d_out)
        if t.is_trained:
            faiss.copy_array_to_vector(np.ascontiguousarray(t.A).ravel(), opq.A)
            opq.is_trained = True
            opq.is_orthonormal = True
        inner = _to(faiss, index.index)
        out = faiss.IndexPreTransform(opq, inner)
        out.referenced_objects = [opq, inner]
        return out
    if type(index) is IndexIDMap:
        inner = _to(faiss, index.index)
        # faiss's IndexIDMap needs an empty index: build it empty, then swap in
        out = faiss.IndexIDMap(faiss.IndexFlat(inner.d, inner.metric_type))
        out.index = inner
        out.referenced_objects = [inner]
        out.is_trained, out.ntotal = inner.is_trained, inner.ntotal
        faiss.copy_array_to_vector(np.ascontiguousarray(index.id_map), out.id_map)
        return out
    raise TypeError(f"to_faiss does not support {type(index).__name__}.")


def to_faiss(index: object) -> object:
    """A faiss copy of a pqfast index (every type from_faiss supports)."""
    return _to(_faiss(), index)
