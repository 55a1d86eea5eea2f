"""pqfast against faiss-cpu: same trained state => same codes and neighbours;
own training => comparable recall on real embeddings."""

import numpy as np
import pytest
from conftest import gaussian_mixture, recall_at, same_ids_ties_aside

import pqfast

faiss = pytest.importorskip("faiss")

NBITS = [4, 8, 12, 16]


def random_codebooks(rng, M, ksub, dsub):
    return rng.standard_normal((M, ksub, dsub)).astype(np.float32)


def exact_data(rng, pq, n):
    """Vectors that are exact reconstructions: their code is unambiguous."""
    idx = rng.integers(0, pq.ksub, (n, pq.M))
    return pq.centroids[np.arange(pq.M), idx].reshape(n, pq.d).copy()


def faiss_pq(centroids, d, M, nbits):
    fpq = faiss.ProductQuantizer(d, M, nbits)
    faiss.copy_array_to_vector(centroids.ravel(), fpq.centroids)
    return fpq


def pq_pair(rng, d, M, nbits):
    pq = pqfast.ProductQuantizer(d, M, nbits)
    pq.centroids = random_codebooks(rng, M, 1 << nbits, d // M)
    return pq, faiss_pq(pq.centroids, d, M, nbits)


@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("d,M", [(32, 4), (48, 8)])
def test_codes_byte_identical(rng, nbits, d, M):
    pq, fpq = pq_pair(rng, d, M, nbits)
    x = exact_data(rng, pq, 500)
    codes = pq.compute_codes(x)
    assert codes.dtype == np.uint8 and codes.shape == (500, fpq.code_size)
    np.testing.assert_array_equal(codes, fpq.compute_codes(x))
    np.testing.assert_array_equal(pq.decode(codes), fpq.decode(codes))


@pytest.mark.parametrize("nbits", NBITS)
def test_codes_match_on_noisy_data(rng, nbits):
    """Off the centroids, codes differ only where two centroids tie in float32."""
    d, M = 32, 4
    pq, fpq = pq_pair(rng, d, M, nbits)
    x = rng.standard_normal((2000, d)).astype(np.float32)
    ours, theirs = pq.unpack(pq.compute_codes(x)), pq.unpack(fpq.compute_codes(x))
    differ = np.argwhere(ours != theirs)
    assert len(differ) <= 2
    for i, m in differ:
        sub = x[i, m * pq.dsub : (m + 1) * pq.dsub]
        d_ours = np.sum((sub - pq.centroids[m, ours[i, m]]) ** 2)
        d_theirs = np.sum((sub - pq.centroids[m, theirs[i, m]]) ** 2)
        assert abs(d_ours - d_theirs) <= 1e-5 * max(d_ours, 1.0)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("nbits", NBITS)
def test_index_pq_same_centroids(rng, nbits, metric):
    d, M = 32, 4
    pq, _ = pq_pair(rng, d, M, nbits)
    xb = gaussian_mixture(rng, 3000, d)
    xq = gaussian_mixture(rng, 50, d)
    ours = pqfast.IndexPQ(d, M, nbits, metric)
    ours.pq.centroids = pq.centroids
    theirs = faiss.IndexPQ(d, M, nbits, metric)
    faiss.copy_array_to_vector(pq.centroids.ravel(), theirs.pq.centroids)
    theirs.is_trained = True
    ours.add(xb)
    theirs.add(xb)
    np.testing.assert_array_equal(
        ours.codes,
        faiss.vector_to_array(theirs.codes).reshape(ours.ntotal, ours.code_size),
    )
    D1, I1 = ours.search(xq, 10)
    D2, I2 = theirs.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("M", [8, 12, 16, 24, 32])
def test_index_pq_one_query_scan_per_m(rng, M, metric):
    """One query at a time runs the scan loop written for its M (8, 16, 32)
    or the generic one; both must give faiss's neighbours and exactly the
    batch search's distances (the same additions in the same order)."""
    d = 96
    pq, _ = pq_pair(rng, d, M, 8)
    xb = gaussian_mixture(rng, 2000, d)
    xq = gaussian_mixture(rng, 20, d)
    ours = pqfast.IndexPQ(d, M, 8, metric)
    ours.pq.centroids = pq.centroids
    theirs = faiss.IndexPQ(d, M, 8, metric)
    faiss.copy_array_to_vector(pq.centroids.ravel(), theirs.pq.centroids)
    theirs.is_trained = True
    ours.add(xb)
    theirs.add(xb)
    D1 = np.empty((len(xq), 10), np.float32)
    I1 = np.empty((len(xq), 10), np.int64)
    for i in range(len(xq)):
        D1[i], I1[i] = (r[0] for r in ours.search(xq[i : i + 1], 10))
    Db, Ib = ours.search(xq, 10)
    np.testing.assert_array_equal(D1, Db)
    np.testing.assert_array_equal(I1, Ib)
    D2, I2 = theirs.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-5, atol=1e-4)


