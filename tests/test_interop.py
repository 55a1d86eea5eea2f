"""from_faiss / to_faiss carry trained state and contents: searches agree."""

import numpy as np
import pytest
from conftest import same_ids_ties_aside

import pqfast

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module", autouse=True)
def _faiss_single_thread():
    """faiss's OpenMP threads spin on a busy machine; these tests check contents."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture(scope="module")
def data(embeddings):
    return embeddings[:3000], embeddings[5000:5030]


def faiss_indexes(xb):
    flat = faiss.IndexFlatIP(384)
    flat.add(xb)
    pq = faiss.IndexPQ(384, 16, 8)
    pq.train(xb)
    pq.add(xb)
    quantizer = faiss.IndexFlatL2(384)
    ivf = faiss.IndexIVFPQ(quantizer, 384, 16, 16, 8)
    ivf.train(xb)
    ivf.add_with_ids(xb, np.arange(len(xb)) * 2 + 7)
    ivf.nprobe = 4
    ivf.referenced_objects = [quantizer]
    return [flat, pq, ivf]


def test_from_faiss_searches_agree(data):
    xb, xq = data
    for theirs in faiss_indexes(xb):
        ours = pqfast.from_faiss(theirs)
        assert ours.ntotal == theirs.ntotal
        D1, I1 = ours.search(xq, 10)
        D2, I2 = theirs.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_to_faiss_searches_agree(data):
    xb, xq = data
    for theirs in faiss_indexes(xb):
        ours = pqfast.from_faiss(theirs)
        back = pqfast.to_faiss(ours)
        assert back.ntotal == ours.ntotal
        if hasattr(ours, "nprobe"):
            assert back.nprobe == ours.nprobe
        D1, I1 = ours.search(xq, 10)
        D2, I2 = back.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_unsupported_types():
    with pytest.raises(TypeError, match="does not support"):
        pqfast.from_faiss(faiss.IndexHNSWFlat(8, 4))
    with pytest.raises(TypeError, match="does not support"):
        pqfast.to_faiss(object())


def overlap(I1, I2):
    return np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(I1, I2)])


@pytest.fixture(scope="module", params=[faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT])
def more_indexes(request, data):
    """(faiss index, faiss index whose exact-ADC search it should match)."""
    xb, _ = data
    metric = request.param
    pq = faiss.IndexPQ(384, 16, 4, metric)
    pq.train(xb)
    pq.add(xb[:1001])  # a partial last block
    ivfpq = faiss.IndexIVFPQ(faiss.IndexFlat(384, metric), 384, 16, 16, 4, metric)
    ivfpq.train(xb)
    ivfpq.add_with_ids(xb, np.arange(len(xb)) * 3 + 1)
    ivfpq.nprobe = 4
    ivfpq_fs = faiss.IndexIVFPQFastScan(ivfpq, 32)
    ivfpq_fs.nprobe = 4
    ivfflat = faiss.IndexIVFFlat(faiss.IndexFlat(384, metric), 384, 16, metric)
    ivfflat.train(xb)
    ivfflat.add(xb)
    ivfflat.nprobe = 3
    rotation = faiss.OPQMatrix(384, 16, 64)
    rotation.niter, rotation.niter_pq_0, rotation.niter_pq = 4, 4, 2
    rotation.train(xb[:1000])  # IndexPreTransform.train keeps a trained rotation
    inner = faiss.IndexIVFPQ(faiss.IndexFlat(64, metric), 64, 16, 16, 8, metric)
    inner.nprobe = 4
    opq = faiss.IndexPreTransform(rotation, inner)
    opq.train(xb)
    opq.add(xb)
    idmap = faiss.IndexIDMap(faiss.IndexPQ(384, 16, 6, metric))
    idmap.train(xb)
    idmap.add_with_ids(xb, np.arange(len(xb)) * 5 + 2)
    idmap_flat = faiss.IndexIDMap2(faiss.IndexFlat(384, metric))
    idmap_flat.add_with_ids(xb, np.arange(len(xb))[::-1].copy())
    return [
        (faiss.IndexPQFastScan(pq, 32), pq),
        (ivfpq_fs, ivfpq),
        (ivfflat, ivfflat),
        (opq, opq),
        (idmap, idmap),
        (idmap_flat, idmap_flat),
    ]


def test_from_faiss_more_types(data, more_indexes):
    """Fast scan: faiss's results come from 8-bit tables, pqfast's are exact ADC,
    so pqfast's copy is compared with the exact faiss index it was made from."""
    _, xq = data
    for theirs, reference in more_indexes:
        ours = pqfast.from_faiss(theirs)
        assert ours.ntotal == theirs.ntotal and ours.metric_type == theirs.metric_type
        D1, I1 = ours.search(xq, 10)
        D2, I2 = reference.search(xq, 10)
        same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_to_faiss_more_types(data, more_indexes):
    _, xq = data
    for theirs, _ in more_indexes:
        ours = pqfast.from_faiss(theirs)
        back = pqfast.to_faiss(ours)
        expected = type(faiss.downcast_index(theirs)).__name__.replace(
            "IDMap2", "IDMap"
        )
        assert type(back).__name__ == expected
        assert back.ntotal == ours.ntotal
        D1, I1 = ours.search(xq, 10)
        D2, I2 = back.search(xq, 10)
        if isinstance(back, (faiss.IndexPQFastScan, faiss.IndexIVFPQFastScan)):
            # quantized tables on faiss's side: the same neighbours, mostly
            assert overlap(I1, I2) > 0.9
            again = pqfast.from_faiss(back)  # codes and ids survive both ways
            np.testing.assert_array_equal(again.search(xq, 10)[1], I1)
        else:
            same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-3)


