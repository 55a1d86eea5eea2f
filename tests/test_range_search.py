"""range_search: against faiss from the same trained state, against pqfast's
own k-NN search, filters, threads and bad input; remove_ids on flat indexes."""

import numpy as np
import pytest

import pqfast

L2, IP = pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT


def as_sets(lims, D, I):
    """Per query: {id: distance}."""
    return [
        dict(zip(I[lims[q] : lims[q + 1]].tolist(), D[lims[q] : lims[q + 1]].tolist()))
        for q in range(len(lims) - 1)
    ]


def assert_same_ranges(ours, theirs, radius, tol=1e-4):
    """Same hits with the same distances; an id on one side only must lie at
    the radius (within float rounding)."""
    assert ours[0].dtype == np.uint64 and ours[1].dtype == np.float32
    assert ours[2].dtype == np.int64
    for a, b in zip(as_sets(*ours), as_sets(*theirs)):
        for i in set(a) & set(b):
            assert a[i] == pytest.approx(b[i], rel=tol, abs=tol)
        for i in set(a) ^ set(b):
            assert a.get(i, b.get(i)) == pytest.approx(radius, rel=tol, abs=tol)


def pick_radius(D, metric, rank):
    """A radius that keeps about `rank` results per query."""
    col = np.median(D[:, rank])
    return float(col)


@pytest.fixture(scope="module")
def data(real_split):
    xb, xq = real_split
    return xb[:4000], xq[:40]


@pytest.mark.parametrize("metric", [L2, IP])
def test_flat_matches_faiss(data, metric):
    faiss = pytest.importorskip("faiss")
    xb, xq = data
    ours, theirs = pqfast.IndexFlat(384, metric), faiss.IndexFlat(384, metric)
    ours.add(xb)
    theirs.add(xb)
    radius = pick_radius(theirs.search(xq, 30)[0], metric, 20)
    res = ours.range_search(xq, radius)
    assert_same_ranges(res, theirs.range_search(xq, radius), radius)
    assert 10 < res[0][-1] / len(xq) < 40


@pytest.mark.parametrize("metric", [L2, IP])
@pytest.mark.parametrize("kind", ["PQ", "IVFPQ", "IVFFlat"])
def test_quantized_match_faiss(data, metric, kind):
    faiss = pytest.importorskip("faiss")
    xb, xq = data
    if kind == "PQ":
        theirs = faiss.IndexPQ(384, 16, 8, metric)
    elif kind == "IVFPQ":
        theirs = faiss.IndexIVFPQ(faiss.IndexFlat(384, metric), 384, 16, 16, 8, metric)
    else:
        theirs = faiss.IndexIVFFlat(faiss.IndexFlat(384, metric), 384, 16, metric)
    theirs.train(xb)
    theirs.add(xb)
    if kind == "IVFFlat":  # same centroids and lists: add to a pqfast copy
        quantizer = pqfast.IndexFlat(384, metric)
        quantizer.add(theirs.quantizer.reconstruct_n(0, 16))
        ours = pqfast.IndexIVFFlat(quantizer, 384, 16, metric)
        ours.add(xb)
    else:
        ours = pqfast.from_faiss(theirs)
    if kind != "PQ":
        ours.nprobe = theirs.nprobe = 4
    radius = pick_radius(theirs.search(xq, 30)[0], metric, 20)
    assert_same_ranges(
        ours.range_search(xq, radius), theirs.range_search(xq, radius), radius
    )


def small_indexes(xb, metric):
    d = xb.shape[1]
    out = {
        "Flat": pqfast.IndexFlat(d, metric),
        "PQ": pqfast.IndexPQ(d, 16, 8, metric),
        "PQ6bit": pqfast.IndexPQ(d, 16, 6, metric),
        "PQfs": pqfast.IndexPQFastScan(d, 16, 4, metric),
        "IVFPQ": pqfast.IndexIVFPQ(pqfast.IndexFlat(d, metric), d, 8, 16, 8, metric),
        "IVFFlat": pqfast.IndexIVFFlat(pqfast.IndexFlat(d, metric), d, 8, metric),
        "IVFPQfs": pqfast.IndexIVFPQFastScan(pqfast.IndexFlat(d, metric), d, 8, 16),
        "OPQ,IVFPQ": pqfast.index_factory(d, "OPQ16,IVF8,PQ16", metric),
        "IDMap": pqfast.IndexIDMap(pqfast.IndexPQ(d, 16, 8, metric)),
    }
    if metric == IP:
        del out["IVFPQfs"]  # built for L2 above
    for index in out.values():
        index.train(xb)
        if isinstance(index, pqfast.IndexIDMap):
            index.add_with_ids(xb, np.arange(xb.shape[0]) * 3 + 7)
        else:
            index.add(xb)
        if hasattr(index, "nprobe"):
            index.nprobe = 3
    return out


