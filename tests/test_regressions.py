"""Regression tests for problems found in review; each names what it guards."""

import itertools
import warnings

import numpy as np
import pytest
from conftest import (
    assert_distances_match_reconstruction,
    gaussian_mixture,
    same_ids_ties_aside,
)

import pqfast
from pqfast._kernels import _openmp
from pqfast._storage import RowBuffer


@pytest.fixture(scope="module")
def xb():
    return gaussian_mixture(np.random.default_rng(11), 3000, 32)


def trained_ivf(xb, nlist=16, M=8):
    index = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(xb.shape[1]), xb.shape[1], nlist, M, 8)
    index.train(xb)
    return index


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
def test_flat_search_identical_at_1_and_2_threads_with_duplicates():
    """Thread splits fall on GEMM block boundaries: same rounding, same ties."""
    rng = np.random.default_rng(0)
    half = rng.standard_normal((30000, 64)).astype(np.float32)
    base = np.concatenate([half, half])  # every vector twice: ties everywhere
    index = pqfast.IndexFlatL2(64)
    index.add(base)
    results = []
    for n in (1, 2):
        pqfast.omp_set_num_threads(n)
        results.append(index.search(base[:8] + 0.01, 100))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_new_pq_centroids_refresh_the_precomputed_table(xb):
    index = trained_ivf(xb)
    index.add(xb[:500])
    index.search(xb[:5], 5)  # builds the table
    index.reset()
    index.pq.centroids = index.pq.centroids * 1.5
    index.add(xb[:500])
    index.nprobe = 4
    assert_distances_match_reconstruction(index, xb[:5])


def test_replaced_quantizer_centroids_are_seen(xb):
    index = trained_ivf(xb)
    index.search(xb[:5], 5)  # caches centroids
    shifted = index.quantizer.reconstruct_n(0, 16) + 0.5
    index.quantizer.reset()
    index.quantizer.add(shifted)
    index.add(xb[:500])
    index.nprobe = 4
    assert_distances_match_reconstruction(index, xb[:5])


def test_read_only_derived_state(xb):
    pq = pqfast.ProductQuantizer(32, 8, 8)
    for attr in ("d", "M", "nbits", "dsub", "ksub", "code_size"):
        with pytest.raises(AttributeError):
            setattr(pq, attr, 16)
    index = trained_ivf(xb)
    with pytest.raises(ValueError):
        index.pq.centroids[:] = 0
    with pytest.raises(ValueError):
        index.invlists.sizes[0] += 10**6


@pytest.mark.parametrize("fast_scan", [False, True])
def test_interrupted_add_leaves_lists_consistent(xb, monkeypatch, fast_scan):
    if fast_scan:  # lists of fast-scan blocks (BlockCodes)
        d = xb.shape[1]
        index = pqfast.IndexIVFPQFastScan(pqfast.IndexFlatL2(d), d, 16, 8, 4)
        index.train(xb)
    else:
        index = trained_ivf(xb)
    index.add(xb[:1000])
    before = index.search(xb[:10], 10)
    calls = {"n": 0}
    original = RowBuffer.grow

    def flaky_grow(self, n):  # the new entries are written; lists count them in
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(RowBuffer, "grow", flaky_grow)
    with pytest.raises(KeyboardInterrupt):
        index.add(xb[1000:2000])
    monkeypatch.undo()
    assert index.ntotal == 1000
    inv = index.invlists
    for i in range(index.nlist):
        assert len(inv.get_codes(i)) == len(inv.get_ids(i)) == inv.list_size(i)
    for a, b in zip(before, index.search(xb[:10], 10)):
        np.testing.assert_array_equal(a, b)
    index.add(xb[1000:2000])  # and it still works
    assert index.ntotal == 2000


def test_empty_query_batch_on_a_large_index():
    index = pqfast.IndexFlatL2(64)
    index.add(np.zeros((20000, 64), np.float32))
    D, I = index.search(np.zeros((0, 64)), 5)
    assert D.shape == I.shape == (0, 5)


def test_public_knn_validates_and_converts():
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((100, 8))
    D, I = pqfast.knn(xb[:3], xb, 2)  # float64 accepted
    assert I[:, 0].tolist() == [0, 1, 2] and D.dtype == np.float32
    with pytest.raises(ValueError, match="k"):
        pqfast.knn(xb[:3], xb, 0)
    with pytest.raises(ValueError, match="metric"):
        pqfast.knn(xb[:3], xb, 2, metric=5)
    with pytest.raises(ValueError, match="dimensions"):
        pqfast.knn(xb[:3, :4], xb, 2)


def test_list_numbers_and_ids_checked(xb):
    index = trained_ivf(xb)
    for bad in (-1, 16):
        with pytest.raises(ValueError, match="list_no"):
            index.get_list_size(bad)
    with pytest.raises(RuntimeError):  # what faiss raises
        index.reconstruct(123456)
    with pytest.raises(KeyError):
        index.reconstruct(123456)
    flat = pqfast.IndexFlatL2(32)
    flat.add(xb[:3])
    with pytest.raises(TypeError):
        flat.reconstruct(1.7)


