"""Id filters and per-call search parameters, with faiss's names.

A selector is applied inside the kernels, to the codes that would enter the
results, so a filtered search returns k results whenever k allowed vectors
are reachable (no filtering after the fact).

For the kernels a selector is compiled into a small tree of nodes, rows of
four int64 ``(kind, a, b, c)``, plus one int64 array holding the id sets and
bitmaps the nodes refer to (see ``_common.pxd``, ``sel_allows``):

======  ==========  =============================================
kind    node        a, b
======  ==========  =============================================
0       all ids
1       range       lo <= id < hi
2       set         sorted ids at ``ids[a:a+b]``
3       not         child node a
4/5/6   and/or/xor  child nodes a and b
7       bitmap      b bytes starting at int64 word a of ``ids``
======  ==========  =============================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._validation import check_positive_int

ALL, RANGE, SET, NOT, AND, OR, XOR, BITMAP = range(8)
NO_SELECTOR = (np.zeros((1, 4), np.int64), np.empty(0, np.int64), 0)


class _Program:
    """Collects the nodes and id data of a selector tree for the kernels."""

    def __init__(self) -> None:
        self.nodes: list[tuple[int, int, int, int]] = []
        self.data: list[NDArray[np.int64]] = []
        self.words = 0

    def node(self, kind: int, a: int = 0, b: int = 0) -> int:
        self.nodes.append((kind, a, b, 0))
        return len(self.nodes) - 1

    def words_of(self, arr: NDArray[np.int64]) -> int:
        """Append int64 words; return their offset."""
        self.data.append(arr)
        self.words += arr.size
        return self.words - arr.size

    def compile(self, root: int) -> tuple:
        ids = np.concatenate(self.data) if self.data else NO_SELECTOR[1]
        return np.array(self.nodes, np.int64).reshape(-1, 4), ids, root


class IDSelector:
    """Base class: which ids a search may return (or remove_ids removes)."""

    def is_member(self, idx: int) -> bool:
        return bool(self.members(np.array([idx], np.int64))[0])

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Membership of each id (vectorized ``is_member``)."""
        raise NotImplementedError

    def _emit(self, prog: _Program) -> int:
        """Add this selector's nodes to prog; return its node number."""
        raise NotImplementedError

    def kernel_args(self) -> tuple:
        prog = _Program()
        return prog.compile(self._emit(prog))


class IDSelectorAll(IDSelector):
    """Every id."""

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.ones(np.shape(ids), bool)

    def _emit(self, prog: _Program) -> int:
        return prog.node(ALL)


class IDSelectorRange(IDSelector):
    """Ids in [imin, imax)."""

    def __init__(self, imin: int, imax: int, assume_sorted: bool = False) -> None:
        self.imin, self.imax = int(imin), int(imax)

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return (ids >= self.imin) & (ids < self.imax)

    def _emit(self, prog: _Program) -> int:
        return prog.node(RANGE, self.imin, self.imax)


def _int_ids(ids: object, n: object = None) -> NDArray[np.int64]:
    """faiss's ``(ids)`` or ``(n, ids)`` arguments as an int64 array."""
    arr = np.asarray(ids)
    if n is not None:
        arr = arr.ravel()[: int(n)]
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}.")
    return arr.astype(np.int64).ravel()


class IDSelectorBatch(IDSelector):
    """Ids in a given set: ``IDSelectorBatch(ids)`` or faiss's ``(n, ids)``."""

    def __init__(self, *args: object) -> None:
        if len(args) not in (1, 2):
            raise TypeError("IDSelectorBatch takes (ids) or (n, ids).")
        self.ids = np.unique(_int_ids(args[-1], args[0] if len(args) == 2 else None))

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.isin(ids, self.ids)

    def _emit(self, prog: _Program) -> int:
        return prog.node(SET, prog.words_of(self.ids), self.ids.size)


class IDSelectorArray(IDSelectorBatch):
    """Ids in a given array (faiss scans it; pqfast treats it as IDSelectorBatch)."""


