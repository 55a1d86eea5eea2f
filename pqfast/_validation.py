"""Input checks shared by every public class.

Each check either returns a clean array (C-contiguous, the kernels' dtype) or
raises a ValueError/TypeError naming the argument and what was expected.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pqfast._kernels import _check

# Squared norms of vectors with larger entries can overflow float32 (3.4e38).
_MAX_ABS = 1e15


class NotTrainedError(ValueError, RuntimeError):
    """An index or quantizer was used before ``train``.

    Subclasses both ValueError and RuntimeError (what faiss raises), so either
    ``except`` clause catches it.
    """


class IdNotFoundError(KeyError, RuntimeError):
    """An id asked for (e.g. by ``reconstruct``) is not stored.

    A KeyError, and a RuntimeError (what faiss raises).
    """


class CorruptIndexError(ValueError):
    """An index file is truncated, corrupt, of another version or not an index."""


def check_key(key: object, ntotal: int | None = None) -> int:
    """Return an integer id; with `ntotal`, one in [0, ntotal)."""
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise TypeError(f"id must be an integer, got {type(key).__name__}.")
    key = int(key)
    if ntotal is not None and not 0 <= key < ntotal:
        raise IdNotFoundError(f"id {key} is not in the index (ntotal={ntotal}).")
    return key


def check_range(i0: object, n: object, ntotal: int) -> tuple[int, int]:
    """Return (i0, n) for ids i0 .. i0 + n - 1 in [0, ntotal); n=None: to the end."""
    i0 = check_key(i0)
    n = ntotal - i0 if n is None else check_key(n)
    if i0 < 0 or n < 0 or i0 + n > ntotal:
        raise IdNotFoundError(f"range [{i0}, {i0 + n}) is outside [0, {ntotal}).")
    return i0, n


def check_vectors(x: ArrayLike, d: int, name: str = "x") -> NDArray[np.float32]:
    """Return `x` as a C-contiguous float32 array of shape (n, d).

    A 1-D array of length `d` is taken as one vector.  Any real dtype is
    accepted; NaN and infinity are rejected.
    """
    if _check.is_clean(x, d, _MAX_ABS):  # the usual case, checked in C
        return x
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ):
        raise TypeError(
            f"{name} must be a real-valued numeric array, got dtype {arr.dtype}."
        )
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real-valued, got dtype {arr.dtype}.")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n, {d}) or 1-D ({d},), got shape {arr.shape}."
        )
    if arr.shape[1] != d:
        raise ValueError(
            f"{name} has {arr.shape[1]} dimensions per vector, expected d={d}."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not _all_within(arr, _MAX_ABS):
        _raise_out_of_range(arr, name)
    return arr


def copy_checked(
    x: NDArray[np.float32],
    dst: NDArray[np.float32],
    norms: NDArray[np.float32],
    name: str = "x",
) -> None:
    """Copy `x` (_check.is_float32_rows) into `dst` and its rows' squared norms
    into `norms`, rejecting NaN, infinity and overflow as check_vectors does,
    in one pass over `x`.  On error `dst` and `norms` may be partly written.
    """
    if _check.copy_rows(x, x.shape[1], _MAX_ABS, dst, norms) < 0:
        _raise_out_of_range(x, name)


def sq_norms(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Squared norms of the rows of `x` (C-contiguous float32), summed as
    `copy_checked` sums them: every stored norm of a flat index comes from here
    or from there."""
    out = np.empty(x.shape[0], np.float32)
    _check.sq_norms(np.ascontiguousarray(x, dtype=np.float32), out)
    return out


def _raise_out_of_range(arr: NDArray, name: str) -> None:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity.")
    raise ValueError(
        f"{name} has values above {_MAX_ABS:g} in magnitude: squared distances "
        "would overflow float32."
    )


def _all_within(arr: NDArray[np.float32], bound: float) -> bool:
    """Whether every entry is in [-bound, bound]: False if any is NaN or inf.

    One pass in C, without the GIL for large arrays, and no temporary
    (np.abs(arr).max() wrote one as large as arr: 512 MB for 10^6 vectors of
    d=128).
    """
    return _check.all_within(arr, bound)


def check_positive_int(value: object, name: str) -> int:
    """Return `value` as an int >= 1; bool and non-integers are a TypeError."""
    if type(value) is int and value >= 1:  # the usual case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}.")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}.")
    return value


def check_ids(ids: ArrayLike, n: int, name: str = "ids") -> NDArray[np.int64]:
    """Return `ids` as a contiguous int64 array of length `n` with no negative id."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{name} must have shape ({n},), one id per vector, got {arr.shape}."
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}.")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(
            f"{name} must be >= 0 (-1 marks missing results), got {arr.min()}."
        )
    return arr


def check_pq_shape(d: int, M: int, nbits: int) -> tuple[int, int, int]:
    """Validate product-quantizer parameters; return (d, M, nbits) as ints."""
    d = check_positive_int(d, "d")
    M = check_positive_int(M, "M")
    nbits = check_positive_int(nbits, "nbits")
    if d % M != 0:
        raise ValueError(
            f"d={d} is not divisible by M={M}; each sub-vector needs d/M dims."
        )
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits must be between 1 and 16, got {nbits}.")
    return d, M, nbits


def check_metric(metric: object) -> int:
    """Return the metric as METRIC_L2 (1) or METRIC_INNER_PRODUCT (0)."""
    from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2

    if isinstance(metric, bool) or metric not in (METRIC_L2, METRIC_INNER_PRODUCT):
        raise ValueError(
            f"metric must be METRIC_L2 or METRIC_INNER_PRODUCT, got {metric!r}."
        )
    return int(metric)


def check_is_trained_assignment(value: object, actual: bool, requirement: str) -> None:
    """faiss scripts set ``is_trained = True`` after loading centroids by hand.

    pqfast derives ``is_trained`` from the state, so such an assignment is
    accepted when it states the truth and refused, with what is missing,
    otherwise.
    """
    if bool(value) != actual:
        raise ValueError(f"is_trained follows the index state: {requirement}.")
