"""Persistence: write_index / read_index, serialize_index / deserialize_index.

File format (version 1), all integers little-endian::

    bytes 0-7    magic b"PQFASTIX"
    bytes 8-11   format version (uint32)
    bytes 12-15  header length H (uint32)
    16 .. 16+H   header: UTF-8 JSON {"type", "params", "arrays"}
    next 4       CRC-32 of the header (uint32)
    then         the arrays' raw bytes, each at a 64-byte aligned offset

Each entry of "arrays" gives name, dtype ("<f4", "<i8", "|u1"), shape, offset
and the CRC-32 of its bytes.  A wrapper (IndexPreTransform, IndexIDMap) nests
the wrapped index's {"type", "params"} under params["index"] and stores that
index's arrays with the prefix "index." next to its own ("R", the OPQ
rotation; "id_map"); this added types, not a new layout, so the version is
still 1 (an older pqfast rejects such a file as of an unknown type).

Reading checks the magic, the version, both kinds of checksum, every offset
and every shape against the parameters, and raises a ValueError naming the
problem; nothing in a file is executed (no pickle).
``read_index(path, IO_FLAG_MMAP)`` maps the arrays (copy-on-write) instead of
reading them, so an index larger than RAM can be searched; adding to a
memory-mapped list copies that list into memory.

``read_index`` and ``deserialize_index`` also load files written by faiss
(recognized by their leading fourcc; see `pqfast.faiss_format`).
"""

from __future__ import annotations

import copyreg
import io
import json
import mmap
import os
import struct
import zlib
from dataclasses import asdict
from typing import IO, BinaryIO

import numpy as np
from numpy.typing import NDArray

from pqfast._storage import aligned_copy
from pqfast._validation import CorruptIndexError, sq_norms
from pqfast.faiss_format import is_faiss_file, read_faiss_index
from pqfast.fastscan import IndexIVFPQFastScan, IndexPQFastScan
from pqfast.flat import IndexFlat, IndexFlatIP, IndexFlatL2
from pqfast.idmap import IndexIDMap
from pqfast.ivf import IndexIVFFlat, IndexIVFPQ
from pqfast.kmeans import ClusteringParameters
from pqfast.pq import IndexPQ
from pqfast.transform import IndexPreTransform, OPQMatrix

MAGIC = b"PQFASTIX"
VERSION = 1
IO_FLAG_MMAP = 1
IO_FLAG_READ_ONLY = 2
_ALIGN = 64
_DTYPES = {"<f4": np.float32, "<i8": np.int64, "|u1": np.uint8}
_OPQ_SETTINGS = ("niter", "niter_pq", "niter_pq_0", "max_train_points", "seed")
_PLAIN_TYPES = {cls.__name__: cls for cls in (
    IndexFlat, IndexFlatL2, IndexFlatIP, IndexPQ, IndexPQFastScan, IndexIVFPQ,
    IndexIVFPQFastScan, IndexIVFFlat)}  # fmt: skip
_MAX_NESTING = 8  # wrappers (IndexPreTransform, IndexIDMap) around one index


# ----------------------------------------------------------------- state
def _flat_state(index: IndexFlat) -> tuple[dict, dict]:
    return {"d": index.d, "metric": index.metric_type}, {"xb": index._xb.view()}


def _pq_state(index) -> tuple[dict, dict]:
    pq = index.pq
    params = {"d": pq.d, "M": pq.M, "nbits": pq.nbits, "metric": index.metric_type,
              "pq_cp": asdict(pq.cp), "trained": pq.is_trained}  # fmt: skip
    arrays = {"centroids": pq._centroids} if pq.is_trained else {}
    return params, arrays


