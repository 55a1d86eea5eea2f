"""pqfast.PQ / pqfast.OPQ give nanopq's results for the same codewords."""

import pickle

import numpy as np
import pytest

import pqfast

nanopq = pytest.importorskip("nanopq")


@pytest.fixture(scope="module")
def data(embeddings):
    return embeddings[:3000], embeddings[5000:5005]


@pytest.mark.parametrize("metric", ["l2", "dot"])
def test_pq_matches_nanopq_given_codewords(data, metric):
    x, q = data
    theirs = nanopq.PQ(M=16, Ks=256, metric=metric, verbose=False).fit(x, iter=3)
    ours = pqfast.PQ(M=16, Ks=256, metric=metric, verbose=False)
    ours.codewords, ours.Ds = theirs.codewords.copy(), theirs.Ds
    codes = ours.encode(x)
    assert codes.dtype == theirs.code_dtype == ours.code_dtype
    assert np.mean(codes == theirs.encode(x)) > 0.9999  # float ties aside
    np.testing.assert_allclose(ours.decode(codes), theirs.decode(codes))
    for query in q:
        t1, t2 = ours.dtable(query), theirs.dtable(query)
        np.testing.assert_allclose(t1.dtable, t2.dtable, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            t1.adist(codes), t2.adist(codes), rtol=1e-5, atol=1e-4
        )
    again = pickle.loads(pickle.dumps(ours))
    np.testing.assert_array_equal(again.encode(x[:10]), codes[:10])


def test_pq_fit_quality_like_nanopq(data):
    x, _ = data
    err = {}
    for lib in (pqfast, nanopq):
        pq = lib.PQ(M=16, Ks=64, verbose=False).fit(x, iter=10, seed=1)
        err[lib.__name__] = np.mean((pq.decode(pq.encode(x)) - x) ** 2)
    assert err["pqfast"] <= 1.05 * err["nanopq"]


def test_opq_matches_nanopq_given_rotation_and_codewords(data):
    x, q = data
    theirs = nanopq.OPQ(M=16, Ks=64, verbose=False).fit(x, pq_iter=3, rotation_iter=3)
    ours = pqfast.OPQ(M=16, Ks=64, verbose=False)
    ours.R = theirs.R.copy()
    ours.pq.codewords, ours.pq.Ds = theirs.codewords.copy(), theirs.Ds
    codes = ours.encode(x)
    assert np.mean(codes == theirs.encode(x)) > 0.9999
    np.testing.assert_allclose(ours.decode(codes), theirs.decode(codes), atol=1e-5)
    np.testing.assert_allclose(
        ours.dtable(q[0]).adist(codes), theirs.dtable(q[0]).adist(codes), rtol=1e-4
    )


def test_opq_fit_reduces_error(data):
    x, _ = data
    pq = pqfast.PQ(M=16, Ks=32, verbose=False).fit(x, iter=5)
    opq = pqfast.OPQ(M=16, Ks=32, verbose=False).fit(
        x, parametric_init=True, pq_iter=5, rotation_iter=4
    )
    R = opq.R
    np.testing.assert_allclose(R @ R.T, np.eye(R.shape[0]), atol=1e-4)
    err_pq = np.mean((pq.decode(pq.encode(x)) - x) ** 2)
    err_opq = np.mean((opq.decode(opq.encode(x)) - x) ** 2)
    assert err_opq <= err_pq * 1.02


def test_errors():
    with pytest.raises(ValueError, match="power of two"):
        pqfast.PQ(M=4, Ks=100, verbose=False)
    with pytest.raises(ValueError, match="metric"):
        pqfast.PQ(M=4, metric="cos", verbose=False)
    pq = pqfast.PQ(M=4, Ks=16, verbose=False)
    with pytest.raises(ValueError, match="fit"):
        pq.encode(np.zeros((2, 8)))
    with pytest.raises(ValueError, match="exceed Ks"):
        pq.fit(np.zeros((10, 8)))