def test_fast_scan_codes_identical(data, more_indexes):
    theirs = more_indexes[0][0]
    ours = pqfast.from_faiss(theirs)
    np.testing.assert_array_equal(
        ours.reconstruct_n(0, ours.ntotal), theirs.reconstruct_n(0, theirs.ntotal)
    )
    back = pqfast.to_faiss(ours)
    np.testing.assert_array_equal(
        back.reconstruct_n(0, back.ntotal), theirs.reconstruct_n(0, theirs.ntotal)
    )


def test_unsupported_options(data):
    xb, _ = data
    pca = faiss.index_factory(384, "PCA64,Flat")
    pca.train(xb)
    with pytest.raises(ValueError, match="PCAMatrix is not supported"):
        pqfast.from_faiss(pca)
    hnsw_coarse = faiss.IndexIVFFlat(faiss.IndexHNSWFlat(384, 4), 384, 4)
    with pytest.raises(ValueError, match="flat coarse quantizers"):
        pqfast.from_faiss(hnsw_coarse)


@pytest.mark.parametrize("metric", [faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT])
def test_ivfpq_not_by_residual_both_ways(data, metric):
    xb, xq = data
    theirs = faiss.IndexIVFPQ(faiss.IndexFlat(384, metric), 384, 16, 16, 8, metric)
    theirs.by_residual = False
    theirs.train(xb)
    theirs.add(xb)
    theirs.nprobe = 4
    ours = pqfast.from_faiss(theirs)
    assert not ours.by_residual
    same_ids_ties_aside(*ours.search(xq, 10), *theirs.search(xq, 10), 1e-5, 1e-4)
    back = pqfast.to_faiss(ours)
    assert not back.by_residual
    same_ids_ties_aside(*back.search(xq, 10), *theirs.search(xq, 10), 1e-5, 1e-4)
    restored = pqfast.deserialize_index(pqfast.serialize_index(ours))
    assert not restored.by_residual
    np.testing.assert_array_equal(restored.search(xq, 10)[1], ours.search(xq, 10)[1])
