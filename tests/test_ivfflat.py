"""IndexIVFFlat: exact distances within the probed lists."""

import numpy as np
import pytest
from conftest import recall_at, same_ids_ties_aside

import pqfast


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_all_lists_is_exact_search(real_split, metric):
    xb, xq = real_split
    flat = pqfast.IndexFlat(384, metric)
    flat.add(xb)
    index = pqfast.IndexIVFFlat(pqfast.IndexFlat(384, metric), 384, 32, metric)
    index.train(xb)
    index.add(xb)
    index.nprobe = 32
    D1, I1 = index.search(xq, 10)
    D2, I2 = flat.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-4)
    index.nprobe = 4
    assert recall_at(index.search(xq, 10)[1], I2, 10) > 0.5
    np.testing.assert_array_equal(index.reconstruct(5), xb[5])
    assert index.remove_ids(np.arange(10)) == 10 and index.ntotal == len(xb) - 10


def test_matches_faiss_with_same_centroids(real_split):
    faiss = pytest.importorskip("faiss")
    xb, xq = real_split
    ours = pqfast.IndexIVFFlat(pqfast.IndexFlatL2(384), 384, 32)
    ours.train(xb)
    quantizer = faiss.IndexFlatL2(384)
    quantizer.add(ours.quantizer.reconstruct_n(0, 32))
    theirs = faiss.IndexIVFFlat(quantizer, 384, 32)
    theirs.is_trained = True
    for index in (ours, theirs):
        index.add(xb)
        index.nprobe = 4
    D1, I1 = ours.search(xq, 10)
    D2, I2 = theirs.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-4)