def test_kmeans_weights_and_faiss_signature():
    x = np.array([[0.0], [1.0], [10.0], [12.0]], np.float32)
    km = pqfast.Kmeans(1, 2, niter=5)
    km.train(
        x, np.array([1, 3, 1, 1], np.float32), np.array([[0.0], [11.0]], np.float32)
    )
    np.testing.assert_allclose(np.sort(km.centroids.ravel()), [0.75, 11.0], rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        km.train(x, np.array([1, -1, 1, 1]))


def test_overflowing_values_rejected(xb):
    index = trained_ivf(xb)
    with pytest.raises(ValueError, match="overflow"):
        index.add(np.full((2, 32), 1e20))
    assert index.ntotal == 0


def test_normalize_l2():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    pqfast.normalize_L2(x)
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])
    with pytest.raises(TypeError):
        pqfast.normalize_L2(x.astype(np.float64))


def _assign(pq, x, direct, simd, chunk=7):
    """Sub-codes from the encoding kernel, forced onto one path and SIMD level."""
    from pqfast._kernels import _pq

    idx = np.empty((x.shape[0], pq.M), np.uint16)
    cents = np.ascontiguousarray(pq.centroids)
    cbt = np.ascontiguousarray(cents.transpose(0, 2, 1))
    ynorm = np.einsum("mkd,mkd->mk", cents, cents)
    _pq.assign_codes(
        x,
        cents,
        cbt,
        ynorm,
        chunk,
        direct,
        simd,
        idx,
        np.empty((0, 0), np.float32),
    )
    return idx


def _nearest_float64(pq, x):
    """First index of the float64 minimum, per sub-vector."""
    sub = x.astype(np.float64).reshape(x.shape[0], pq.M, 1, pq.dsub)
    dist = ((sub - pq.centroids.astype(np.float64)[None]) ** 2).sum(-1)
    return dist.argmin(-1)


@pytest.mark.parametrize("nbits", [4, 6, 8])
@pytest.mark.parametrize("dsub", [1, 3, 8, 24])
def test_encoder_paths_and_simd_levels_agree_on_ties(nbits, dsub):
    """Direct distances (every SIMD level) and the GEMM path give the nearest
    centroid in float64, first index on exact ties, also where the norms dwarf
    the distances (offset data) and on exact midpoints between centroids."""
    rng = np.random.default_rng(dsub)
    M, ksub = 3, 1 << nbits
    pq = pqfast.ProductQuantizer(M * dsub, M, nbits)
    cents = rng.integers(-4, 5, (M, ksub, dsub)).astype(np.float32)
    cents[:, 1] = cents[:, 0]  # duplicate centroids: exact ties
    pq.centroids = cents + 1000  # large norms, as in SIFT
    a, b = rng.integers(0, ksub, (2, 400, M))
    mid = (cents[np.arange(M), a] + cents[np.arange(M), b]) / 2  # exact midpoints
    noisy = cents[np.arange(M), a] + rng.normal(0, 0.3, (400, M, dsub))
    x = np.concatenate([mid, noisy]).reshape(800, -1).astype(np.float32) + 1000
    expected = _nearest_float64(pq, x)
    for direct, simd in [(False, 2), (True, 0), (True, 1), (True, 2)]:
        np.testing.assert_array_equal(_assign(pq, x, direct, simd), expected)


