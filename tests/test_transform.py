"""OPQMatrix and IndexPreTransform."""

import numpy as np
import pytest
from conftest import recall_at

import pqfast


@pytest.fixture(scope="module")
def data(embeddings):
    return embeddings[:4000], embeddings[5000:5100]


def test_opq_rotation_is_orthonormal_and_helps(data):
    x, _ = data
    opq = pqfast.OPQMatrix(384, 16, 64)
    opq.niter, opq.niter_pq_0 = 6, 10
    opq.train(x)
    R = opq.R
    np.testing.assert_allclose(R.T @ R, np.eye(64), atol=1e-4)
    assert opq.apply(x[:5]).shape == (5, 64)
    np.testing.assert_allclose(opq.A, R.T)
    full = pqfast.OPQMatrix(384, 16)
    full.niter, full.niter_pq_0 = 6, 10
    full.train(x)
    pq = pqfast.ProductQuantizer(384, 16, 8)
    pq.train(x)
    err_pq = np.mean((pq.decode(pq.compute_codes(x)) - x) ** 2)
    rotated = full.apply(x)
    pq_r = pqfast.ProductQuantizer(384, 16, 8)
    pq_r.train(rotated)
    back = full.reverse_transform(pq_r.decode(pq_r.compute_codes(rotated)))
    assert np.mean((back - x) ** 2) < err_pq


def test_pre_transform_index(data):
    x, xq = data
    index = pqfast.index_factory(384, "OPQ16,IVF32,PQ16")
    index.transform.niter, index.transform.niter_pq_0 = 4, 10
    index.train(x)
    index.add(x)
    index.nprobe = 8
    exact = pqfast.IndexFlatL2(384)
    exact.add(x)
    assert recall_at(index.search(xq, 10)[1], exact.search(xq, 10)[1], 10) > 0.3
    assert index.ntotal == len(x) and index.reconstruct(3).shape == (384,)
    with pytest.raises(ValueError, match="outputs"):
        pqfast.IndexPreTransform(pqfast.OPQMatrix(384, 16, 64), pqfast.IndexPQ(384, 16))
    with pytest.raises(pqfast.NotTrainedError):
        pqfast.OPQMatrix(384, 16).apply(x[:2])
