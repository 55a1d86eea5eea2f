"""Id filters and per-call search parameters, with faiss's names.

A selector is applied inside the kernels, to the codes that would enter the
results, so a filtered search returns k results whenever k allowed vectors
are reachable (no filtering after the fact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._validation import check_positive_int

NO_SELECTOR = (0, 0, 0, np.empty(0, np.int64))


class IDSelector:
    """Base class: which ids a search may return (or remove_ids removes)."""

    def is_member(self, idx: int) -> bool:
        return bool(self.members(np.array([idx], np.int64))[0])

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        raise NotImplementedError

    def kernel_args(self) -> tuple:
        raise NotImplementedError


class IDSelectorRange(IDSelector):
    """Ids in [imin, imax)."""

    def __init__(self, imin: int, imax: int, assume_sorted: bool = False) -> None:
        self.imin, self.imax = int(imin), int(imax)

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return (ids >= self.imin) & (ids < self.imax)

    def kernel_args(self) -> tuple:
        return (1, self.imin, self.imax, NO_SELECTOR[3])


class IDSelectorBatch(IDSelector):
    """Ids in a given set: ``IDSelectorBatch(ids)`` or faiss's ``(n, ids)``."""

    def __init__(self, *args: object) -> None:
        ids = args[-1]
        if len(args) == 2:
            ids = np.asarray(ids)[: int(args[0])]
        arr = np.asarray(ids)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"ids must be integers, got dtype {arr.dtype}.")
        self.ids = np.unique(arr.astype(np.int64).ravel())

    def members(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        return np.isin(ids, self.ids)

    def kernel_args(self) -> tuple:
        return (2, 0, 0, self.ids)


class IDSelectorArray(IDSelectorBatch):
    """Ids in a given array (faiss scans it; pqfast treats it as IDSelectorBatch)."""


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
    if not isinstance(params.sel, IDSelector):
        raise TypeError(
            f"params.sel must be an IDSelector, got {type(params.sel).__name__}."
        )
    return params.sel.kernel_args()


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
    arr = np.asarray(ids)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}.")
    return arr.astype(np.int64).ravel(), None