@pytest.fixture(scope="module", params=[L2, IP], ids=["L2", "IP"])
def indexes(request, data):
    xb, _ = data
    return request.param, small_indexes(xb[:2000], request.param)


def test_range_search_agrees_with_knn_search(indexes, data):
    """range_search(r) returns exactly the hits of a search for every stored
    vector whose distance beats r, with the same distances."""
    metric, found = indexes
    _, xq = data
    for name, index in found.items():
        D, I = index.search(xq[:10], index.ntotal)
        radius = pick_radius(D, metric, 15)
        lims, Dr, Ir = index.range_search(xq[:10], radius)
        for q, hits in enumerate(as_sets(lims, Dr, Ir)):
            keep = (D[q] < radius) if metric == L2 else (D[q] > radius)
            keep &= I[q] >= 0
            expect = dict(zip(I[q][keep].tolist(), D[q][keep].tolist()))
            assert hits.keys() == expect.keys(), name
            for i, dist in hits.items():
                assert dist == pytest.approx(expect[i], rel=1e-5, abs=1e-5), name


def test_selector_threads_and_edge_cases(indexes, data):
    metric, found = indexes
    _, xq = data
    sel = pqfast.IDSelectorNot(pqfast.IDSelectorRange(0, 1000))
    for name, index in found.items():
        D, _ = index.search(xq[:5], 50)
        radius = pick_radius(D, metric, 40)
        cls = (
            pqfast.SearchParametersIVF
            if hasattr(index, "nprobe")
            else pqfast.SearchParameters
        )
        lims, Dr, Ir = index.range_search(xq[:5], radius, params=cls(sel=sel))
        full = index.range_search(xq[:5], radius)
        assert sel.members(Ir).all() and lims[-1] > 0, name
        assert lims[-1] == sel.members(full[2]).sum(), name
        # the output does not depend on the thread count
        pqfast.omp_set_num_threads(1)
        one = index.range_search(xq[:5], radius)
        pqfast.omp_set_num_threads(2)
        for a, b in zip(one, index.range_search(xq[:5], radius)):
            np.testing.assert_array_equal(a, b)
        # no queries; a radius nothing beats
        lims, Dr, Ir = index.range_search(xq[:0], radius)
        assert lims.tolist() == [0] and Dr.size == Ir.size == 0
        none = -1.0 if metric == L2 else 1e9
        assert index.range_search(xq[:3], none)[0].tolist() == [0, 0, 0, 0], name


def test_empty_untrained_and_bad_input(data):
    xb, xq = data
    flat = pqfast.IndexFlatL2(384)
    assert flat.range_search(xq[:2], 1.0)[0].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="finite"):
        flat.range_search(xq[:2], float("nan"))
    with pytest.raises(TypeError, match="radius"):
        flat.range_search(xq[:2], "1.0")
    with pytest.raises(ValueError):
        flat.range_search(xq[:2, :10], 1.0)
    for index in (pqfast.IndexPQ(384, 16), pqfast.index_factory(384, "IVF8,PQ16")):
        with pytest.raises(pqfast.NotTrainedError):
            index.range_search(xq[:2], 1.0)


def test_flat_pq_fastscan_remove_ids(data):
    """remove_ids on exhaustive indexes renumbers the rest in order (as in
    faiss); IndexIDMap over a fast-scan index keeps the user ids."""
    xb, xq = data
    xb = xb[:500]
    for index in (
        pqfast.IndexFlatL2(384),
        pqfast.IndexPQ(384, 16, 8),
        pqfast.IndexPQFastScan(384, 16),
    ):
        index.train(xb)
        index.add(xb)
        kept = np.setdiff1d(np.arange(500), np.arange(0, 500, 3))
        before = index.reconstruct_n(0, 500)[kept]
        assert index.remove_ids(np.arange(0, 500, 3)) == 167
        assert index.ntotal == 333
        np.testing.assert_array_equal(index.reconstruct_n(0, 333), before)
        assert index.remove_ids(pqfast.IDSelectorRange(1000, 2000)) == 0
    idmap = pqfast.IndexIDMap(pqfast.IndexPQFastScan(384, 16))
    idmap.train(xb)
    idmap.add_with_ids(xb, np.arange(500) + 10_000)
    assert idmap.remove_ids(pqfast.IDSelectorRange(10_000, 10_100)) == 100
    _, I = idmap.search(xb[150:151], 1)
    assert I[0, 0] == 10_150
    sel = pqfast.IDSelectorBatch([10_200, 10_300])
    _, I = idmap.search(xq[:3], 5, params=pqfast.SearchParameters(sel=sel))
    assert set(I[:, :2].ravel()) == {10_200, 10_300} and (I[:, 2:] == -1).all()
