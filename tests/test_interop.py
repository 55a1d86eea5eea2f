"""from_faiss / to_faiss carry trained state and contents: searches agree."""

import numpy as np
import pytest
from conftest import same_ids_ties_aside

import pqfast

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def data(embeddings):
    return embeddings[:3000], embeddings[5000:5030]


def faiss_indexes(xb):
    flat = faiss.IndexFlatIP(384)
    flat.add(xb)
    pq = faiss.IndexPQ(384, 16, 8)
    pq.train(xb)
    pq.add(xb)
    quantizer = faiss.IndexFlatL2(384)
    ivf = faiss.IndexIVFPQ(quantizer, 384, 16, 16, 8)
    ivf.train(xb)
    ivf.add_with_ids(xb, np.arange(len(xb)) * 2 + 7)
    ivf.nprobe = 4
    ivf.referenced_objects = [quantizer]
    return [flat, pq, ivf]


def test_from_faiss_searches_agree(data):
    xb, xq = data
    for theirs in faiss_indexes(xb):
        ours = pqfast.from_faiss(theirs)
        assert ours.ntotal == theirs.ntotal
        D1, I1 = ours.search(xq, 10)
        D2, I2 = theirs.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_to_faiss_searches_agree(data):
    xb, xq = data
    for theirs in faiss_indexes(xb):
        ours = pqfast.from_faiss(theirs)
        back = pqfast.to_faiss(ours)
        assert back.ntotal == ours.ntotal
        if hasattr(ours, "nprobe"):
            assert back.nprobe == ours.nprobe
        D1, I1 = ours.search(xq, 10)
        D2, I2 = back.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_unsupported_types():
    with pytest.raises(TypeError, match="does not support"):
        pqfast.from_faiss(faiss.IndexHNSWFlat(8, 4))
    with pytest.raises(TypeError, match="does not support"):
        pqfast.to_faiss(pqfast.IndexPQFastScan(8, 4))