def _nested_state(index: IndexPreTransform | IndexIDMap) -> tuple[str, dict, dict]:
    """The wrapped index's state under params["index"] and arrays "index.*"."""
    kind, params, arrays = _state(index.index)
    arrays = {f"index.{name}": a for name, a in arrays.items()}
    params = {"index": {"type": kind, "params": params}}
    if type(index) is IndexIDMap:
        return "IndexIDMap", params, {"id_map": index._ids.view(), **arrays}
    t = index.transform
    params["transform"] = {"type": "OPQMatrix", "d_in": t.d_in, "d_out": t.d_out,
                           "M": t.M, "trained": t.is_trained,
                           **{k: getattr(t, k) for k in _OPQ_SETTINGS}}  # fmt: skip
    if t.is_trained:
        arrays["R"] = t.R
    return "IndexPreTransform", params, arrays


def _state(index: object) -> tuple[str, dict, dict]:
    """(type name, JSON-able parameters, arrays) of a supported index."""
    if type(index) in (IndexPreTransform, IndexIDMap):
        if type(index) is IndexPreTransform and type(index.transform) is not OPQMatrix:
            raise TypeError("write_index saves IndexPreTransform over an OPQMatrix.")
        return _nested_state(index)
    if type(index) in (IndexFlat, IndexFlatL2, IndexFlatIP):
        params, arrays = _flat_state(index)
        return type(index).__name__, params, arrays
    if type(index) is IndexPQ:
        params, arrays = _pq_state(index)
        return "IndexPQ", params, {**arrays, "codes": index._codes.view()}
    if type(index) is IndexPQFastScan:
        params, arrays = _pq_state(index)
        params["ntotal"] = index.ntotal
        return (
            "IndexPQFastScan",
            params,
            {**arrays, "blocks": index._codes.blocks.view()},
        )
    if type(index) in (IndexIVFPQ, IndexIVFPQFastScan, IndexIVFFlat):
        if type(index) is IndexIVFFlat:
            params, arrays = {"d": index.d, "metric": index.metric_type}, {}
        else:
            params, arrays = _pq_state(index)
        inv = index.invlists
        params.update(
            nlist=index.nlist, nprobe=index.nprobe, next_id=index._next_id,
            cp=asdict(index.cp), quantizer_metric=index.quantizer.metric_type,
            use_precomputed_table=getattr(index, "use_precomputed_table", 0),
            by_residual=getattr(index, "by_residual", True),
        )  # fmt: skip
        q = index.quantizer
        if type(q) in (IndexFlat, IndexFlatL2, IndexFlatIP):
            arrays["quantizer"] = q._xb.view()
        else:  # another pqfast index (e.g. an IndexIVFFlat): nested, "quantizer.*"
            qkind, qparams, qarrays = _state(q)
            params["quantizer"] = {"type": qkind, "params": qparams}
            arrays.update({f"quantizer.{k}": a for k, a in qarrays.items()})
        arrays.update(
            list_sizes=np.array(inv.sizes),
            codes=np.concatenate([inv.get_codes(i) for i in range(index.nlist)]),
            ids=np.concatenate([inv.get_ids(i) for i in range(index.nlist)]),
        )
        return type(index).__name__, params, arrays
    raise TypeError(f"write_index does not support {type(index).__name__}.")