def ivfpq_pair(rng, d, nlist, M, nbits, metric, xtrain, by_residual=True):
    """A faiss IndexIVFPQ trained on xtrain, and a pqfast one given its centroids.

    nbits > 8 uses random codebooks (training 2**16 centroids is not a unit test).
    """
    fq = faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
    theirs = faiss.IndexIVFPQ(fq, d, nlist, M, nbits, metric)
    theirs.by_residual = by_residual
    if nbits <= 8:
        theirs.train(xtrain)
        codebooks = faiss.vector_to_array(theirs.pq.centroids).reshape(
            M, 1 << nbits, -1
        )
    else:
        fq.add(xtrain[rng.choice(len(xtrain), nlist, replace=False)])
        codebooks = 0.3 * random_codebooks(rng, M, 1 << nbits, d // M)
        faiss.copy_array_to_vector(codebooks.ravel(), theirs.pq.centroids)
        theirs.is_trained = True
        theirs.precompute_table()
    q = pqfast.IndexFlatL2(d) if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP(d)
    q.add(fq.reconstruct_n(0, nlist))
    ours = pqfast.IndexIVFPQ(q, d, nlist, M, nbits, metric)
    ours.by_residual = by_residual
    ours.pq.centroids = codebooks
    assert ours.is_trained
    return ours, theirs


def faiss_list(index, list_no):
    inv = index.invlists
    n = inv.list_size(list_no)
    codes = faiss.rev_swig_ptr(inv.get_codes(list_no), n * inv.code_size).copy()
    ids = faiss.rev_swig_ptr(inv.get_ids(list_no), n).copy()
    return codes.reshape(n, inv.code_size), ids


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("nbits", NBITS)
def test_ivfpq_same_centroids(rng, nbits, metric):
    d, nlist, M = 32, 16, 4
    xb = gaussian_mixture(rng, 4000, d)
    xq = gaussian_mixture(rng, 60, d)
    ours, theirs = ivfpq_pair(rng, d, nlist, M, nbits, metric, xb)
    ours.add(xb)
    theirs.add(xb)
    mismatched = 0
    for list_no in range(nlist):
        codes, ids = faiss_list(theirs, list_no)
        np.testing.assert_array_equal(ours.invlists.get_ids(list_no), ids)
        mismatched += int(
            np.sum(np.any(ours.invlists.get_codes(list_no) != codes, axis=1))
        )
    assert mismatched <= 2  # float32 ties between two PQ centroids only
    for nprobe in (1, 4, 16):
        ours.nprobe = theirs.nprobe = nprobe
        D1, I1 = ours.search(xq, 10)
        D2, I2 = theirs.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-5, atol=1e-4)


def direct_kernel(index, x, k, simd):
    """index.search(x, k) through _ivf.ivfpq_search at a given SIMD level."""
    from pqfast._kernels import _ivf
    from pqfast._search import finish, result_arrays
    from pqfast.ivf import DIRECT_SCORING
    from pqfast.selectors import selector_args

    pq = index.pq
    base, probes = index._coarse_terms(x, index.nprobe)
    D, I = result_arrays(len(x), k)
    _ivf.ivfpq_search(
        x, probes, base, pq._cbt, pq._ynorm, index._precomputed_table(),
        index._coarse_centroids(), *index.invlists.kernel_arrays(), index.code_size,
        8, index.metric_type == pqfast.METRIC_L2, 1, selector_args(None), D, I,
        pq._centroids,
        index.by_residual, DIRECT_SCORING, simd,
    )  # fmt: skip
    return finish(D, I, 1, index.metric_type)