@pytest.mark.parametrize("d,M", [(128, 2), (96, 2)])  # dsub 64 and 48: both paths
def test_encode_is_nearest_centroid_at_large_dsub(rng, d, M):
    pq = pqfast.ProductQuantizer(d, M, 8)
    pq.centroids = rng.standard_normal((M, 256, d // M)).astype(np.float32)
    x = rng.standard_normal((500, d)).astype(np.float32)
    np.testing.assert_array_equal(
        pq.unpack(pq.compute_codes(x)), _nearest_float64(pq, x)
    )


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
def test_codes_identical_with_1_and_2_threads():
    rng = np.random.default_rng(5)
    x = gaussian_mixture(rng, 5000, 64)
    codes = {}
    for M in (4, 8, 16):  # dsub 16, 8, 4: the direct path
        pq = pqfast.ProductQuantizer(64, M, 8)
        pq.centroids = x[rng.choice(5000, 256, replace=False)].reshape(256, M, -1)
        pq.centroids = pq.centroids.transpose(1, 0, 2)
        for n in (1, 2):
            pqfast.omp_set_num_threads(n)
            codes[M, n] = pq.compute_codes(x)
        np.testing.assert_array_equal(codes[M, 1], codes[M, 2])


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("fast_scan", [False, True])
def test_fused_few_query_ivfpq_search_equals_two_step(
    xb, monkeypatch, metric, fast_scan
):
    """IndexIVFPQ's and IndexIVFPQFastScan's one-call path for few queries
    (coarse search + scan) returns exactly what the coarse search followed by
    the list scan returns, at small and large k (the fast scan's reservoir),
    also after more vectors are added."""
    import pqfast.ivf as ivf_module

    d = xb.shape[1]
    q = pqfast.IndexFlatL2(d) if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP(d)
    if fast_scan:
        index = pqfast.IndexIVFPQFastScan(q, d, 32, 8, 4, metric)
    else:
        index = pqfast.IndexIVFPQ(q, d, 32, 8, 8, metric)
    index.train(xb)
    index.add(xb[:1000])
    sel = pqfast.SearchParametersIVF(sel=pqfast.IDSelectorRange(100, 2000), nprobe=3)
    for added in (False, True):
        if added:
            index.add(xb[1000:])
        for nq in (1, 2, 4):
            # nprobe from 17 on: the probes are selected, not kept in a heap
            for nprobe, params in ((1, None), (5, None), (24, None), (1, sel)):
                index.nprobe = nprobe
                for k in (10, 40):
                    fused = index.search(xb[:nq] + 0.01, k, params=params)
                    monkeypatch.setattr(ivf_module, "_FUSED_MAX_QUERIES", 0)
                    two_step = index.search(xb[:nq] + 0.01, k, params=params)
                    monkeypatch.undo()
                    for a, b in zip(fused, two_step):
                        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize(("nb", "d"), [(300, 32), (1000, 1100), (2500, 32)])
def test_flat_large_k_equals_sorted_exact_distances(metric, nb, d):
    """From k = 17 a base segment of one GEMM block is searched by selection
    (select_smallest), not through a heap.  On small integer vectors every
    distance is exact in float32 and most are tied (duplicates too): the
    results are the (distance, id) order of exact integer arithmetic, with a
    selector, k beyond the base (padding), and at 2 threads (1000 x 1100
    splits each query in two segments, merged as heaps); 2500 rows span
    several blocks (the heap)."""
    rng = np.random.default_rng(nb)
    xb = rng.integers(0, 3, (nb, d)).astype(np.float32)
    xb[nb // 2 :: 7] = xb[: len(xb[nb // 2 :: 7])]  # duplicated rows
    xq = rng.integers(0, 3, (3, d)).astype(np.float32)
    exact = xq.astype(np.int64) @ xb.astype(np.int64).T
    if metric == pqfast.METRIC_L2:
        sq = (xb.astype(np.int64) ** 2).sum(1)
        exact = (xq.astype(np.int64) ** 2).sum(1)[:, None] + sq[None] - 2 * exact
    else:
        exact = -exact
    index = pqfast.IndexFlat(d, metric)
    index.add(xb)
    keep = pqfast.IDSelectorRange(nb // 3, nb)
    for threads, k, sel in itertools.product((1, 2), (17, 64, nb + 5), (None, keep)):
        pqfast.omp_set_num_threads(threads)
        params = None if sel is None else pqfast.SearchParameters(sel=sel)
        D, I = index.search(xq, k, params=params)
        ids = np.arange(nb) if sel is None else np.arange(nb // 3, nb)
        for row in range(len(xq)):
            order = ids[np.lexsort((ids, exact[row, ids]))][:k]
            n = len(order)
            np.testing.assert_array_equal(I[row, :n], order)
            sign = 1 if metric == pqfast.METRIC_L2 else -1
            np.testing.assert_array_equal(D[row, :n], sign * exact[row, order])
            assert (I[row, n:] == -1).all()


def _pq_kernel_search(index, x, k, simd, sel=None):
    """IndexPQ's search kernel at a given SIMD level of its multi-query scan
    (L2 results, one segment)."""
    from pqfast._kernels import _pq
    from pqfast._search import result_arrays
    from pqfast.selectors import selector_args

    pq = index.pq
    D, I = result_arrays(x.shape[0], k)
    params = None if sel is None else pqfast.SearchParameters(sel=sel)
    _pq.pq_search(
        x, pq._cbt, pq._ynorm, index._codes.view(), pq.nbits, True, 1,
        selector_args(params), simd, D, I,
    )  # fmt: skip
    return D, I


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("nbits", [8, 4])
@pytest.mark.parametrize("M", [3, 4, 12, 16])  # 3, 12: past the groups of 8, odd M
def test_multi_query_pq_scan_equals_one_query_scans(metric, nbits, M):
    """IndexPQ scans 8- and 4-bit codes for up to 8 queries at once
    (interleaved tables).  Every query's row is bit-identical to searching it
    alone, for any batch size, with duplicate codes (ties broken by id), a
    selector, k beyond ntotal, at 1 and 2 threads, and at the portable and
    AVX2 levels."""
    rng = np.random.default_rng(M)
    x = gaussian_mixture(rng, 1500, 48)
    x[700:900] = x[:200]  # duplicates: equal distances, ties by id
    index = pqfast.IndexPQ(48, M, nbits, metric)
    index.train(x)
    index.add(x)
    xq = x[rng.choice(1500, 19, replace=False)] + 0.05
    sel = pqfast.IDSelectorRange(300, 1200)
    for k, params in ((10, None), (1600, None), (10, pqfast.SearchParameters(sel=sel))):
        alone = [index.search(q[None], k, params=params) for q in xq]
        D1 = np.concatenate([d for d, _ in alone])
        I1 = np.concatenate([i for _, i in alone])
        for threads in (1, 2):
            pqfast.omp_set_num_threads(threads)
            for nq in (2, 3, 8, 9, 19):
                D, I = index.search(xq[:nq], k, params=params)
                np.testing.assert_array_equal(I, I1[:nq])
                np.testing.assert_array_equal(D, D1[:nq])
    if metric == pqfast.METRIC_L2:
        for s in (None, sel):
            portable = _pq_kernel_search(index, xq, 10, 0, s)
            simd = _pq_kernel_search(index, xq, 10, 2, s)
            for a, b in zip(portable, simd):
                np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(
                simd[1], index.search(xq, 10, params=pqfast.SearchParameters(sel=s))[1]
            )


@pytest.mark.parametrize("nlist, M", [(16, 8), (4, 2)])
def test_per_code_list_terms_follow_index_changes(xb, nlist, M):
    """L2 list terms kept per code (while there are no more codes than
    precomputed-table entries: nlist * M * 256 = 2048 for (4, 2), so adding
    all 3000 vectors there switches to the table and removing half back)
    give the table path's neighbours and distances after every change, in a
    batch and one query at a time, and distances that match the decoded
    vectors."""
    index = trained_ivf(xb, nlist, M)
    index.nprobe = 3
    xq = np.ascontiguousarray(xb[::150] + 0.01, dtype=np.float32)
    entries = nlist * M * 256

    def check():
        D, I = index.search(xq, 10)
        assert (index._terms is not None) == (index.ntotal <= entries)
        index.use_precomputed_table = 1  # the table path
        Dt, It = index.search(xq, 10)
        index.use_precomputed_table = 0
        np.testing.assert_array_equal(I, It)
        np.testing.assert_allclose(D, Dt, rtol=1e-5, atol=1e-5)
        for q in (0, 7, 19):  # (direct scoring or tables may differ: rounding)
            D1, I1 = index.search(xq[q : q + 1], 10)
            same_ids_ties_aside(D1, I1, D[q : q + 1], I[q : q + 1], 1e-5, 1e-5)
        if index.ntotal:
            assert_distances_match_reconstruction(index, xq)

    other = trained_ivf(xb, nlist, M)

    def shift_centroids():
        shifted = index.quantizer.reconstruct_n(0, nlist) + 0.5
        for ivf in (index, other):
            ivf.quantizer.reset()
            ivf.quantizer.add(shifted)

    changes = [
        lambda: index.add(xb[:1500]),
        lambda: index.add(xb[1500:]),  # lists grow (and, for (4, 2), the table)
        lambda: index.remove_ids(pqfast.IDSelectorRange(0, 1500)),
        lambda: setattr(index.pq, "centroids", index.pq.centroids * 1.5),
        lambda: index.invlists.add_entries(  # the lists changed directly
            np.zeros(3, np.int64), index.invlists.get_codes(1)[:3], np.arange(3) + 9000
        ),
        index.reset,
        lambda: index.add(xb[:1000]),
        shift_centroids,  # the coarse centroids replaced by hand
        lambda: setattr(other.pq, "centroids", index.pq.centroids),
        lambda: other.add(xb[1000:1400]),
        lambda: index.merge_from(other, add_id=5000),
    ]
    for change in changes:
        change()
        check()
    assert index.ntotal == 1400
    assert index.nbytes == index.invlists.nbytes + 4 * index.ntotal  # no table


def test_list_terms_do_not_depend_on_the_lists_computed_with_them(embeddings):
    """A list's terms are the same bits whichever lists are computed in the
    same call (a GEMM's rounding depends on its shape), so an index whose
    lists changed one by one ranks exactly as its copy read from a file,
    which computes every list at once. Checked against float64 sums."""
    from pqfast._code_terms import list_term_table

    x = embeddings[:3000]
    index = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 16, 16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (fewer points than faiss asks for)
        index.train(x)
    pq, cents = index.pq, index.quantizer.reconstruct_n(0, 16)
    full = list_term_table(pq, cents)
    for lists in ([0], [3, 1], list(range(5)), list(range(15, -1, -2)), [7] * 9):
        np.testing.assert_array_equal(list_term_table(pq, cents[lists]), full[lists])
    sub = cents.reshape(16, 16, 1, 24).astype(np.float64)
    book = pq.centroids.astype(np.float64)  # (M, 256, dsub)
    want = (book**2).sum(-1) + 2 * (sub * book).sum(-1)
    np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-5)
    index.add_with_ids(x, np.arange(3000) * 3 + 1)
    index.remove_ids(np.arange(100) * 3 + 1)  # terms of the changed lists redone
    index.nprobe = 4
    copy = pqfast.deserialize_index(pqfast.serialize_index(index))
    for a, b in zip(index.search(embeddings[5000:5100], 5), copy.search(
            embeddings[5000:5100], 5)):  # fmt: skip
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("nbits", [4, 6, 8])
def test_per_code_list_terms_are_the_table_sums(xb, nbits):
    """Each kept list term is sum_m P[l, m, code_m] (one kernel call for a
    chunk of lists, reading the packed codes: 8-bit, 4-bit and the generic
    bit stream), and bad kernel arguments raise rather than read astray."""
    from pqfast._code_terms import list_term_table
    from pqfast._kernels import _pq

    index = pqfast.IndexIVFPQ(
        pqfast.IndexFlatL2(xb.shape[1]), xb.shape[1], 16, 8, nbits
    )
    index.train(xb)
    index.add(xb[:2000])
    assert index._terms is not None
    pq, inv = index.pq, index.invlists
    table = list_term_table(pq, index.quantizer.reconstruct_n(0, 16))
    for i in range(16):
        idx = pq.unpack(inv.get_codes(i)).astype(np.intp)
        want = table[i][np.arange(8), idx].sum(axis=1, dtype=np.float64)
        got = index._terms._terms[i]
        if want.size == 0:
            assert got is None
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    code_ptrs, _, sizes = inv.kernel_arrays()
    first = int(np.flatnonzero(sizes)[0])
    lists = np.array([first], np.int64)
    n = sizes[lists].copy()
    out = np.empty(int(n[0]), np.float32)
    ptrs = np.array([out.ctypes.data], np.uint64)

    def call(lists=lists, code_size=inv.code_size, ptrs=ptrs, n=n):
        _pq.code_sums(
            table[first : first + 1], lists, code_ptrs, sizes, code_size, nbits, ptrs, n
        )

    call()
    np.testing.assert_array_equal(out, index._terms._terms[first])
    bad = [
        {"lists": lists + 16},  # list number
        {"code_size": inv.code_size + 1},  # code size
        {"ptrs": ptrs[:0]},  # shapes
        {"n": n - 1},  # output too short
        {"ptrs": ptrs * 0},  # null output
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            call(**kwargs)


def test_fused_search_follows_index_changes(xb, monkeypatch):
    """The one-call path's cached kernel arguments (_fused_args) are rebuilt
    or stay valid after every change to what they are read from: each search
    equals the two-step path, which gathers its arguments afresh."""
    import pqfast.ivf as ivf_module

    index = trained_ivf(xb)
    index.nprobe = 4
    q = np.ascontiguousarray(xb[:1] + 0.01, dtype=np.float32)

    def check():
        fused = index.search(q, 10)
        monkeypatch.setattr(ivf_module, "_FUSED_MAX_QUERIES", 0)
        two_step = index.search(q, 10)
        monkeypatch.undo()
        for a, b in zip(fused, two_step):
            np.testing.assert_array_equal(a, b)
        return fused

    empty = check()  # arguments cached while the lists are empty
    assert (empty[1] == -1).all()
    changes = [
        lambda: index.add(xb[:1500]),
        lambda: index.add(xb[1500:]),  # lists grow: their arrays are reallocated
        lambda: index.remove_ids(pqfast.IDSelectorRange(0, 700)),
        lambda: setattr(index, "nprobe", 16),
        lambda: pqfast.omp_set_num_threads(1),
        lambda: pqfast.omp_set_num_threads(2),
        lambda: setattr(index, "use_precomputed_table", -1),  # no list-term table
        lambda: setattr(index, "use_precomputed_table", 1),  # the table
        lambda: setattr(index, "use_precomputed_table", 0),  # per-code terms
        lambda: setattr(index, "precomputed_table_max_bytes", 0),
        lambda: setattr(index, "precomputed_table_max_bytes", 1 << 31),
        index.precompute_table,
        index.reset,
        lambda: setattr(index.pq, "centroids", index.pq.centroids * 1.5),
        lambda: index.add(xb),
    ]

    def table_shape():
        return index._fused_args(index._code_terms() is not None)[3].shape

    seen = {table_shape()}
    for change in changes:
        change()
        check()
        seen.add(table_shape())
    assert (0, 0, 0) in seen and (16, 8, 256) in seen  # both table settings ran
    # the coarse centroids replaced by hand (the quantizer counts its changes)
    shifted = index.quantizer.reconstruct_n(0, 16) + 0.5
    index.quantizer.reset()
    index.quantizer.add(shifted)
    assert check()[1][0, 0] >= 0
    assert_distances_match_reconstruction(index, q)
    # merge_from empties the other index, whose cached arguments must follow
    other = trained_ivf(xb)
    other.quantizer.reset()
    other.quantizer.add(shifted)
    other.pq.centroids = index.pq.centroids
    other.add(xb[:100])
    other.search(q, 5)
    index.merge_from(other, add_id=10_000)
    assert other.search(q, 5)[1].max() == -1
    assert check()[0].shape == (1, 10)


def test_fused_search_is_thread_safe(xb):
    """Concurrent one-query searches on one index give the sequential results
    (the kernel's scratch space is allocated per call, not kept on the index)."""
    from concurrent.futures import ThreadPoolExecutor

    index = trained_ivf(xb)
    index.add(xb)
    index.nprobe = 8
    queries = [np.ascontiguousarray(xb[i : i + 1] + 0.01) for i in range(200)]
    expected = [index.search(q, 10) for q in queries]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda q: index.search(q, 10), queries * 3))
    for (D, I), (De, Ie) in zip(got, expected * 3):
        np.testing.assert_array_equal(D, De)
        np.testing.assert_array_equal(I, Ie)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e20, -2e15])
@pytest.mark.parametrize("where", [0, 31, 5000, -1])
def test_float32_input_range_checked_in_c(bad, where):
    """float32 C-contiguous input skips conversion (check_vectors's C path) but
    is still refused with the messages of the general path, wherever the bad
    value is (first, a later row, a later block of the C loop, the last)."""
    from pqfast._validation import check_vectors

    x = np.zeros((400, 32), np.float32)
    x.ravel()[where] = bad
    match = "NaN or infinity" if not np.isfinite(bad) else "overflow"
    with pytest.raises(ValueError, match=match):
        check_vectors(x, 32)
    with pytest.raises(ValueError, match=match):  # the same through conversion
        check_vectors(x.astype(np.float64), 32)
    single = np.ascontiguousarray(x.reshape(-1, 32)[[where // 32]])
    with pytest.raises(ValueError, match=match):
        check_vectors(single, 32)


def test_all_within_matches_numpy():
    """_check.all_within agrees with numpy, at the bound and around it."""
    from pqfast._kernels import _check

    rng = np.random.default_rng(0)
    bound = 1e15
    edge = np.float32(bound)  # 1e15 rounded to float32: the largest value allowed
    special = np.array(
        [edge, -edge, np.nextafter(edge, np.inf), -np.nextafter(edge, np.inf),
         -0.0, np.nan, np.inf, 3e38], np.float32,
    )  # fmt: skip
    for n in (0, 1, 7, 4096, 4097, 20000):
        x = rng.standard_normal(n).astype(np.float32)
        assert _check.all_within(x, bound)
        for v in special if n else ():
            for pos in {0, n // 2, n - 1}:
                y = x.copy()
                y[pos] = v
                expected = bool(np.all(np.abs(y.astype(np.float64)) <= bound))
                assert _check.all_within(y, bound) == expected, (n, v, pos)
    with pytest.raises(TypeError):
        _check.all_within(np.zeros(4), bound)  # float64: not what it reads
    with pytest.raises(TypeError):
        _check.all_within(np.zeros((4, 4), np.float32).T, bound)  # not C-contiguous


@pytest.mark.parametrize("d", [7, 16, 33, 384])  # masked tails, whole vectors
def test_flat_add_one_pass_copy_checks_and_keeps_the_index(d):
    """IndexFlat.add copies, range-checks and takes norms in one pass over
    float32 input: bad values anywhere are rejected with check_vectors'
    messages and the index keeps what it had; norms and searches are right."""
    rng = np.random.default_rng(d)
    x = rng.normal(size=(300, d)).astype(np.float32)
    index = pqfast.IndexFlatL2(d)
    index.add(x[:100])
    before = index.search(x[:5], 3)
    for bad, message in ((np.nan, "NaN or infinity"), (np.inf, "NaN or infinity"),
                         (-np.inf, "NaN or infinity"), (3e15, "overflow")):  # fmt: skip
        for row, col in ((0, 0), (199, d - 1), (150, d // 2)):
            y = x[100:].copy()
            y[row, col] = bad
            with pytest.raises(ValueError, match=message):
                index.add(y)
            assert index.ntotal == 100
            for a, b in zip(index.search(x[:5], 3), before):
                np.testing.assert_array_equal(a, b)
    index.add(x[100:])
    index.add(x[:0])
    assert index.ntotal == 300
    np.testing.assert_array_equal(index.reconstruct_n(0, 300), x)
    np.testing.assert_allclose(
        index._norms.view(), (x.astype(np.float64) ** 2).sum(1), rtol=1e-5
    )
    D, I = index.search(x[:20], 1)
    np.testing.assert_array_equal(I[:, 0], np.arange(20))
    index.add(x[:10].astype(np.float64))  # converted, same path afterwards
    assert index.ntotal == 310


@pytest.mark.parametrize("d", [7, 33, 384])
def test_copy_rows_portable_matches_simd(d):
    from pqfast._kernels import _check

    rng = np.random.default_rng(d)
    x = rng.normal(size=(50, d)).astype(np.float32)
    out = []
    for level in (0, 2):
        dst, norms = np.empty_like(x), np.empty(50, np.float32)
        assert _check.copy_rows(x, d, 1e15, dst, norms, level) == 1
        np.testing.assert_array_equal(dst, x)
        out.append(norms)
        y = x.copy()
        y[30, d - 1] = np.nan
        assert _check.copy_rows(y, d, 1e15, dst, norms, level) == -1
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)


@pytest.mark.parametrize("ksub", [16, 48, 256])
@pytest.mark.parametrize("dsub", [1, 5, 8])
def test_direct_assignment_mins_two_rows_and_one_row(ksub, dsub):
    """assign_codes's `mins` (the k-means objective): each sub-vector's
    smallest distance as computed.  At every SIMD level the two-row AVX-512
    kernel (chunks of 7 rows: pairs and an odd row) gives the codes and
    distances of the one-row kernel (chunks of 1) bit for bit, and the
    distances are those to the chosen centroid up to the encoder's bound."""
    from pqfast._kernels import _pq

    rng = np.random.default_rng(ksub + dsub)
    M, n = 3, 301
    cents = rng.standard_normal((M, ksub, dsub)).astype(np.float32) + 50
    cbt = np.ascontiguousarray(cents.transpose(0, 2, 1))
    ynorm = np.einsum("mkd,mkd->mk", cents, cents)
    x = (rng.standard_normal((n, M * dsub)) + 50).astype(np.float32)
    sub = x.astype(np.float64).reshape(n, M, 1, dsub)
    exact = ((sub - cents.astype(np.float64)[None]) ** 2).sum(-1)  # (n, M, ksub)
    for simd in (0, 1, 2):
        got = {}
        for chunk in (1, 7):
            idx = np.empty((n, M), np.uint16)
            mins = np.full((n, M), np.nan, np.float32)
            _pq.assign_codes(x, cents, cbt, ynorm, chunk, True, simd, idx, mins)
            got[chunk] = idx, mins
        np.testing.assert_array_equal(got[1][0], got[7][0])
        np.testing.assert_array_equal(got[1][1], got[7][1])
        idx, mins = got[7]
        np.testing.assert_array_equal(idx, exact.argmin(-1))
        chosen = np.take_along_axis(exact, idx[..., None].astype(np.int64), -1)[..., 0]
        np.testing.assert_allclose(mins, chosen, rtol=5e-7 * (dsub + 4), atol=1e-30)


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
@pytest.mark.parametrize("M", [8, 16])
def test_pq_one_query_split_over_threads_equals_one_thread(xb, M, monkeypatch):
    """A single query's exhaustive scan split into segments (one a thread,
    IndexPQ._scan_work) returns what the unsplit scan does, with a selector
    and with k larger than a segment's share of hits."""
    from pqfast import _search

    index = pqfast.IndexPQ(xb.shape[1], M, 8)
    index.train(xb)
    index.add(xb)
    xq = np.ascontiguousarray(xb[:6] + 0.05, dtype=np.float32)
    sel = pqfast.SearchParameters(sel=pqfast.IDSelectorRange(200, 2600))
    pqfast.omp_set_num_threads(1)  # (conftest restores the thread count)
    expected = [index.search(xq[q : q + 1], k, params=p) for q in range(6)
                for k in (10, 80) for p in (None, sel)]  # fmt: skip
    pqfast.omp_set_num_threads(2)
    monkeypatch.setattr(_search, "CODES_PER_SEGMENT", 256)
    assert _search.n_segments(1, index._scan_work()) == 2
    got = [index.search(xq[q : q + 1], k, params=p) for q in range(6)
           for k in (10, 80) for p in (None, sel)]  # fmt: skip
    for (D1, I1), (D2, I2) in zip(expected, got):
        np.testing.assert_array_equal(I1, I2)
        np.testing.assert_array_equal(D1, D2)


def test_list_terms_failure_after_add_does_not_fail_the_add(xb, monkeypatch):
    """The per-code terms are refreshed after an add has stored its vectors:
    if that refresh fails (no memory), the add still succeeds and the next
    search refreshes them; a replaced ``index.pq`` (same version count)
    refreshes them too."""
    from pqfast import _code_terms

    index = trained_ivf(xb)
    index.nprobe = 4
    index.add(xb[:1000])
    real = _code_terms.CodeTerms._recompute

    def fail(*args):  # noqa: ANN002
        raise MemoryError

    monkeypatch.setattr(_code_terms.CodeTerms, "_recompute", fail)
    index.add(xb[1000:2000])
    assert index.ntotal == 2000
    monkeypatch.setattr(_code_terms.CodeTerms, "_recompute", real)
    xq = np.ascontiguousarray(xb[::100] + 0.01, dtype=np.float32)

    def same_as_table():
        D, I = index.search(xq, 10)
        index.use_precomputed_table = 1
        Dt, It = index.search(xq, 10)
        index.use_precomputed_table = 0
        np.testing.assert_array_equal(I, It)
        np.testing.assert_allclose(D, Dt, rtol=1e-5, atol=1e-5)

    same_as_table()
    index.search(xq, 10)  # terms up to date (the table path dropped them)
    other = trained_ivf(xb[::-1].copy())  # other codebooks, same version count
    assert other.pq.version == index.pq.version
    index.pq = other.pq
    assert_distances_match_reconstruction(index, xq)
    same_as_table()
    index.use_precomputed_table = 1  # the table, too, follows a replaced pq
    index.search(xq, 10)
    index.pq = trained_ivf(xb[::-1].copy()).pq
    assert_distances_match_reconstruction(index, xq)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_reservoir_and_heap_agree_around_their_limits(xb, metric):
    """8-bit scans keep candidates in a Reservoir for 17 <= k <= 4096 and in
    the heap outside: the first k of a larger search are the k results on
    both sides of each limit (IndexPQ; IVFPQ's one-call path with nlist and
    nprobe that leave its scratch parts unaligned to 16 floats)."""
    d = xb.shape[1]
    pq = pqfast.IndexPQ(d, 8, 8, metric)
    pq.train(xb)
    pq.add(np.concatenate([xb, xb]))  # ties: every vector twice
    xq = np.ascontiguousarray(xb[:3] + 0.01)
    D_all, I_all = pq.search(xq, 4200)
    for k in (16, 17, 4096, 4097):
        D, I = pq.search(xq, k)
        np.testing.assert_array_equal(I, I_all[:, :k])
        np.testing.assert_array_equal(D, D_all[:, :k])
    q = pqfast.IndexFlatL2(d) if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP(d)
    ivf = pqfast.IndexIVFPQ(q, d, 101, 8, 8, metric)
    ivf.train(xb)
    ivf.add(xb)
    ivf.nprobe = 20
    D_all, I_all = ivf.search(xq[:1], 200)
    for k in (16, 20, 199):
        D, I = ivf.search(xq[:1], k)
        np.testing.assert_array_equal(I, I_all[:, :k])
        np.testing.assert_array_equal(D, D_all[:, :k])


def _kernel_knn(x, xb, k, l2, simd, qb=64, bb=1024):
    """_topk.knn on one segment: simd 2 runs pqfast's GEMM where the CPU
    has AVX-512, simd 0 BLAS."""
    from pqfast._kernels import _topk
    from pqfast.selectors import selector_args

    D = np.empty((len(x), k), np.float32)
    I = np.empty((len(x), k), np.int64)
    xnorm = (xb.astype(np.float64) ** 2).sum(1).astype(np.float32)
    _topk.knn(x, xb, xnorm if l2 else np.empty(0, np.float32), l2, qb, bb, 1,
              selector_args(None), D, I, simd)  # fmt: skip
    return D, I


@pytest.mark.parametrize(
    "nq, nb, d",
    [
        (5, 1, 1),
        (9, 33, 17),
        (16, 32, 256),
        (13, 65, 257),
        (15, 16, 520),
        (14, 40, 100),
        # 6 rows with qb 5: one row through pqfast_dots, for these tails of d
        (6, 20, 7),
        (6, 20, 48),
        (6, 20, 60),
        (6, 20, 124),
        (77, 379, 384),
    ],
)
def test_gemm_kernel_matches_float64_and_blas(rng, nq, nb, d):
    """The k-NN GEMM (pqfast's AVX-512 kernel where it runs, else BLAS) gives
    float64's inner products to float32 rounding for every tail of rows (8 a
    tile), columns (32 a panel) and dimensions (256 a chunk), and the same
    ranking as BLAS up to near-ties."""
    x = rng.standard_normal((nq, d)).astype(np.float32)
    xb = rng.standard_normal((nb, d)).astype(np.float32)
    want = -np.sort(x.astype(np.float64) @ xb.T.astype(np.float64), axis=1)[:, ::-1]
    tol = 1e-6 * d * np.abs(x).max() * np.abs(xb).max()
    results = {}
    for simd in (2, 0):
        for qb in (nq, 5, 8, 10, 11, 12):  # row tiles of 1 to 8 rows
            D, I = _kernel_knn(x, xb, nb, False, simd, qb=qb, bb=min(nb, 40))
            np.testing.assert_allclose(D, want, rtol=0, atol=tol)
            results.setdefault(simd, (D, I))
    same_ids_ties_aside(*results[2], *results[0], rtol=0, atol=tol)


def test_gemm_kernel_rounding_does_not_depend_on_the_call():
    """With pqfast's GEMM each distance is one chain of multiply-adds in a
    fixed order: two copies of a vector get the same distance (so ties are
    broken by id), and a query's row is the same bits in any GEMM block of
    more than 4 queries (fewer go through pqfast_dots) and any base block.
    (BLAS gives no such promise: its edge kernels round otherwise.)"""
    from pqfast._kernels import _topk

    if not _topk.own_gemm():
        pytest.skip("no AVX-512: BLAS computes the GEMM")
    rng = np.random.default_rng(5)
    half = rng.standard_normal((700, 40)).astype(np.float32)
    xb = np.concatenate([half, half[::-1]])  # row j and row 1399 - j equal
    xq = rng.standard_normal((300, 40)).astype(np.float32)
    D, I = _kernel_knn(xq, xb, 1400, True, 2, qb=300, bb=1400)
    for qb, bb in ((10, 33), (64, 1024), (300, 100)):  # blocks of 10, 64 + 22
        D2, I2 = _kernel_knn(xq[:150], xb, 1400, True, 2, qb=qb, bb=bb)
        np.testing.assert_array_equal(D2, D[:150])
        np.testing.assert_array_equal(I2, I[:150])
    assert np.all(D[:, ::2] == D[:, 1::2])  # each distance twice ...
    assert np.all(I[:, ::2] < I[:, 1::2])  # ... the smaller id first


def test_streamed_arrays_start_on_a_cache_line(rng):
    """Index storage (RowBuffer, as it grows) and the transposed codebook
    start on 64-byte boundaries from ALIGN_MIN_BYTES on, so the kernels'
    vector loads of a row do not straddle lines (numpy's own arrays usually
    start 16 bytes past)."""
    from pqfast._kernels._check import data_address

    from pqfast._storage import ALIGN, aligned_empty

    for shape, dtype in (((0, 3), np.float32), ((5, 7000), np.uint8), (9000, np.int64)):
        a = aligned_empty(shape, dtype)
        assert a.shape == np.empty(shape).shape and a.dtype == dtype
        assert a.flags.c_contiguous and (a.size == 0 or data_address(a) % ALIGN == 0)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    flat = pqfast.IndexFlatL2(24)
    for i in range(0, 3000, 700):  # several reallocations
        flat.add(x[i : i + 700])
        assert data_address(flat._xb.view()) % ALIGN == 0
    np.testing.assert_array_equal(flat.reconstruct_n(0, 3000), x)
    ivf = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(24), 24, 256, 4, 8)  # 24 KiB each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ivf.train(x)
    assert data_address(ivf.quantizer._xb.view()) % ALIGN == 0
    assert data_address(ivf.pq._cbt) % ALIGN == 0
    ivf.add(x)
    for copy in (
        pqfast.deserialize_index(pqfast.serialize_index(ivf)),
        pickle_copy(ivf),
    ):
        assert data_address(copy.quantizer._xb.view()) % ALIGN == 0
        assert data_address(copy.pq._cbt) % ALIGN == 0
    np.testing.assert_array_equal(ivf.pq._cbt, ivf.pq.centroids.transpose(0, 2, 1))
    loaded = pqfast.deserialize_index(pqfast.serialize_index(flat))
    assert data_address(loaded._xb.view()) % ALIGN == 0
    loaded.remove_ids(np.arange(10))  # (a file's array is copied when it changes)
    assert data_address(loaded._xb.view()) % ALIGN == 0


def pickle_copy(index):
    import pickle

    return pickle.loads(pickle.dumps(index))


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
def test_one_query_ivfpq_same_whichever_thread_builds_the_table(embeddings):
    """At 2 threads a one-query search builds its table on the second thread
    while the first searches the coarse centroids, unless it will most likely
    score directly (_ivf.surely_direct: nprobe 1 here); either way, and at 1
    thread, the results are the same bits, for L2 and inner product."""
    xb, xq = embeddings[:4000], embeddings[9000:9040]
    for metric in (pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT):
        quantizer = pqfast.IndexFlat(384, metric)
        index = pqfast.IndexIVFPQ(quantizer, 384, 64, 16, 8, metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            index.train(xb)
        index.add(xb)
        for nprobe in (1, 2, 64):
            index.nprobe = nprobe
            out = []
            for threads in (1, 2):
                pqfast.omp_set_num_threads(threads)
                try:
                    out.append([index.search(xq[i : i + 1], 10) for i in range(40)])
                finally:
                    pqfast.omp_set_num_threads(2)
            for (D1, I1), (D2, I2) in zip(*out):
                np.testing.assert_array_equal(I1, I2)
                np.testing.assert_array_equal(D1, D2)