# ---------------------------------------------------------------- writing
def _write(index: object, f: BinaryIO) -> None:
    kind, params, arrays = _state(index)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    entries, offset = [], 0
    for name, a in arrays.items():
        entries.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape),
                        "offset": offset, "crc32": zlib.crc32(a.data)})  # fmt: skip
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    header = json.dumps({"type": kind, "params": params, "arrays": entries}).encode()
    start = 16 + len(header) + 4
    data_start = -(-start // _ALIGN) * _ALIGN
    f.write(MAGIC + struct.pack("<II", VERSION, len(header)) + header)
    f.write(struct.pack("<I", zlib.crc32(header)) + b"\0" * (data_start - start))
    for a in arrays.values():
        f.write(a.data)
        f.write(b"\0" * (-(-a.nbytes // _ALIGN) * _ALIGN - a.nbytes))


def write_index(index: object, path_or_file: str | os.PathLike | IO[bytes]) -> None:
    """Save an index (IndexFlat*, IndexPQ, IndexPQFastScan, IndexIVFPQ,
    IndexIVFPQFastScan, IndexIVFFlat, and IndexPreTransform over an OPQMatrix
    or IndexIDMap wrapping any of these) to a path or a binary file object."""
    if hasattr(path_or_file, "write"):
        _write(index, path_or_file)
        return
    with open(path_or_file, "wb") as f:
        _write(index, f)


def serialize_index(index: object) -> NDArray[np.uint8]:
    """The index in the file format, as a uint8 array."""
    buf = io.BytesIO()
    _write(index, buf)
    return np.frombuffer(buf.getvalue(), dtype=np.uint8).copy()


# ---------------------------------------------------------------- reading
def _parse(buf: memoryview | mmap.mmap, where: str) -> tuple[str, dict, list, int]:
    def bad(why: str) -> CorruptIndexError:
        return CorruptIndexError(f"{where}: not a valid pqfast index file: {why}.")

    size = len(buf)
    if size < 20 or bytes(buf[:8]) != MAGIC:
        raise bad("wrong magic (not a pqfast or faiss index, or empty)")
    version, hlen = struct.unpack("<II", bytes(buf[8:16]))
    if version != VERSION:
        raise bad(f"format version {version}, this pqfast reads version {VERSION}")
    if 16 + hlen + 4 > size:
        raise bad("truncated header")
    header = bytes(buf[16 : 16 + hlen])
    (crc,) = struct.unpack("<I", bytes(buf[16 + hlen : 20 + hlen]))
    if zlib.crc32(header) != crc:
        raise bad("header checksum mismatch")
    try:
        meta = json.loads(header)
        kind, params, entries = meta["type"], meta["params"], meta["arrays"]
    except (ValueError, KeyError, TypeError) as exc:
        raise bad(f"unreadable header ({exc})") from None
    data_start = -(-(20 + hlen) // _ALIGN) * _ALIGN
    for e in entries:
        try:
            dtype = np.dtype(_DTYPES[e["dtype"]])
            shape = tuple(int(s) for s in e["shape"])
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            start = data_start + int(e["offset"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"bad array entry {e!r}") from None
        if min(shape, default=0) < 0 or start < data_start or start + nbytes > size:
            raise bad(f"array {e.get('name')!r} lies outside the file (truncated?)")
        if zlib.crc32(buf[start : start + nbytes]) != e.get("crc32"):
            raise bad(f"array {e['name']!r} checksum mismatch")
        e.update(np_dtype=dtype, np_shape=shape, start=start)
    return kind, params, entries, data_start


def _arrays(entries: list, buf, path: str | None, mmap_: bool) -> dict[str, NDArray]:
    out = {}
    for e in entries:
        if mmap_ and path is not None and int(np.prod(e["np_shape"])) > 0:
            a = np.memmap(path, dtype=e["np_dtype"], mode="c", offset=e["start"],
                          shape=e["np_shape"])  # fmt: skip
        else:
            n = int(np.prod(e["np_shape"], dtype=np.int64))
            a = np.frombuffer(buf, e["np_dtype"], n, e["start"]).reshape(e["np_shape"])
            a = aligned_copy(a)  # (the kernels stream some: see _storage.ALIGN)
        out[e["name"]] = a
    return out


def _need(arrays: dict, name: str, shape: tuple, where: str) -> NDArray:
    a = arrays.get(name)
    ok = (
        a is not None
        and len(a.shape) == len(shape)
        and all(s is None or s == t for s, t in zip(shape, a.shape))
    )
    if not ok:
        got = None if a is None else a.shape
        raise CorruptIndexError(
            f"{where}: array {name!r} has shape {got}, expected {shape}."
        )
    return a


def _build(kind: str, params: dict, arrays: dict, where: str, depth: int = 0) -> object:
    """The index described by a header's type and parameters, over `arrays`."""
    try:
        if kind in ("IndexPreTransform", "IndexIDMap"):
            return _build_nested(kind, params, arrays, where, depth)
        return _build_plain(kind, params, arrays, where, depth)
    except CorruptIndexError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndexError(f"{where}: missing or bad parameter ({exc}).") from None


def _build_nested(kind: str, params: dict, arrays: dict, where: str, depth: int):
    if depth >= _MAX_NESTING:
        raise CorruptIndexError(f"{where}: indexes nested too deeply.")
    sub = params["index"]
    inner_arrays = {k[6:]: a for k, a in arrays.items() if k.startswith("index.")}
    inner = _build(sub["type"], sub["params"], inner_arrays, where, depth + 1)
    if kind == "IndexIDMap":
        ids = _need(arrays, "id_map", (inner.ntotal,), where)
        return IndexIDMap._from_parts(inner, ids)
    t = params["transform"]
    if t["type"] != "OPQMatrix":
        raise CorruptIndexError(f"{where}: unknown transform {t['type']!r}.")
    opq = OPQMatrix(t["d_in"], t["M"], t["d_out"])
    for name in _OPQ_SETTINGS:
        setattr(opq, name, int(t[name]))
    if t["trained"]:
        opq.R = np.array(_need(arrays, "R", (opq.d_in, opq.d_out), where))
    return IndexPreTransform(opq, inner)


def _quantizer(params: dict, arrays: dict, where: str, depth: int) -> object:
    """An IVF index's coarse quantizer: flat (array "quantizer"), or a nested
    index (params["quantizer"], arrays "quantizer.*") holding nlist centroids."""
    d, nlist = params["d"], params["nlist"]
    sub = params.get("quantizer")
    if sub is None:
        q = IndexFlat(d, params["quantizer_metric"])
        q._xb.wrap(_need(arrays, "quantizer", (nlist, d), where))
        xb = q._xb.view()
        q._norms.wrap(sq_norms(xb))
        return q
    if depth >= _MAX_NESTING:
        raise CorruptIndexError(f"{where}: indexes nested too deeply.")
    q_arrays = {k[10:]: a for k, a in arrays.items() if k.startswith("quantizer.")}
    q = _build(sub["type"], sub["params"], q_arrays, where, depth + 1)
    if q.d != d or q.ntotal not in (0, nlist):
        raise CorruptIndexError(
            f"{where}: the coarse quantizer does not fit the index."
        )
    return q


def _build_plain(
    kind: str, params: dict, arrays: dict, where: str, depth: int = 0
) -> object:
    if kind not in _PLAIN_TYPES:
        raise CorruptIndexError(f"{where}: unknown index type {kind!r}.")
    if kind in ("IndexFlat", "IndexFlatL2", "IndexFlatIP"):
        index = IndexFlat(params["d"], params["metric"])
        index.__class__ = {
            "IndexFlatL2": IndexFlatL2,
            "IndexFlatIP": IndexFlatIP,
        }.get(kind, IndexFlat)
        xb = _need(arrays, "xb", (None, index.d), where)
        index._xb.wrap(xb)
        index._norms.wrap(sq_norms(xb))
        return index
    if kind == "IndexIVFFlat":
        quantizer = _quantizer(params, arrays, where, depth)
        index = IndexIVFFlat(quantizer, params["d"], params["nlist"], params["metric"])
        _fill_ivf(index, params, arrays, where)
        return index
    cp = ClusteringParameters(**params["pq_cp"])
    d, M, nbits, metric = params["d"], params["M"], params["nbits"], params["metric"]
    if kind == "IndexPQ":
        index = IndexPQ(d, M, nbits, metric)
    elif kind == "IndexPQFastScan":
        index = IndexPQFastScan(d, M, nbits, metric)
    else:
        quantizer = _quantizer(params, arrays, where, depth)
        cls = IndexIVFPQ if kind == "IndexIVFPQ" else IndexIVFPQFastScan
        index = cls(quantizer, d, params["nlist"], M, nbits, metric)
        index.by_residual = bool(params.get("by_residual", True))  # (older files: True)
    index.pq.cp = cp
    if params["trained"]:
        shape = (index.pq.M, index.pq.ksub, index.pq.dsub)
        index.pq.centroids = _need(arrays, "centroids", shape, where)
    if kind == "IndexPQ":
        index._codes.wrap(_need(arrays, "codes", (None, index.code_size), where))
    elif kind == "IndexPQFastScan":
        ntotal = int(params["ntotal"])
        blocks = _need(arrays, "blocks", (-(-ntotal // 32), M * 16), where)
        index._codes.wrap(blocks, ntotal)
    else:
        _fill_ivf(index, params, arrays, where)
    return index


def _fill_ivf(index: IndexIVFPQ, params: dict, arrays: dict, where: str) -> None:
    nlist = index.nlist
    sizes = _need(arrays, "list_sizes", (nlist,), where)
    n = int(sizes.sum())
    if (sizes < 0).any():
        raise CorruptIndexError(f"{where}: negative list sizes.")
    codes = _need(arrays, "codes", (n, index.code_size), where)
    ids = _need(arrays, "ids", (n,), where)
    ends = np.cumsum(sizes)
    inv = index.invlists
    for i in range(nlist):
        lo, hi = int(ends[i] - sizes[i]), int(ends[i])
        inv.load_list(i, codes[lo:hi], ids[lo:hi])
    index.nprobe = params["nprobe"]
    index._next_id = int(params["next_id"])
    index.cp = ClusteringParameters(**params["cp"])
    if hasattr(index, "use_precomputed_table"):
        index.use_precomputed_table = params["use_precomputed_table"]


def read_index(path: str | os.PathLike | IO[bytes], io_flags: int = 0) -> object:
    """Load an index written by write_index, or by faiss's own write_index.

    A file starting with a faiss class's four-character code is read by
    `pqfast.faiss_format` into the pqfast equivalent (IndexFlatL2/IP,
    IndexPQ, IndexIVFFlat, IndexIVFPQ, IndexPreTransform over an OPQ
    rotation, IndexIDMap/IDMap2); other faiss classes or options raise
    UnsupportedIndexError (a ValueError) naming them.

    Parameters
    ----------
    path : str, path-like or binary file object
    io_flags : int
        IO_FLAG_MMAP maps the arrays (copy-on-write) instead of reading them;
        faiss files are always read into memory (the flag is ignored).

    Raises
    ------
    CorruptIndexError
        The file is truncated, corrupt, or neither a pqfast nor a faiss index.
    """
    if hasattr(path, "read"):
        data = path.read()
        return _load(memoryview(data), None, "<file object>", False)
    name = os.fspath(path)
    with open(name, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise CorruptIndexError(f"{name}: not a valid pqfast index file: empty.")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return _load(m, name, name, bool(io_flags & IO_FLAG_MMAP))


def _load(buf, path: str | None, where: str, use_mmap: bool) -> object:
    view = memoryview(buf)  # slices of it are not copies
    try:
        if is_faiss_file(view):
            return read_faiss_index(view, where)
        kind, params, entries, _ = _parse(view, where)
        arrays = _arrays(entries, view, path, use_mmap)
    finally:
        view.release()
    return _build(kind, params, arrays, where)


def deserialize_index(data: NDArray[np.uint8] | bytes) -> object:
    """Inverse of serialize_index (also reads faiss.serialize_index's output)."""
    buf = np.ascontiguousarray(np.frombuffer(data, np.uint8) if isinstance(data, bytes)
                               else np.asarray(data, np.uint8))  # fmt: skip
    return _load(memoryview(buf).cast("B"), None, "<serialized index>", False)


def _reduce(index: object) -> tuple:
    return deserialize_index, (serialize_index(index),)


# Pickling goes through the file format: no pickled code objects inside.
for _cls in (*_PLAIN_TYPES.values(), IndexPreTransform, IndexIDMap):
    copyreg.pickle(_cls, _reduce)