@pytest.mark.parametrize("by_residual", [True, False])
@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_ivfpq_direct_scoring_of_small_lists(rng, metric, by_residual, monkeypatch):
    """A query whose probed lists hold few codes is scored from the codebook,
    without tables (ivf.DIRECT_SCORING): the same neighbours as faiss and
    as the table path, with a selector, in batches and one query at a time
    (the fused kernel, 1 and 2 threads)."""
    from pqfast import ivf

    d, nlist, M = 32, 64, 8
    xb = gaussian_mixture(rng, 2000, d)  # about 31 codes a list
    xq = gaussian_mixture(rng, 40, d)
    ours, theirs = ivfpq_pair(rng, d, nlist, M, 8, metric, xb, by_residual)
    ours.add(xb)
    theirs.add(xb)
    sel = pqfast.SearchParameters(sel=pqfast.IDSelectorRange(100, 1500))
    for nprobe in (1, 2, 6):
        ours.nprobe = theirs.nprobe = nprobe
        D1, I1 = ours.search(xq, 10)
        same_ids_ties_aside(D1, I1, *theirs.search(xq, 10), 1e-5, 1e-4)
        Ds, Is = ours.search(xq, 10, params=sel)
        with monkeypatch.context() as m:
            m.setattr(ivf, "DIRECT_SCORING", False)
            same_ids_ties_aside(D1, I1, *ours.search(xq, 10), 1e-5, 1e-4)
            same_ids_ties_aside(Ds, Is, *ours.search(xq, 10, params=sel), 1e-5, 1e-4)
        assert np.all((Is == -1) | ((Is >= 100) & (Is < 1500)))
        portable = direct_kernel(ours, xq, 10, simd=0)
        np.testing.assert_array_equal(portable[1], I1)  # the portable version
        np.testing.assert_allclose(portable[0], D1, rtol=1e-5, atol=1e-5)
        for threads in (1, 2):
            pqfast.omp_set_num_threads(threads)
            for q in range(0, 40, 7):  # (coarse terms: dots here, GEMM in a batch)
                D, I = ours.search(xq[q : q + 1], 10)
                same_ids_ties_aside(D, I, D1[q : q + 1], I1[q : q + 1], 1e-5, 1e-4)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_ivfpq_not_by_residual(rng, metric):
    """by_residual=False: the codes of the vectors themselves, one table per
    query; same codes and neighbours as faiss, and the fast-scan index with
    the same state returns the same results."""
    d, nlist, M = 32, 16, 8
    xb = gaussian_mixture(rng, 4000, d)
    xq = gaussian_mixture(rng, 60, d)
    ours, theirs = ivfpq_pair(rng, d, nlist, M, 8, metric, xb, by_residual=False)
    ours.add(xb)
    theirs.add(xb)
    assert not ours.by_residual
    for list_no in range(nlist):
        codes, ids = faiss_list(theirs, list_no)
        np.testing.assert_array_equal(ours.invlists.get_ids(list_no), ids)
        assert (ours.invlists.get_codes(list_no) != codes).any(axis=1).sum() <= 2
    for nprobe in (1, 4, 16):
        ours.nprobe = theirs.nprobe = nprobe
        same_ids_ties_aside(*ours.search(xq, 10), *theirs.search(xq, 10), 1e-5, 1e-4)
    codes, _ = faiss_list(theirs, 0)
    np.testing.assert_allclose(
        ours.reconstruct(int(ours.invlists.get_ids(0)[0])),
        ours.pq.decode(ours.invlists.get_codes(0)[:1])[0],
    )
    with pytest.raises(ValueError, match="before train"):
        ours.by_residual = True
    # 4-bit codes: IndexIVFPQFastScan gives IndexIVFPQ's exact-ADC results
    quantizer = pqfast.IndexFlat(d, metric)
    quantizer.add(ours.quantizer.reconstruct_n(0, nlist))
    plain = pqfast.IndexIVFPQ(quantizer, d, nlist, M, 4, metric)
    fast = pqfast.IndexIVFPQFastScan(quantizer, d, nlist, M, 4, metric)
    for index in (plain, fast):
        index.by_residual = False
        index.train(xb)  # same seed, same data: the same codebooks
        index.add(xb)
        index.nprobe = 4
    np.testing.assert_array_equal(plain.pq.centroids, fast.pq.centroids)
    D1, I1 = plain.search(xq, 10)
    D2, I2 = fast.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, 1e-5, 1e-4)


