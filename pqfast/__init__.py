"""pqfast: Cython-accelerated product quantization with faiss's API.

``import pqfast as faiss`` runs typical IndexPQ / IndexIVFPQ scripts unchanged.
"""

from pqfast._metrics import METRIC_INNER_PRODUCT, METRIC_L2
from pqfast._threads import omp_get_max_threads, omp_set_num_threads
from pqfast._validation import IdNotFoundError, NotTrainedError
from pqfast.factory import index_factory
from pqfast.faiss_format import UnsupportedIndexError
from pqfast.fastscan import IndexIVFPQFastScan, IndexPQFastScan
from pqfast.flat import IndexFlat, IndexFlatIP, IndexFlatL2, knn, normalize_L2
from pqfast.idmap import IndexIDMap
from pqfast.interop import from_faiss, to_faiss
from pqfast.invlists import ArrayInvertedLists
from pqfast.io import (
    IO_FLAG_MMAP,
    IO_FLAG_READ_ONLY,
    CorruptIndexError,
    deserialize_index,
    read_index,
    serialize_index,
    write_index,
)
from pqfast.ivf import IndexIVF, IndexIVFFlat, IndexIVFPQ
from pqfast.kmeans import ClusteringParameters, Kmeans
from pqfast.nanopq_api import OPQ, PQ, DistanceTable
from pqfast.pq import IndexPQ, ProductQuantizer
from pqfast.selectors import (
    IDSelector,
    IDSelectorAll,
    IDSelectorAnd,
    IDSelectorArray,
    IDSelectorBatch,
    IDSelectorBitmap,
    IDSelectorNot,
    IDSelectorOr,
    IDSelectorRange,
    IDSelectorXOr,
    SearchParameters,
    SearchParametersIVF,
)
from pqfast.transform import IndexPreTransform, OPQMatrix

__version__ = "0.1.0"

__all__ = [
    "IO_FLAG_MMAP",
    "IO_FLAG_READ_ONLY",
    "CorruptIndexError",
    "UnsupportedIndexError",
    "deserialize_index",
    "from_faiss",
    "to_faiss",
    "read_index",
    "serialize_index",
    "write_index",
    "METRIC_INNER_PRODUCT",
    "METRIC_L2",
    "ArrayInvertedLists",
    "ClusteringParameters",
    "DistanceTable",
    "OPQ",
    "PQ",
    "IndexFlat",
    "IndexFlatIP",
    "IndexFlatL2",
    "IndexIVF",
    "IndexIVFFlat",
    "IndexIVFPQ",
    "IndexIVFPQFastScan",
    "IDSelector",
    "IDSelectorAll",
    "IDSelectorAnd",
    "IDSelectorArray",
    "IDSelectorBatch",
    "IDSelectorBitmap",
    "IDSelectorNot",
    "IDSelectorOr",
    "IDSelectorRange",
    "IDSelectorXOr",
    "SearchParameters",
    "SearchParametersIVF",
    "IndexIDMap",
    "IndexPQ",
    "IndexPreTransform",
    "OPQMatrix",
    "IndexPQFastScan",
    "IdNotFoundError",
    "Kmeans",
    "NotTrainedError",
    "ProductQuantizer",
    "index_factory",
    "knn",
    "normalize_L2",
    "omp_get_max_threads",
    "omp_set_num_threads",
]
