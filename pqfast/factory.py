"""index_factory: build an index from a faiss-style description string."""

from __future__ import annotations

import re

from pqfast._metrics import METRIC_L2
from pqfast._validation import check_metric, check_positive_int
from pqfast.fastscan import IndexIVFPQFastScan, IndexPQFastScan
from pqfast.flat import IndexFlat
from pqfast.ivf import IndexIVFFlat, IndexIVFPQ
from pqfast.pq import IndexPQ
from pqfast.transform import IndexPreTransform, OPQMatrix

_IVF = re.compile(r"IVF(\d+)(?:\((.+)\))?")
_PQ = re.compile(r"PQ(\d+)(?:x(\d+))?(fs)?")
_OPQ = re.compile(r"OPQ(\d+)(?:_(\d+))?")


def index_factory(d: int, description: str, metric: int = METRIC_L2) -> object:
    """Build an untrained index from a faiss factory string.

    Supported: ``"Flat"``, ``"PQ16"``, ``"PQ16x4"``, ``"PQ16x4fs"``,
    ``"IVF1024,Flat"``, ``"IVF1024,PQ16"``, ``"IVF1024,PQ16x4"`` and
    ``"IVF1024,PQ16x4fs"``, each after an optional ``"OPQ16,"`` or
    ``"OPQ16_64,"`` rotation (an IndexPreTransform) (any
    numbers; ``PQ<M>`` means 8 bits).  The IVF coarse quantizer is a flat index
    of the same metric, or the index described in parentheses:
    ``"IVF1024(IVF32,Flat),PQ16"`` finds the 1024 coarse centroids through an
    IndexIVFFlat of 32 lists (two-level clustering; its ``nprobe``, 1 by
    default as in faiss, trades coarse-search speed for accuracy).  Other
    strings raise a ValueError saying what is missing.

    Parameters
    ----------
    d : int
        Vector dimension.
    description : str
        The factory string.
    metric : int, default METRIC_L2
        METRIC_L2 or METRIC_INNER_PRODUCT.
    """
    d = check_positive_int(d, "d")
    metric = check_metric(metric)
    if not isinstance(description, str):
        raise TypeError(
            f"description must be a string, got {type(description).__name__}."
        )
    parts = _split_top_level(description)
    if len(parts) > 1 and (m := _OPQ.fullmatch(parts[0])):
        opq = OPQMatrix(d, int(m.group(1)), int(m.group(2) or d))
        inner = index_factory(opq.d_out, ",".join(parts[1:]), metric)
        return IndexPreTransform(opq, inner)
    nlist = None
    if len(parts) == 2 and (m := _IVF.fullmatch(parts[0])):
        nlist = int(m.group(1))
        inner = m.group(2)
        parts = parts[1:]
    elif parts[0].startswith(("IVF", "OPQ", "PCA", "HNSW", "IDMap")) or len(parts) != 1:
        raise ValueError(
            f"index_factory: {description!r} is not supported (yet); pqfast builds "
            "'Flat', 'PQ<M>[x<nbits>][fs]', 'IVF<nlist>,Flat' and "
            "'IVF<nlist>,PQ<M>[x<nbits>][fs]', each optionally after 'OPQ<M>[_<d2>],', "
            "and 'IVF<nlist>(<quantizer>),...' with a quantizer such as 'IVF32,Flat'."
        )
    body = parts[0]
    if nlist is not None:
        quantizer = index_factory(d, inner, metric) if inner else IndexFlat(d, metric)
        if isinstance(quantizer, IndexPreTransform):
            raise ValueError(
                f"index_factory: a coarse quantizer cannot have a transform: {inner!r}."
            )
    if body == "Flat":
        if nlist is None:
            return IndexFlat(d, metric)
        return IndexIVFFlat(quantizer, d, nlist, metric)
    m = _PQ.fullmatch(body)
    if m is None:
        raise ValueError(
            f"index_factory: cannot read {body!r} in {description!r}; expected "
            "Flat, PQ<M>, PQ<M>x<nbits> or PQ<M>x4fs."
        )
    M, nbits, fast = int(m.group(1)), int(m.group(2) or 8), m.group(3) is not None
    if fast and nbits != 4:
        raise ValueError(f"index_factory: fast scan ('fs') needs 4 bits, got {body!r}.")
    if nlist is None:
        return (
            IndexPQFastScan(d, M, 4, metric) if fast else IndexPQ(d, M, nbits, metric)
        )
    if fast:
        return IndexIVFPQFastScan(quantizer, d, nlist, M, 4, metric)
    return IndexIVFPQ(quantizer, d, nlist, M, nbits, metric)


def _split_top_level(description: str) -> list[str]:
    """Split at the commas outside parentheses, e.g. "IVF64(IVF8,Flat),PQ16"."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(description):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            break
        if ch == "," and depth == 0:
            parts.append(description[start:i].strip())
            start = i + 1
    if depth != 0:
        raise ValueError(f"index_factory: unbalanced parentheses in {description!r}.")
    return [*parts, description[start:].strip()]
