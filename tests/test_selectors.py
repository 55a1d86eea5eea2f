"""Id filtering inside the kernels, per-call nprobe, remove_ids with a selector."""

import numpy as np
import pytest

import pqfast


@pytest.fixture(scope="module")
def indexes(real_split):
    xb, _ = real_split
    d = xb.shape[1]
    flat = pqfast.IndexFlatL2(d)
    pq = pqfast.IndexPQ(d, 16, 8)
    fs = pqfast.IndexPQFastScan(d, 16)
    ivf = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(d), d, 16, 16, 8)
    ivff = pqfast.IndexIVFFlat(pqfast.IndexFlatL2(d), d, 16)
    ivfs = pqfast.IndexIVFPQFastScan(pqfast.IndexFlatL2(d), d, 16, 16)
    for index in (flat, pq, fs, ivf, ivff, ivfs):
        index.train(xb)
        index.add(xb)
    return [flat, pq, fs, ivf, ivff, ivfs]


SELECTORS = [
    pqfast.IDSelectorRange(100, 400),
    pqfast.IDSelectorBatch(np.arange(0, 9000, 7)),
    pqfast.IDSelectorArray(np.array([5, 17, 2000, 4500])),
]


@pytest.mark.parametrize("sel", SELECTORS, ids=["range", "batch", "array"])
def test_filter_is_applied_inside_the_search(indexes, real_split, sel):
    _, xq = real_split
    for index in indexes:
        cls = (
            pqfast.SearchParametersIVF
            if hasattr(index, "nprobe")
            else pqfast.SearchParameters
        )
        params = cls(sel=sel, nprobe=16) if hasattr(index, "nprobe") else cls(sel=sel)
        D, I = index.search(xq[:20], 10, params=params)
        found = I[I >= 0]
        assert sel.members(found).all()
        allowed = np.flatnonzero(sel.members(np.arange(index.ntotal)))
        # the whole allowed set is reachable: k results where k exist
        assert (I >= 0).sum(1).min() == min(10, len(allowed))
        # filtering inside = the unfiltered search over the allowed vectors only
        if hasattr(index, "reconstruct_n") and type(index) is pqfast.IndexFlatL2:
            sub = pqfast.IndexFlatL2(index.d)
            sub.add(index.reconstruct_n(0, index.ntotal)[allowed])
            D2, I2 = sub.search(xq[:20], 10)
            np.testing.assert_allclose(D, D2, rtol=1e-5)


def test_params_nprobe_overrides_per_call(indexes, real_split):
    _, xq = real_split
    ivf = indexes[3]
    ivf.nprobe = 1
    D16, I16 = ivf.search(xq, 10, params=pqfast.SearchParametersIVF(nprobe=16))
    assert ivf.nprobe == 1
    ivf.nprobe = 16
    np.testing.assert_array_equal(ivf.search(xq, 10)[1], I16)
    with pytest.raises(ValueError, match="nprobe"):
        ivf.search(xq, 10, params=pqfast.SearchParametersIVF(nprobe=0))
    with pytest.raises(TypeError, match="IDSelector"):
        ivf.search(xq, 10, params=pqfast.SearchParameters(sel=[1, 2]))


def test_remove_ids_with_selector(real_split):
    xb, _ = real_split
    ivf = pqfast.IndexIVFFlat(pqfast.IndexFlatL2(384), 384, 8)
    ivf.train(xb)
    ivf.add(xb[:1000])
    assert ivf.remove_ids(pqfast.IDSelectorRange(0, 100)) == 100
    assert ivf.ntotal == 900 and ivf.remove_ids(pqfast.IDSelectorBatch([100, 101])) == 2
