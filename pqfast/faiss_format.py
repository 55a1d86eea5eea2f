"""Reading faiss's own index files (``faiss.write_index``, ``faiss.serialize_index``).

``pqfast.read_index`` and ``deserialize_index`` recognize these by their
leading four-character code (fourcc) and load them here into the pqfast
equivalent; faiss itself is not needed.  The arrays are copied into memory
(``IO_FLAG_MMAP`` does not apply to faiss files).

Layout parsed (as faiss writes it; all integers little-endian)::

    fourcc            4 ASCII bytes naming the class, e.g. b"IxF2"
    vector<T>         item count (uint64), then the items
    index header      d int32, ntotal int64, two unused int64, is_trained
                      uint8, metric_type int32 (1 L2, 0 inner product; other
                      metrics add a float32 argument and are not supported)

    IxF2 / IxFI       IndexFlatL2 / IndexFlatIP: header; the vectors as
                      vector<float32> (ntotal * d items)
    IxPq              IndexPQ: header; product quantizer; codes vector<uint8>;
                      search_type int32 (0: plain ADC, else polysemous),
                      encode_signs uint8, polysemous_ht int32
    product quantizer d, M, nbits uint64; centroids vector<float32>
                      (M * 2**nbits * d/M items)
    IVF header        header; nlist, nprobe uint64; the coarse quantizer (a
                      whole index, recursively); direct map: type int8 (0 none,
                      1 array, 2 hash table), vector<int64>, and for a hash
                      table a vector of (int64, int64) pairs
    IwFl              IndexIVFFlat: IVF header; inverted lists
    IwPQ              IndexIVFPQ: IVF header; by_residual uint8; code_size
                      uint64; product quantizer; inverted lists
    inverted lists    b"ilar" (in-memory lists); nlist, code_size uint64; then
                      b"full" and vector<uint64> of the nlist sizes, or b"sprs"
                      and vector<uint64> of (list number, size) pairs of the
                      non-empty lists; then for each non-empty list in order,
                      its codes (size * code_size bytes) and its ids (size int64)
    IxPT              IndexPreTransform: header; n int32; n transforms; the
                      wrapped index
    LTra / rrot       LinearTransform (faiss writes its OPQMatrix as one) /
                      RandomRotationMatrix: have_bias uint8, A vector<float32>
                      (d_out x d_in, y = A x + b), b vector<float32>; then, as
                      for every transform, d_in int32, d_out int32, is_trained
                      uint8
    IxMp / IxM2       IndexIDMap / IndexIDMap2: header; the wrapped index;
                      id_map vector<int64>

Other classes and options (polysemous search, non-flat
coarse quantizers, on-disk or block inverted lists, legacy fourccs, PCA and
other transforms) raise UnsupportedIndexError naming them; a file that ends
early or contradicts itself raises CorruptIndexError.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2
from pqfast._storage import aligned_copy
from pqfast._validation import CorruptIndexError
from pqfast.flat import IndexFlat, IndexFlatIP, IndexFlatL2
from pqfast.idmap import IndexIDMap
from pqfast.ivf import IndexIVF, IndexIVFFlat, IndexIVFPQ
from pqfast.pq import IndexPQ
from pqfast.transform import IndexPreTransform, OPQMatrix


class UnsupportedIndexError(ValueError):
    """A faiss index file holds a class or option that pqfast cannot load."""


# fourccs of faiss classes pqfast does not load, for the error message
_UNSUPPORTED = {
    "IxFl": "IndexFlat with a metric other than L2 and inner product",
    "IxHe": "IndexLSH", "IxSQ": "IndexScalarQuantizer", "IxLa": "IndexLattice",
    "IxRq": "IndexResidualQuantizer", "IxLS": "IndexLocalSearchQuantizer",
    "IxPR": "IndexProductResidualQuantizer",
    "IxPL": "IndexProductLocalSearchQuantizer",
    "ILfs": "IndexLocalSearchQuantizerFastScan",
    "IRfs": "IndexResidualQuantizerFastScan",
    "IPLf": "IndexProductLocalSearchQuantizerFastScan",
    "IPRf": "IndexProductResidualQuantizerFastScan",
    "IVLf": "IndexIVFLocalSearchQuantizerFastScan",
    "IVRf": "IndexIVFResidualQuantizerFastScan",
    "NPLf": "IndexIVFProductLocalSearchQuantizerFastScan",
    "NPRf": "IndexIVFProductResidualQuantizerFastScan",
    "ImRQ": "ResidualCoarseQuantizer", "Ix2L": "Index2Layer",
    "IwFd": "IndexIVFFlatDedup", "IwSq": "IndexIVFScalarQuantizer",
    "IwLS": "IndexIVFLocalSearchQuantizer", "IwRQ": "IndexIVFResidualQuantizer",
    "IwPL": "IndexIVFProductLocalSearchQuantizer",
    "IwPR": "IndexIVFProductResidualQuantizer", "IwSh": "IndexIVFSpectralHash",
    "IwQR": "IndexIVFPQR", "IvQR": "IndexIVFPQR (legacy format)",
    "IxPQ": "IndexPQ (legacy format; re-save it with a recent faiss)",
    "IxPo": "IndexPQ (legacy format; re-save it with a recent faiss)",
    "IvPQ": "IndexIVFPQ (legacy format; re-save it with a recent faiss)",
    "IvFl": "IndexIVFFlat (legacy format; re-save it with a recent faiss)",
    "IvFL": "IndexIVFFlat (legacy format; re-save it with a recent faiss)",
    "IwIQ": "IndexIVFIndependentQuantizer", "Imiq": "MultiIndexQuantizer",
    "IxRF": "IndexRefine", "IHNf": "IndexHNSWFlat", "IHNp": "IndexHNSWPQ",
    "IHNs": "IndexHNSWSQ", "IHN2": "IndexHNSW2Level", "IHc2": "IndexHNSWCagra",
    "INSf": "IndexNSGFlat", "INSp": "IndexNSGPQ", "INSs": "IndexNSGSQ",
    "INNf": "IndexNNDescentFlat", "IPfs": "IndexPQFastScan",
    "IwPf": "IndexIVFPQFastScan", "IRMf": "IndexRowwiseMinMax",
    "IRMh": "IndexRowwiseMinMaxFP16", "Ixrq": "IndexRaBitQ", "Iwrq": "IndexIVFRaBitQ",
    "null": "an empty (null) index",
}  # fmt: skip
_TRANSFORMS = {
    "Pcam": "PCAMatrix", "Viqm": "ITQMatrix", "RmDT": "RemapDimensionsTransform",
    "VNrm": "NormalizationTransform", "VCnt": "CenteringTransform",
    "Viqt": "ITQTransform",
}  # fmt: skip
_INVLISTS = {"il00": "no inverted lists", "ilod": "on-disk inverted lists",
             "ilbl": "block inverted lists"}  # fmt: skip
_MAX_NESTING = 8


class _Reader:
    """Sequential reads from a buffer; running past its end is CorruptIndexError."""

    def __init__(self, buf: memoryview, where: str) -> None:
        self.buf, self.pos, self.where = buf, 0, where

    def corrupt(self, why: str) -> CorruptIndexError:
        return CorruptIndexError(
            f"{self.where}: not a valid faiss index file: {why} (byte {self.pos})."
        )

    def unsupported(self, what: str) -> UnsupportedIndexError:
        return UnsupportedIndexError(
            f"{self.where}: faiss index file with {what}: not supported by pqfast."
        )

    def _advance(self, nbytes: int) -> int:
        if nbytes < 0 or self.pos + nbytes > len(self.buf):
            raise self.corrupt("truncated")
        start, self.pos = self.pos, self.pos + nbytes
        return start

    def scalar(self, fmt: str) -> int | float:
        """One little-endian value of struct format `fmt` ("i", "q", "Q", "B")."""
        return struct.unpack_from(
            "<" + fmt, self.buf, self._advance(struct.calcsize(fmt))
        )[0]

    def fourcc(self) -> str:
        return bytes(self.buf[self._advance(4) : self.pos]).decode("latin-1")

    def array(self, dtype: str, count: int) -> NDArray:
        """`count` items of `dtype`, copied (writable, aligned)."""
        dt = np.dtype(dtype)
        start = self._advance(count * dt.itemsize)
        return aligned_copy(np.frombuffer(self.buf, dt, count, start))

    def vector(self, dtype: str, per_item: int = 1) -> NDArray:
        """A counted vector; each counted item is `per_item` values of `dtype`."""
        return self.array(dtype, self.scalar("Q") * per_item)


# --------------------------------------------------------------- pieces
def _header(r: _Reader) -> tuple[int, int, bool, int]:
    """(d, ntotal, is_trained, metric) of an index header."""
    d, ntotal = r.scalar("i"), r.scalar("q")
    r.array("u1", 16)  # two unused fields
    trained, metric = bool(r.scalar("B")), r.scalar("i")
    if d <= 0 or ntotal < 0:
        raise r.corrupt(f"d={d}, ntotal={ntotal}")
    if metric not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise r.unsupported(f"metric_type {metric} (only L2 and inner product)")
    return d, ntotal, trained, metric


def _product_quantizer(r: _Reader, d: int) -> tuple[int, int, NDArray[np.float32]]:
    """(M, nbits, centroids (M, ksub, dsub)) of a product quantizer of dimension d."""
    pq_d, M, nbits = r.scalar("Q"), r.scalar("Q"), r.scalar("Q")
    centroids = r.vector("<f4")
    if pq_d != d or not 0 < M <= d or d % M or not 1 <= nbits <= 16:
        raise r.corrupt(f"product quantizer d={pq_d}, M={M}, nbits={nbits}")
    if centroids.size != d << nbits:
        raise r.corrupt(f"{centroids.size} PQ centroid values, expected {d << nbits}")
    return M, nbits, centroids.reshape(M, 1 << nbits, d // M)


def _skip_direct_map(r: _Reader) -> None:
    kind = r.scalar("b")
    if kind not in (0, 1, 2):
        raise r.corrupt(f"direct map type {kind}")
    r.vector("<i8")
    if kind == 2:
        r.vector("<i8", per_item=2)


def _inverted_lists(r: _Reader, nlist: int, code_size: int) -> tuple[NDArray, ...]:
    """(list numbers, codes, ids) of every entry, in file order."""
    kind = r.fourcc()
    if kind != "ilar":
        what = _INVLISTS.get(kind, f"inverted lists {kind!r}")
        raise r.unsupported(f"{what} (pqfast reads in-memory ArrayInvertedLists)")
    if (r.scalar("Q"), r.scalar("Q")) != (nlist, code_size):
        raise r.corrupt("inverted lists of another nlist or code size")
    layout, sizes = r.fourcc(), r.vector("<u8")
    if layout == "full" and sizes.size == nlist:
        lists = np.arange(nlist)
    elif layout == "sprs" and sizes.size % 2 == 0:
        lists, sizes = sizes[0::2], sizes[1::2]
    else:
        raise r.corrupt(f"inverted list sizes ({layout!r}, {sizes.size} values)")
    if sizes.size and (lists.max() >= nlist or sizes.max() > len(r.buf)):
        raise r.corrupt("inverted list numbers or sizes out of range")
    lists, sizes = lists.astype(np.int64), sizes.astype(np.int64)
    codes = [np.empty((0, code_size), np.uint8)]
    ids = [np.empty(0, np.int64)]
    for n in sizes[sizes > 0].tolist():
        codes.append(r.array("u1", n * code_size).reshape(n, code_size))
        ids.append(r.array("<i8", n))
    return np.repeat(lists, sizes), np.concatenate(codes), np.concatenate(ids)


# -------------------------------------------------------------- indexes
def _flat(r: _Reader, fourcc: str, depth: int) -> IndexFlat:
    d, ntotal, _, metric = _header(r)
    xb = r.vector("<f4")
    if xb.size != ntotal * d:
        raise r.corrupt(f"{xb.size} stored values for {ntotal} vectors of d={d}")
    index = (IndexFlatL2 if metric == METRIC_L2 else IndexFlatIP)(d)
    index.add(xb.reshape(ntotal, d))
    return index


def _pq(r: _Reader, fourcc: str, depth: int) -> IndexPQ:
    d, ntotal, trained, metric = _header(r)
    M, nbits, centroids = _product_quantizer(r, d)
    codes = r.vector("u1")
    search_type, _, _ = r.scalar("i"), r.scalar("B"), r.scalar("i")
    if search_type != 0:
        raise r.unsupported(f"IndexPQ search_type={search_type} (polysemous search)")
    index = IndexPQ(d, M, nbits, metric)
    if codes.size != ntotal * index.code_size or (ntotal and not trained):
        raise r.corrupt(f"{codes.size} code bytes for {ntotal} vectors")
    if trained:
        index.pq.centroids = centroids
    index._codes.append(codes.reshape(ntotal, index.code_size))
    return index


def _ivf(r: _Reader, fourcc: str, depth: int) -> IndexIVF:
    d, ntotal, trained, metric = _header(r)
    nlist, nprobe = r.scalar("Q"), r.scalar("Q")
    quantizer = _index(r, depth + 1)
    if not isinstance(quantizer, IndexFlat):
        raise r.unsupported(
            f"a {type(quantizer).__name__} coarse quantizer (only flat ones)"
        )
    if quantizer.d != d or nlist == 0 or (trained and quantizer.ntotal != nlist):
        raise r.corrupt(f"coarse quantizer of d={quantizer.d}, nlist={nlist}")
    _skip_direct_map(r)
    if fourcc == "IwFl":
        index = IndexIVFFlat(quantizer, d, nlist, metric)
    else:
        by_residual, code_size = r.scalar("B"), r.scalar("Q")
        M, nbits, centroids = _product_quantizer(r, d)
        index = IndexIVFPQ(quantizer, d, nlist, M, nbits, metric)
        index.by_residual = bool(by_residual)
        if code_size != index.code_size:
            raise r.corrupt(f"code_size {code_size} for M={M}, nbits={nbits}")
        if trained:
            index.pq.centroids = centroids
    index.nprobe = max(1, nprobe)
    list_nos, codes, ids = _inverted_lists(r, nlist, index.code_size)
    if ids.size != ntotal or (ntotal and not index.is_trained):
        raise r.corrupt(f"{ids.size} stored vectors, header says {ntotal}")
    if ids.size and ids.min() < 0:
        raise r.unsupported("negative ids")
    index._add_encoded(list_nos, codes, ids)
    return index


def _pre_transform(r: _Reader, fourcc: str, depth: int) -> IndexPreTransform:
    _header(r)
    count = r.scalar("i")
    if count != 1:
        raise r.unsupported(f"{count} chained transforms (pqfast holds one)")
    kind = r.fourcc()
    if kind not in ("LTra", "rrot"):
        name = _TRANSFORMS.get(kind)
        if name is None:
            raise r.corrupt(f"unknown transform {kind!r}")
        raise r.unsupported(f"a {name} transform (only OPQ rotations)")
    has_bias, A, b = r.scalar("B"), r.vector("<f4"), r.vector("<f4")
    d_in, d_out, trained = r.scalar("i"), r.scalar("i"), r.scalar("B")
    inner = _index(r, depth + 1)
    if has_bias and b.any():
        raise r.unsupported("a linear transform with a bias")
    if not 0 < d_out <= d_in or (trained and A.size != d_in * d_out):
        raise r.corrupt(f"transform of d_in={d_in}, d_out={d_out}, {A.size} values")
    # M only matters for retraining, and faiss does not save it: the PQ's M
    M = inner.pq.M if hasattr(inner, "pq") else 1
    if not trained:
        return IndexPreTransform(OPQMatrix(d_in, M, d_out), inner)
    try:
        transform = OPQMatrix._from_A(A.reshape(d_out, d_in), M)
    except ValueError:
        raise r.unsupported("a linear transform that is not a rotation (OPQ)") from None
    return IndexPreTransform(transform, inner)


def _id_map(r: _Reader, fourcc: str, depth: int) -> IndexIDMap:
    _header(r)
    inner = _index(r, depth + 1)
    ids = r.vector("<i8")
    if ids.size != inner.ntotal:
        raise r.corrupt(f"{ids.size} ids for {inner.ntotal} vectors")
    if ids.size and ids.min() < 0:
        raise r.unsupported("negative ids")
    return IndexIDMap._from_parts(inner, ids)


_READERS = {
    "IxF2": _flat, "IxFI": _flat, "IxPq": _pq, "IwFl": _ivf, "IwPQ": _ivf,
    "IxPT": _pre_transform, "IxMp": _id_map, "IxM2": _id_map,
}  # fmt: skip
FOURCCS = frozenset(_READERS) | frozenset(_UNSUPPORTED)


def _index(r: _Reader, depth: int) -> object:
    if depth > _MAX_NESTING:
        raise r.corrupt("indexes nested too deeply")
    fourcc = r.fourcc()
    reader = _READERS.get(fourcc)
    if reader is not None:
        return reader(r, fourcc, depth)
    if fourcc in _UNSUPPORTED:
        raise r.unsupported(f"{_UNSUPPORTED[fourcc]} ({fourcc!r})")
    raise r.corrupt(f"unknown index type {fourcc!r}")


def is_faiss_file(buf: memoryview) -> bool:
    """Whether `buf` starts with the fourcc of a faiss index class."""
    return bytes(buf[:4]).decode("latin-1") in FOURCCS


def read_faiss_index(buf: memoryview, where: str) -> object:
    """The pqfast equivalent of the faiss index serialized in `buf`.

    Raises
    ------
    UnsupportedIndexError
        A class or option pqfast does not support (a ValueError).
    CorruptIndexError
        The data ends early or contradicts itself.
    """
    r = _Reader(buf, where)
    try:
        index = _index(r, 0)
    except (CorruptIndexError, UnsupportedIndexError):
        raise
    except (ValueError, TypeError) as exc:  # parameters pqfast's classes reject
        raise r.corrupt(str(exc)) from None
    if r.pos != len(buf):
        raise r.corrupt(f"{len(buf) - r.pos} bytes after the index")
    return index
