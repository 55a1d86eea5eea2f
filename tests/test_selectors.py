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


_BITS = np.random.default_rng(3).integers(0, 256, 700, dtype=np.uint8)  # ids < 5600
SELECTORS = {
    "range": pqfast.IDSelectorRange(100, 400),
    "batch": pqfast.IDSelectorBatch(np.arange(0, 9000, 7)),
    "array": pqfast.IDSelectorArray(np.array([5, 17, 2000, 4500])),
    "bitmap": pqfast.IDSelectorBitmap(_BITS),
    "not": pqfast.IDSelectorNot(pqfast.IDSelectorRange(30, 9000)),
    "and-or-xor": pqfast.IDSelectorOr(
        pqfast.IDSelectorAnd(
            pqfast.IDSelectorBitmap(600, _BITS), pqfast.IDSelectorRange(1000, 3000)
        ),
        pqfast.IDSelectorXOr(
            pqfast.IDSelectorBatch(np.arange(20, 60)), pqfast.IDSelectorRange(40, 80)
        ),
    ),
}


@pytest.mark.parametrize("sel", SELECTORS.values(), ids=SELECTORS.keys())
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


def test_selector_membership_matches_faiss():
    faiss = pytest.importorskip("faiss")
    ids = np.arange(-5, 6000, dtype=np.int64)

    def both(make):
        return make(pqfast), make(faiss)

    cases = [
        lambda m: m.IDSelectorRange(10, 50),
        lambda m: m.IDSelectorNot(m.IDSelectorRange(10, 50)),
        lambda m: m.IDSelectorAnd(
            m.IDSelectorRange(0, 300), m.IDSelectorRange(200, 900)
        ),
        lambda m: m.IDSelectorOr(
            m.IDSelectorRange(0, 30), m.IDSelectorRange(2000, 2100)
        ),
        lambda m: m.IDSelectorXOr(
            m.IDSelectorRange(0, 300), m.IDSelectorRange(200, 900)
        ),
    ]
    for make in cases:
        ours, theirs = make(pqfast), make(faiss)
        expect = np.array([theirs.is_member(int(i)) for i in ids])
        np.testing.assert_array_equal(ours.members(ids), expect)
    bits = _BITS[:100]
    theirs = faiss.IDSelectorBitmap(bits.size, faiss.swig_ptr(bits))
    expect = np.array([theirs.is_member(int(i)) for i in range(800)])
    np.testing.assert_array_equal(
        pqfast.IDSelectorBitmap(bits).members(np.arange(800)), expect
    )
    assert pqfast.IDSelectorBitmap(bits).is_member(3) == theirs.is_member(3)


def test_kernel_selector_matches_members(indexes, real_split):
    """The kernels' tree evaluation agrees with members() id by id: a flat
    search for all vectors with a deep selector returns exactly its members."""
    _, xq = real_split
    flat = indexes[0]
    sel = pqfast.IDSelectorNot(SELECTORS["and-or-xor"])
    D, I = flat.search(xq[:1], flat.ntotal, params=pqfast.SearchParameters(sel=sel))
    found = np.sort(I[I >= 0])
    np.testing.assert_array_equal(
        found, np.flatnonzero(sel.members(np.arange(flat.ntotal)))
    )


def test_bad_selectors_are_refused():
    with pytest.raises(TypeError, match="IDSelector"):
        pqfast.IDSelectorNot([1, 2])
    with pytest.raises(TypeError, match="uint8"):
        pqfast.IDSelectorBitmap(np.ones(4, np.int32))
    with pytest.raises(ValueError, match="bytes"):
        pqfast.IDSelectorBitmap(10, np.ones(4, np.uint8))
    nodes = np.array([[4, 0, 0, 0]], np.int64)  # an 'and' node that is its own child
    from pqfast._kernels import _topk  # noqa: F401 (kernels refuse bad trees)

    flat = pqfast.IndexFlatL2(4)
    flat.add(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="selector"):
        flat._search(np.eye(4, dtype=np.float32), 1, (nodes, np.empty(0, np.int64), 0))
