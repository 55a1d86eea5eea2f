"""Behaviour of the public classes, checked against numpy references."""

import resource
import time
import warnings

import numpy as np
import pytest
from conftest import (
    assert_distances_match_reconstruction,
    gaussian_mixture,
    recall_at,
    same_ids_ties_aside,
)

import pqfast
from pqfast._kernels import _openmp

FLT_MAX = np.finfo(np.float32).max
METRICS = [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT]


def make_ivfpq(xtrain, nlist=16, M=4, nbits=8, metric=pqfast.METRIC_L2):
    d = xtrain.shape[1]
    q = pqfast.IndexFlatL2(d) if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP(d)
    index = pqfast.IndexIVFPQ(q, d, nlist, M, nbits, metric)
    index.train(xtrain)
    return index


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    return gaussian_mixture(rng, 3000, 32), gaussian_mixture(rng, 40, 32)


@pytest.fixture(scope="module")
def trained_pq(data):
    index = pqfast.IndexPQ(32, 8, 8)
    index.train(data[0])
    return index


@pytest.fixture(scope="module")
def trained_ivf(data):
    return make_ivfpq(data[0])


# ----------------------------------------------------------------- codes
@pytest.mark.parametrize("nbits", range(1, 17))
def test_bit_packing_round_trip_and_layout(rng, nbits):
    M = 5
    pq = pqfast.ProductQuantizer(10, M, nbits)
    idx = rng.integers(0, 1 << nbits, (100, M)).astype(np.uint16)
    codes = np.empty((100, pq.code_size), np.uint8)
    from pqfast._kernels import _pq

    _pq.pack_codes(idx, nbits, codes)
    # reference: little-endian bit stream, sub-code m at bits [m*nbits, (m+1)*nbits)
    bits = ((idx[:, :, None] >> np.arange(nbits)) & 1).reshape(100, -1)
    bits = np.pad(bits, ((0, 0), (0, 8 * pq.code_size - bits.shape[1])))
    expected = np.packbits(bits.astype(np.uint8), axis=1, bitorder="little")
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(pq.unpack(codes), idx)


def test_encode_is_nearest_centroid(rng):
    pq = pqfast.ProductQuantizer(24, 3, 6)
    pq.centroids = rng.standard_normal((3, 64, 8)).astype(np.float32)
    x = rng.standard_normal((300, 24)).astype(np.float32)
    idx = pq.unpack(pq.compute_codes(x))
    for m in range(3):
        dist = ((x[:, None, m * 8 : (m + 1) * 8] - pq.centroids[m][None]) ** 2).sum(-1)
        np.testing.assert_array_equal(idx[:, m], dist.argmin(1))


