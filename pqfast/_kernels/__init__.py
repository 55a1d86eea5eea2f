"""Compiled Cython kernels (private).  Only pqfast's Python modules call them."""

import os

try:
    from pqfast._kernels import _openmp  # noqa: F401
except ImportError as exc:  # a source checkout imported without a build
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    raise ImportError(
        f"pqfast's compiled kernels are missing in {here}. This happens when "
        "Python imports pqfast from its source folder (e.g. `python -m ...` run "
        "in the repository root) after a non-editable install. Build them in "
        "place with `pip install -e .`, or run from another directory."
    ) from exc
