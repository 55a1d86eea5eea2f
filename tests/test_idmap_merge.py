"""IndexIDMap and merge_from."""

import numpy as np
import pytest

import pqfast


def test_idmap_over_flat_and_pq(real_split):
    xb, xq = real_split
    ids = np.arange(len(xb)) * 10 + 3
    for inner in (pqfast.IndexFlatL2(384), pqfast.IndexPQ(384, 16, 8)):
        inner.train(xb)
        index = pqfast.IndexIDMap(inner)
        index.add_with_ids(xb, ids)
        D, I = index.search(xq, 5)
        D0, I0 = inner.search(xq, 5)
        np.testing.assert_array_equal(I, ids[I0])
        np.testing.assert_array_equal(D, D0)
        gone = I[:, 0]
        kept = int(np.setdiff1d(ids, gone)[-1])
        expected = index.reconstruct(kept)
        assert index.remove_ids(gone) == len(np.unique(gone))
        assert not set(index.search(xq, 5)[1].ravel()) & set(gone)
        assert index.ntotal == len(xb) - len(np.unique(gone))
        np.testing.assert_array_equal(index.reconstruct(kept), expected)
        with pytest.raises(ValueError, match="add_with_ids"):
            index.add(xb[:2])


def test_empty_idmap_search():
    index = pqfast.IndexIDMap(pqfast.IndexFlatL2(8))
    D, I = index.search(np.zeros((2, 8)), 3)
    assert (I == -1).all() and (D == np.float32(3.4028235e38)).all()


def test_merge_from(real_split):
    xb, xq = real_split
    a = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 16, 16, 8)
    a.train(xb)
    b = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 16, 16, 8)
    b.quantizer.add(a.quantizer.reconstruct_n(0, 16))
    b.pq.centroids = a.pq.centroids
    whole = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 16, 16, 8)
    whole.quantizer.add(a.quantizer.reconstruct_n(0, 16))
    whole.pq.centroids = a.pq.centroids
    a.add(xb[:4000])
    b.add(xb[4000:])
    whole.add(xb)
    a.merge_from(b, add_id=4000)
    assert a.ntotal == len(xb) and b.ntotal == 0
    a.nprobe = whole.nprobe = 16
    D1, I1 = a.search(xq, 10)
    D2, I2 = whole.search(xq, 10)
    np.testing.assert_allclose(D1, D2, rtol=1e-6)
    with pytest.raises(ValueError, match="same"):
        a.merge_from(pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 8, 16, 8))