@pytest.mark.parametrize("metric", METRICS)
def test_index_pq_distances_match_numpy_adc(data, metric):
    xb, xq = data
    index = pqfast.IndexPQ(32, 8, 8, metric)
    index.train(xb)
    index.add(xb)
    D, I = index.search(xq, 5)
    recon = index.reconstruct_n(0, index.ntotal)
    if metric == pqfast.METRIC_L2:
        ref = ((xq[:, None, :] - recon[None]) ** 2).sum(-1)
        order = np.argsort(ref, axis=1, kind="stable")[:, :5]
    else:
        ref = xq @ recon.T
        order = np.argsort(-ref, axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(
        D, np.take_along_axis(ref, order, 1), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(np.take_along_axis(ref, I, 1), D, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("metric", METRICS)
def test_ivfpq_distances_match_reconstruction(data, metric):
    xb, xq = data
    index = make_ivfpq(xb, metric=metric)
    index.add(xb)
    index.nprobe = 4
    assert_distances_match_reconstruction(index, xq)


def test_recall_against_exact_search(data):
    xb, xq = data
    exact = pqfast.IndexFlatL2(32)
    exact.add(xb)
    _, I_true = exact.search(xq, 10)
    index = make_ivfpq(xb, M=8)
    index.add(xb)
    index.nprobe = 16
    assert recall_at(index.search(xq, 10)[1], I_true, 10) > 0.5
    index.nprobe = 1
    assert recall_at(index.search(xq, 10)[1], I_true, 10) > 0.2


# ------------------------------------------------- shapes, dtypes, padding
@pytest.mark.parametrize("metric", METRICS)
def test_padding_when_fewer_than_k(data, metric):
    xb, xq = data
    for index in (
        pqfast.IndexFlat(32, metric),
        pqfast.IndexPQ(32, 8, 8, metric),
        make_ivfpq(xb, metric=metric),
    ):
        index.train(xb)
        index.add(xb[:3])
        index.nprobe = 16  # IVF: scan every list (ignored by the others)
        D, I = index.search(xq, 7)
        assert D.dtype == np.float32 and I.dtype == np.int64
        assert D.shape == I.shape == (len(xq), 7)
        pad = FLT_MAX if metric == pqfast.METRIC_L2 else -FLT_MAX
        assert np.all(I[:, 3:] == -1) and np.all(D[:, 3:] == pad)
        assert np.all(I[:, :3] >= 0)


def test_empty_index_and_empty_query(trained_pq):
    index = pqfast.IndexPQ(32, 8, 8)
    index.pq.centroids = trained_pq.pq.centroids
    D, I = index.search(np.zeros((2, 32)), 3)
    assert np.all(I == -1) and np.all(D == FLT_MAX)
    D, I = index.search(np.zeros((0, 32)), 3)
    assert D.shape == I.shape == (0, 3)


def test_results_sorted(trained_ivf, data):
    xb, xq = data
    trained_ivf.reset()
    trained_ivf.add(xb)
    trained_ivf.nprobe = 8
    D, _ = trained_ivf.search(xq, 20)
    assert np.all(np.diff(D, axis=1) >= 0)
    trained_ivf.reset()


def test_input_conversion(trained_pq, data):
    xb, xq = data
    index = pqfast.IndexPQ(32, 8, 8)
    index.pq.centroids = trained_pq.pq.centroids
    index.add(xb.astype(np.float64))
    D1, I1 = index.search(xq, 5)
    wide = np.zeros((len(xq), 64), np.float64)
    wide[:, ::2] = xq
    D2, I2 = index.search(wide[:, ::2], 5)  # non-contiguous float64
    D3, I3 = index.search(xq[0].tolist(), 5)  # 1-D list: one vector
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(I1[:1], I3)
    assert D3.shape == (1, 5)


# ---------------------------------------------------- adding and removing
def test_several_adds_equal_one_add(data):
    xb, xq = data
    one, many = make_ivfpq(xb), make_ivfpq(xb)
    one.add(xb)
    for part in np.array_split(xb, 7):
        many.add(part)
    one.nprobe = many.nprobe = 4
    for a, b in zip(one.search(xq, 10), many.search(xq, 10)):
        np.testing.assert_array_equal(a, b)
    pq_one, pq_many = pqfast.IndexPQ(32, 8, 8), pqfast.IndexPQ(32, 8, 8)
    pq_one.train(xb)
    pq_many.pq.centroids = pq_one.pq.centroids
    pq_one.add(xb)
    for part in np.array_split(xb, 5):
        pq_many.add(part)
    np.testing.assert_array_equal(pq_one.codes, pq_many.codes)


def test_lists_are_contiguous_arrays(trained_ivf, data):
    trained_ivf.reset()
    trained_ivf.add(data[0])
    inv = trained_ivf.invlists
    sizes = [inv.list_size(i) for i in range(trained_ivf.nlist)]
    assert sum(sizes) == trained_ivf.ntotal == len(data[0])
    assert sizes == [trained_ivf.get_list_size(i) for i in range(trained_ivf.nlist)]
    for i in range(trained_ivf.nlist):
        codes, ids = inv.get_codes(i), inv.get_ids(i)
        assert codes.dtype == np.uint8 and codes.shape == (
            sizes[i],
            trained_ivf.code_size,
        )
        assert ids.dtype == np.int64 and codes.flags.c_contiguous
    trained_ivf.reset()
    assert trained_ivf.ntotal == 0


def test_add_with_ids_and_remove_ids(trained_ivf, data):
    xb, xq = data
    index = trained_ivf
    index.reset()
    ids = np.arange(len(xb)) * 10 + 5
    index.add_with_ids(xb, ids)
    index.nprobe = index.nlist
    _, I = index.search(xb[:20], 1)
    assert set(I.ravel()) <= set(ids)
    removed = index.remove_ids(ids[:100])
    assert removed == 100 and index.ntotal == len(xb) - 100
    assert index.remove_ids(ids[:100]) == 0
    _, I = index.search(xq, 50)
    assert not set(I.ravel()) & set(ids[:100])
    # sequential ids continue past the largest id ever stored: no collision
    index.add(xb[:5])
    _, I = index.search(xb[:5], 1)
    assert np.all(I.ravel() > ids.max())
    index.reset()


def test_sequential_ids_after_remove_never_collide(trained_ivf, data):
    xb, _ = data
    index = trained_ivf
    index.reset()
    index.add(xb[:100])
    index.remove_ids(np.arange(10))
    index.add(xb[100:110])
    all_ids = np.concatenate([index.invlists.get_ids(i) for i in range(index.nlist)])
    assert len(np.unique(all_ids)) == index.ntotal == 100
    index.reset()


def test_reconstruct(data, trained_pq):
    xb, _ = data
    ivf = make_ivfpq(xb)
    ids = np.arange(len(xb)) + 1000
    ivf.add_with_ids(xb, ids)
    ivf.make_direct_map()
    err = np.mean(
        [np.sum((ivf.reconstruct(int(i)) - xb[i - 1000]) ** 2) for i in ids[:50]]
    )
    assert err < 0.3 * np.mean(np.sum(xb**2, 1))
    with pytest.raises(KeyError):
        ivf.reconstruct(5)
    ivf.remove_ids(ids[:1])
    with pytest.raises(KeyError):
        ivf.reconstruct(int(ids[0]))
    ivf.reconstruct(int(ids[1]))

    pq = pqfast.IndexPQ(32, 8, 8)
    pq.pq.centroids = trained_pq.pq.centroids
    pq.add(xb[:10])
    np.testing.assert_array_equal(
        pq.reconstruct(3), pq.sa_decode(pq.sa_encode(xb[3]))[0]
    )
    flat = pqfast.IndexFlatL2(32)
    flat.add(xb[:10])
    np.testing.assert_array_equal(flat.reconstruct(3), xb[3])


# -------------------------------------------------------------- threads
def test_results_identical_with_1_and_2_threads(data, embeddings):
    xb, xq = data
    ivf = make_ivfpq(xb, M=8)
    ivf.add(xb)
    ivf.nprobe = 8
    pq = pqfast.IndexPQ(32, 8, 8)
    pq.train(xb)
    pq.add(xb)
    flat = pqfast.IndexFlatIP(32)
    flat.add(xb)
    results = {}
    for n in (1, 2):
        pqfast.omp_set_num_threads(n)
        km = pqfast.Kmeans(384, 20, niter=5, seed=3)
        km.train(embeddings[:3000])
        results[n] = [
            *ivf.search(xq, 10),
            *ivf.search(xq[:1], 10),
            *pq.search(xq, 10),
            *pq.search(xq[:1], 10),
            *flat.search(xq[:1], 10),
            km.centroids,
            make_ivfpq(xb, M=8).pq.centroids,
        ]
    for a, b in zip(results[1], results[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build (PQFAST_NO_OPENMP)")
def test_thread_count_follows_omp_set_num_threads():
    pqfast.omp_set_num_threads(1)
    assert pqfast.omp_get_max_threads() == 1
    pqfast.omp_set_num_threads(2)
    assert pqfast.omp_get_max_threads() == 2


def test_idle_threads_do_not_spin(data):
    xb, xq = data
    index = make_ivfpq(xb)
    index.add(xb)
    pqfast.omp_set_num_threads(2)
    index.search(np.repeat(xq, 20, axis=0), 10)
    time.sleep(0.05)  # libgomp may spin briefly before it sleeps
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    busy = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert busy < 0.1, f"{busy:.2f} s of CPU used while idle"


# --------------------------------------------------------------- k-means
def test_kmeans(rng):
    centers = rng.standard_normal((8, 16)).astype(np.float32) * 10
    x = (centers[rng.integers(0, 8, 4000)] + rng.standard_normal((4000, 16))).astype(
        np.float32
    )
    km = pqfast.Kmeans(16, 8, niter=20, seed=5)
    obj = km.train(x)
    assert km.centroids.shape == (8, 16) and km.centroids.dtype == np.float32
    assert km.obj.shape == (20,) and obj == km.obj[-1]
    assert np.all(np.diff(km.obj) <= 1e-3 * km.obj[0])
    D, I = km.assign(x[:10])
    assert D.shape == I.shape == (10,) and I.dtype == np.int64
    # centroids land near the true centers
    dist = ((km.centroids[:, None] - centers[None]) ** 2).sum(-1)
    assert np.all(dist.min(0) < 1.0)
    # same seed => same result; spherical gives unit centroids
    km2 = pqfast.Kmeans(16, 8, niter=20, seed=5)
    km2.train(x)
    np.testing.assert_array_equal(km.centroids, km2.centroids)
    sph = pqfast.Kmeans(16, 8, niter=5, spherical=True)
    sph.train(x)
    np.testing.assert_allclose(np.linalg.norm(sph.centroids, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("simd", [0, 1, 2])
def test_elkan_assignment_is_the_exhaustive_one(rng, embeddings, simd):
    # Elkan's bounds skip distances; the labels must still be the float64
    # argmin (the first on exact ties) after every move of the centroids.
    # Integer points and duplicate centroids make exact ties and distances 0.
    from pqfast.kmeans import _Elkan

    grid = rng.integers(0, 3, (1500, 16)).astype(np.float32)
    real = embeddings[:2000]
    cases = (
        (grid, 64),
        (np.ascontiguousarray(real[:, 24:48]), 128),
        (np.ascontiguousarray(real[:, :13]), 80),  # d % 4, k % 64: the tails
        (np.ascontiguousarray(real[:1500, 40:50]), 1024),  # every bit of the mask
    )
    for x, k in cases:
        cents = x[rng.choice(len(x), k, replace=False)].copy()
        cents[7] = cents[3]  # a duplicate: the lower index wins the ties
        state = _Elkan(x, k)
        for step in range(8):
            labels, mins = state.assign(cents, simd)
            exact = ((x[:, None, :].astype(np.float64) - cents[None]) ** 2).sum(-1)
            np.testing.assert_array_equal(labels, exact.argmin(1))
            np.testing.assert_allclose(mins, exact.min(1), rtol=1e-5, atol=1e-12)
            # Lloyd's update, and some centroids moved further
            for j in range(k):
                if (labels == j).any():
                    cents[j] = x[labels == j].mean(0)
            moved = rng.choice(k, k // 8, replace=False)
            cents[moved] += rng.standard_normal((len(moved), x.shape[1])).astype(
                np.float32
            ) * (0.3 if step % 2 else 0.02)
            cents[7] = cents[3]


def test_pq_training_with_elkan_bounds_is_unchanged(embeddings, monkeypatch):
    # the same codebooks with and without the bounds (8-bit, d/M = 24 and 48)
    from pqfast.kmeans import _Elkan

    x = embeddings[:3000]
    books = {}
    for min_k in (_Elkan.MIN_K, 10**9):
        monkeypatch.setattr(_Elkan, "MIN_K", min_k)
        for M in (8, 16):
            pq = pqfast.ProductQuantizer(384, M, 8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pq.train(x)
            books.setdefault(M, []).append(pq.centroids.copy())
    for fast, plain in books.values():
        np.testing.assert_array_equal(fast, plain)


def test_kmeans_with_elkan_bounds_is_unchanged(embeddings, monkeypatch):
    # Kmeans on short vectors, weighted, with clusters emptied and split
    from pqfast.kmeans import _Elkan

    x = np.ascontiguousarray(embeddings[:3000, 100:124])
    x[:600] = x[0]  # many equal points: empty clusters to split
    w = np.linspace(0.5, 2.0, len(x)).astype(np.float32)
    out = []
    for min_k in (_Elkan.MIN_K, 10**9):
        monkeypatch.setattr(_Elkan, "MIN_K", min_k)
        km = pqfast.Kmeans(24, 96, niter=12, seed=7)
        km.train(x, weights=w)
        out.append(km.centroids.copy())
    np.testing.assert_array_equal(out[0], out[1])


def test_kmeans_splits_empty_clusters_and_subsamples(rng):
    # 3 distinct points for 5 clusters: some start (and stay) empty unless split
    x = np.repeat(rng.standard_normal((3, 4)).astype(np.float32), 50, axis=0)
    km = pqfast.Kmeans(4, 5, niter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        km.train(x)
    assert np.isfinite(km.centroids).all()
    assert len({tuple(c) for c in km.centroids}) == 5
    with pytest.warns(UserWarning, match="sampling"):
        pqfast.Kmeans(4, 2, niter=1, max_points_per_centroid=10).train(
            rng.standard_normal((100, 4))
        )


def test_kmeans_nredo_keeps_best(rng):
    x = gaussian_mixture(rng, 2000, 8, n_clusters=10)
    one = pqfast.Kmeans(8, 10, niter=5, nredo=1, seed=2)
    three = pqfast.Kmeans(8, 10, niter=5, nredo=3, seed=2)
    assert three.train(x) <= one.train(x) + 1e-6


def test_faiss_style_script_runs(embeddings):
    """The README's script, unchanged but for the import."""
    import pqfast as faiss

    xb, xq = embeddings[:5000], embeddings[:10]
    d, nlist, M, k = xb.shape[1], 32, 16, 5
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, M, 8)
    index.train(xb)
    index.add(xb)
    index.nprobe = 16
    D, I = index.search(xq, k)
    assert I.shape == (10, k)
    assert np.mean(I[:, 0] == np.arange(10)) >= 0.8  # queries are in the base


@pytest.mark.parametrize(
    "make",
    [
        lambda d: pqfast.IndexFlatL2(d),
        lambda d: pqfast.IndexFlatIP(d),
        lambda d: pqfast.IndexPQ(d, 8, 8),
        lambda d: pqfast.IndexIVFPQ(pqfast.IndexFlatL2(d), d, 8, 8, 8),
        lambda d: pqfast.IndexIVFFlat(pqfast.IndexFlatL2(d), d, 8),
    ],
)
def test_result_order_same_for_every_k(make):
    """Rows are sorted by (distance, id) whatever k: from k = 48 to 256 the
    final sort is a radix sort, outside it the heap's own; the first k of a
    larger search are the k results, ties (duplicated vectors) by id."""
    rng = np.random.default_rng(11)
    d = 16
    x = rng.standard_normal((3000, d)).astype(np.float32)
    x[1500:2500] = x[:1000]  # equal distances
    index = make(d)
    index.train(x)
    index.add(x)
    if hasattr(index, "nprobe"):
        index.nprobe = 3
    xq = x[:40] + 0.05
    D_all, I_all = index.search(xq, 300)
    for k in (1, 47, 48, 100, 256, 257):
        D, I = index.search(xq, k)
        np.testing.assert_array_equal(I, I_all[:, :k])
        np.testing.assert_array_equal(D, D_all[:, :k])
        # one query: lists or segments merged
        D1, I1 = index.search(xq[5:6], k)
        if isinstance(index, pqfast.IndexFlat):
            # distances by another path (SIMD dots, not the batch's GEMM, whose
            # rounding may even differ between two copies of one vector)
            same_ids_ties_aside(D1, I1, D_all[5:6, :k], I_all[5:6, :k])
        else:
            np.testing.assert_array_equal(I1, I_all[5:6, :k])
            np.testing.assert_allclose(D1, D_all[5:6, :k], rtol=1e-4, atol=1e-5)
    found = I_all >= 0
    step = np.diff(D_all, axis=1)
    if index.metric_type == pqfast.METRIC_INNER_PRODUCT:
        step = -step
    assert np.all(step[found[:, 1:]] >= 0)
    tie = (np.diff(D_all, axis=1) == 0) & found[:, 1:]
    assert tie.any() and np.all(np.diff(I_all, axis=1)[tie] > 0)


@pytest.mark.parametrize("k", [16, 100, 256, 300])
def test_many_equal_distances_ordered_by_id(k):
    """A zero query scores every vector 0 by inner product: the results are
    ids 0, 1, 2, ... whatever the final sort (long runs of ties included);
    with a selector leaving fewer than k, the rest is padding."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1000, 8)).astype(np.float32)
    index = pqfast.IndexFlatIP(8)
    index.add(x)
    D, I = index.search(np.zeros((3, 8), np.float32), k)
    assert np.all(D == 0)
    np.testing.assert_array_equal(I, np.broadcast_to(np.arange(k), (3, k)))
    params = pqfast.SearchParameters(sel=pqfast.IDSelectorRange(500, 560))
    D, I = index.search(x[:4], k, params=params)
    D300, I300 = index.search(x[:4], 300, params=params)
    n = min(k, 60)
    np.testing.assert_array_equal(I[:, :n], I300[:, :n])
    np.testing.assert_array_equal(D[:, :n], D300[:, :n])
    assert np.all(I[:, n:] == -1) and np.all(D[:, n:] == -np.finfo(np.float32).max)
