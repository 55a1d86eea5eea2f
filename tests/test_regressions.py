"""Regression tests for problems found in review; each names what it guards."""

import numpy as np
import pytest
from conftest import assert_distances_match_reconstruction, gaussian_mixture

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


def test_interrupted_add_leaves_lists_consistent(xb, monkeypatch):
    index = trained_ivf(xb)
    index.add(xb[:1000])
    before = index.search(xb[:10], 10)
    calls = {"n": 0}
    original = RowBuffer.append

    def flaky_append(self, rows):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        original(self, rows)

    monkeypatch.setattr(RowBuffer, "append", flaky_append)
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