@pytest.fixture(scope="module")
def exact_neighbours(real_split):
    xb, xq = real_split
    out = {}
    for metric, flat in (
        (pqfast.METRIC_L2, faiss.IndexFlatL2),
        (pqfast.METRIC_INNER_PRODUCT, faiss.IndexFlatIP),
    ):
        gt = flat(xb.shape[1])
        gt.add(xb)
        out[metric] = gt.search(xq, 10)[1]
    return out


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_recall_real_embeddings_own_training(real_split, exact_neighbours, metric):
    xb, xq = real_split
    d, nlist, M = xb.shape[1], 64, 32
    recalls = {}
    for lib in (pqfast, faiss):
        quantizer = (
            lib.IndexFlatL2(d) if metric == lib.METRIC_L2 else lib.IndexFlatIP(d)
        )
        index = lib.IndexIVFPQ(quantizer, d, nlist, M, 8, metric)
        index.train(xb)
        index.add(xb)
        for nprobe in (1, 8, 32):
            index.nprobe = nprobe
            recalls[lib.__name__, nprobe] = recall_at(
                index.search(xq, 10)[1], exact_neighbours[metric], 10
            )
    for nprobe in (1, 8, 32):
        ours, theirs = recalls["pqfast", nprobe], recalls["faiss", nprobe]
        assert ours >= theirs - 0.02, (nprobe, ours, theirs)
    assert recalls["pqfast", 32] > 0.5


def test_kmeans_close_to_faiss_objective(embeddings):
    x = embeddings[:5000]
    ours = pqfast.Kmeans(x.shape[1], 50, niter=20, seed=1)
    theirs = faiss.Kmeans(x.shape[1], 50, niter=20, seed=1)
    ours.train(x)
    theirs.train(x)
    assert ours.centroids.shape == theirs.centroids.shape == (50, x.shape[1])
    assert ours.obj[-1] <= 1.02 * theirs.obj[-1]


def test_flat_matches_faiss(rng):
    xb = gaussian_mixture(rng, 3000, 24)
    xq = gaussian_mixture(rng, 40, 24)
    for ours, theirs in (
        (pqfast.IndexFlatL2(24), faiss.IndexFlatL2(24)),
        (pqfast.IndexFlatIP(24), faiss.IndexFlatIP(24)),
    ):
        ours.add(xb)
        theirs.add(xb)
        D1, I1 = ours.search(xq, 20)
        D2, I2 = theirs.search(xq, 20)
        assert same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-5, atol=1e-4) > 0.95


def test_codes_match_on_sift_like_integer_data(rng):
    """Large norms next to small distances: the GEMM shortcut alone loses digits."""
    d, M = 128, 16
    x = rng.integers(0, 150, (20000, d)).astype(np.float32)
    pq = pqfast.ProductQuantizer(d, M, 8)
    pq.centroids = (
        x[rng.choice(len(x), 256, replace=False)].reshape(256, M, 8).transpose(1, 0, 2)
    )
    fpq = faiss_pq(pq.centroids, d, M, 8)
    ours, theirs = pq.unpack(pq.compute_codes(x)), pq.unpack(fpq.compute_codes(x))
    # Integer data makes exact ties common; there pqfast keeps the first
    # centroid and faiss's SIMD argmin may keep another. Nothing else differs.
    for i, m in np.argwhere(ours != theirs):
        sub = x[i, m * 8 : (m + 1) * 8].astype(np.float64)
        d_ours = ((sub - pq.centroids[m, ours[i, m]]) ** 2).sum()
        d_theirs = ((sub - pq.centroids[m, theirs[i, m]]) ** 2).sum()
        assert d_ours == d_theirs and ours[i, m] < theirs[i, m]
