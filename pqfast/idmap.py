"""IndexIDMap: user ids on top of an index that numbers its vectors 0..ntotal-1."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._range_search import RangeResult
from pqfast._storage import RowBuffer
from pqfast._validation import IdNotFoundError, check_ids, check_key, check_vectors
from pqfast.selectors import (
    IDSelector,
    IDSelectorBitmap,
    SearchParameters,
    check_selector,
    ids_to_remove,
)


class IndexIDMap:
    """Map the sequential ids of a flat, PQ or fast-scan index to your own ids
    (faiss's ``IndexIDMap``).

    Parameters
    ----------
    index : IndexFlat, IndexPQ or IndexPQFastScan
        Empty; it stores the vectors, this class the ids.
    """

    def __init__(self, index: object) -> None:
        if index.ntotal:
            raise ValueError("IndexIDMap needs an empty index.")
        self._attach(index, np.empty(0, np.int64))

    @classmethod
    def _from_parts(cls, index: object, ids: ArrayLike) -> IndexIDMap:
        """An IndexIDMap over a filled `index` whose vector i has user id ids[i]
        (for loading; `ids` is held without a copy when already int64)."""
        out = cls.__new__(cls)
        out._attach(index, check_ids(ids, index.ntotal, "id_map"))
        return out

    def _attach(self, index: object, ids: NDArray[np.int64]) -> None:
        self.index = index
        self.d = index.d
        self.metric_type = index.metric_type
        self._ids = RowBuffer(0, np.int64)
        self._ids.wrap(ids)

    is_trained = property(lambda self: self.index.is_trained)
    ntotal = property(lambda self: self.index.ntotal)

    @property
    def id_map(self) -> NDArray[np.int64]:
        """User id of each stored vector (read-only)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def train(self, x: ArrayLike) -> None:
        self.index.train(x)

    def add(self, x: ArrayLike) -> None:
        raise ValueError("IndexIDMap: use add_with_ids (as in faiss).")

    def add_with_ids(self, x: ArrayLike, ids: ArrayLike) -> None:
        """Add vectors under the given non-negative int64 ids."""
        x = check_vectors(x, self.d)
        ids = check_ids(ids, x.shape[0])
        self._ids.reserve(self._ids.size + len(ids))  # may fail: nothing changed
        self.index.add(x)
        self._ids.append(ids)

    def _inner_params(self, params: SearchParameters | None) -> SearchParameters | None:
        """params with the selector of user ids turned into one of positions.

        The translated selector is a bitmap over the stored vectors, so the
        wrapped index still filters inside its kernel (faiss translates each
        id on the fly instead).
        """
        if params is None or params.sel is None:
            return params
        allowed = check_selector(params.sel, "params.sel").members(self._ids.view())
        bitmap = np.packbits(allowed, bitorder="little")
        return replace(params, sel=IDSelectorBitmap(bitmap))

    def _user_ids(self, I: NDArray[np.int64]) -> NDArray[np.int64]:
        """Positions to user ids, in place; -1 stays -1 (also when empty)."""
        found = I >= 0
        I[found] = self._ids.view()[I[found]]
        return I

    def search(
        self, x: ArrayLike, k: int, *, params: SearchParameters | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The wrapped index's search, with ids mapped (-1 stays -1); a
        selector in `params` selects user ids."""
        D, I = self.index.search(x, k, params=self._inner_params(params))
        return D, self._user_ids(I)

    def range_search(
        self, x: ArrayLike, radius: float, *, params: SearchParameters | None = None
    ) -> RangeResult:
        """The wrapped index's range_search, with ids mapped."""
        lims, D, I = self.index.range_search(
            x, radius, params=self._inner_params(params)
        )
        return lims, D, self._user_ids(I)

    def reconstruct(self, key: int) -> NDArray[np.float32]:
        key = check_key(key)
        where = np.flatnonzero(self._ids.view() == key)
        if not where.size:
            raise IdNotFoundError(f"id {key} is not in the index.")
        return self.index.reconstruct(int(where[0]))

    def remove_ids(self, ids: ArrayLike | IDSelector) -> int:
        """Remove vectors by user id (array or IDSelector); the rest keep order."""
        arr, selector = ids_to_remove(ids)
        stored = self._ids.view()
        drop = selector.members(stored) if selector else np.isin(stored, arr)
        if not drop.any():
            return 0
        if not hasattr(self.index, "_keep_rows"):
            raise TypeError(
                f"IndexIDMap.remove_ids supports flat, PQ and fast-scan indexes, "
                f"not {type(self.index).__name__}."
            )
        keep = ~drop
        ids = self._ids.view()[keep]
        self.index._keep_rows(keep)
        self._ids.assign(ids)
        return int(drop.sum())

    def reset(self) -> None:
        self.index.reset()
        self._ids.clear()
