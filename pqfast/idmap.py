"""IndexIDMap: user ids on top of an index that numbers its vectors 0..ntotal-1."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._storage import RowBuffer
from pqfast._validation import IdNotFoundError, check_ids, check_key, check_vectors
from pqfast.selectors import IDSelector, SearchParameters, ids_to_remove


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

    def search(
        self, x: ArrayLike, k: int, *, params: SearchParameters | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The wrapped index's search, with ids mapped (-1 stays -1)."""
        if params is not None and params.sel is not None:
            raise ValueError("IndexIDMap: id selectors are not supported here yet.")
        D, I = self.index.search(x, k)
        found = I >= 0
        I[found] = self._ids.view()[I[found]]
        return D, I

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
        buffers = [getattr(self.index, name) for name in ("_xb", "_norms", "_codes")
                   if hasattr(self.index, name)]  # fmt: skip
        if not buffers:
            raise TypeError(
                f"IndexIDMap.remove_ids supports flat and PQ indexes, not "
                f"{type(self.index).__name__}."
            )
        keep = ~drop
        kept = [buf.view()[keep] for buf in (*buffers, self._ids)]  # allocate first
        for buf, rows in zip((*buffers, self._ids), kept):
            buf.assign(rows)
        if hasattr(self.index, "_version"):
            self.index._version += 1
        return int(drop.sum())

    def reset(self) -> None:
        self.index.reset()
        self._ids.clear()