class IDSelectorBitmap(IDSelector):
    """Id i is selected when bit i of a bitmap is set (little-endian bit order
    within each byte, as in faiss): ``IDSelectorBitmap(bitmap)`` or faiss's
    ``(n, bitmap)`` with n bytes.  Ids past the bitmap's end are not selected."""

    def __init__(self, *args: object) -> None:
        if len(args) not in (1, 2):
            raise TypeError("IDSelectorBitmap takes (bitmap) or (n, bitmap).")
        bitmap = np.asarray(args[-1])
        if bitmap.dtype != np.uint8:
            raise TypeError(f"the bitmap must be uint8, got dtype {bitmap.dtype}.")
        bitmap = bitmap.ravel()
        if len(args) == 2:
            n = int(args[0])
            if not 0 <= n <= bitmap.size:
                raise ValueError(f"n={n} bytes, but the bitmap has {bitmap.size}.")
            bitmap = bitmap[:n]
        self.bitmap = bitmap.copy()

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        ids = np.asarray(ids, np.int64)
        inside = (ids >= 0) & (ids < 8 * self.bitmap.size)
        byte = self.bitmap[np.where(inside, ids, 0) >> 3]
        return inside & ((byte >> (np.where(inside, ids, 0) & 7)) & 1).astype(bool)

    def _emit(self, prog: _Program) -> int:
        padded = np.zeros(-(-self.bitmap.size // 8) * 8, np.uint8)
        padded[: self.bitmap.size] = self.bitmap
        return prog.node(BITMAP, prog.words_of(padded.view(np.int64)), self.bitmap.size)


def check_selector(sel: object, name: str) -> IDSelector:
    if not isinstance(sel, IDSelector):
        raise TypeError(f"{name} must be an IDSelector, got {type(sel).__name__}.")
    return sel


class IDSelectorNot(IDSelector):
    """Ids the given selector rejects."""

    def __init__(self, sel: IDSelector) -> None:
        self.sel = check_selector(sel, "sel")

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return ~self.sel.members(ids)

    def _emit(self, prog: _Program) -> int:
        return prog.node(NOT, self.sel._emit(prog))


class _IDSelectorPair(IDSelector):
    _kind = -1

    def __init__(self, lhs: IDSelector, rhs: IDSelector) -> None:
        self.lhs = check_selector(lhs, "lhs")
        self.rhs = check_selector(rhs, "rhs")

    def _emit(self, prog: _Program) -> int:
        return prog.node(self._kind, self.lhs._emit(prog), self.rhs._emit(prog))


class IDSelectorAnd(_IDSelectorPair):
    """Ids both selectors accept."""

    _kind = AND

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return self.lhs.members(ids) & self.rhs.members(ids)


class IDSelectorOr(_IDSelectorPair):
    """Ids either selector accepts."""

    _kind = OR

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return self.lhs.members(ids) | self.rhs.members(ids)


class IDSelectorXOr(_IDSelectorPair):
    """Ids exactly one of the selectors accepts."""

    _kind = XOR

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return self.lhs.members(ids) ^ self.rhs.members(ids)


@dataclass
class SearchParameters:
    """Per-call search options for any index: an id filter."""

    sel: IDSelector | None = None


@dataclass
class SearchParametersIVF(SearchParameters):
    """Per-call options for IVF indexes: nprobe and an id filter."""

    nprobe: int | None = None
    max_codes: int = 0  # accepted for compatibility; pqfast scans whole lists


def selector_args(params: SearchParameters | None) -> tuple:
    """Kernel arguments for the params' selector (or none)."""
    if params is None or params.sel is None:
        return NO_SELECTOR
    return check_selector(params.sel, "params.sel").kernel_args()


def params_nprobe(params: SearchParameters | None, default: int) -> int:
    """nprobe from SearchParametersIVF if given there, else the index's."""
    nprobe = getattr(params, "nprobe", None)
    return default if nprobe is None else check_positive_int(nprobe, "params.nprobe")


def ids_to_remove(
    ids: ArrayLike | IDSelector,
) -> tuple[NDArray[np.int64] | None, IDSelector | None]:
    """remove_ids argument: an id array, or a selector."""
    if isinstance(ids, IDSelector):
        return None, ids
    return _int_ids(ids), None


def removal_mask(ids: ArrayLike | IDSelector, ntotal: int) -> NDArray[np.bool_]:
    """Which of the ids 0..ntotal-1 survive ``remove_ids(ids)``."""
    arr, selector = ids_to_remove(ids)
    stored = np.arange(ntotal, dtype=np.int64)
    return ~(selector.members(stored) if selector else np.isin(stored, arr))


def remove_positions(index: object, ids: ArrayLike | IDSelector) -> int:
    """remove_ids for an index whose ids are its positions 0..ntotal-1: drop
    the selected rows (``index._keep_rows``); the others are renumbered in
    order, as in faiss.  Returns how many were removed."""
    keep = removal_mask(ids, index.ntotal)
    if not keep.all():
        index._keep_rows(keep)
    return int(keep.size - keep.sum())
