"""index_factory builds the index a faiss factory string names."""

import numpy as np
import pytest

import pqfast

IP = pqfast.METRIC_INNER_PRODUCT


@pytest.mark.parametrize(
    "description,cls,attrs",
    [
        ("Flat", pqfast.IndexFlat, {}),
        ("PQ16", pqfast.IndexPQ, {"M": 16, "nbits": 8}),
        ("PQ16x4", pqfast.IndexPQ, {"M": 16, "nbits": 4}),
        ("PQ16x4fs", pqfast.IndexPQFastScan, {"M": 16, "nbits": 4}),
        ("IVF1024,PQ16", pqfast.IndexIVFPQ, {"M": 16, "nbits": 8, "nlist": 1024}),
        ("IVF128,Flat", pqfast.IndexIVFFlat, {"nlist": 128}),
        ("IVF64,PQ8x4", pqfast.IndexIVFPQ, {"M": 8, "nbits": 4, "nlist": 64}),
        ("IVF256,PQ32x4fs", pqfast.IndexIVFPQFastScan, {"M": 32, "nlist": 256}),
    ],
)
@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, IP])
def test_builds_the_named_index(description, cls, attrs, metric):
    index = pqfast.index_factory(64, description, metric)
    assert type(index) is cls and index.d == 64 and index.metric_type == metric
    for name, value in attrs.items():
        owner = index if name == "nlist" else index.pq
        assert getattr(owner, name) == value
    if hasattr(index, "quantizer"):
        assert index.quantizer.metric_type == metric


@pytest.mark.parametrize(
    "description,match",
    [
        ("IVF1024(IVF32,Flat,PQ16", "parentheses"),
        ("IVF1024(OPQ8,IVF32,Flat),PQ16", "transform"),
        ("IVF1024(HNSW32),PQ16", "not supported"),
        ("PQ16x8fs", "4 bits"),
        ("PQ", "cannot read"),
        ("HNSW32", "not supported"),
        ("PQ12", "divisible"),
    ],
)
def test_unsupported_strings_explain(description, match):
    with pytest.raises(ValueError, match=match):
        pqfast.index_factory(64, description)


@pytest.mark.parametrize(
    "description,d_out", [("OPQ16,IVF64,PQ16", 64), ("OPQ8_32,PQ8", 32)]
)
def test_opq_strings_build_a_pre_transform(description, d_out):
    index = pqfast.index_factory(64, description)
    assert isinstance(index, pqfast.IndexPreTransform)
    assert index.d == 64 and index.transform.d_out == d_out and index.index.d == d_out


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, IP])
def test_nested_coarse_quantizer(real_split, metric):
    """ "IVF64(IVF8,Flat),PQ16": the 64 coarse centroids live in an IVFFlat of
    8 lists.  Probing all 8 makes the coarse search exact, so the index then
    returns what an IndexIVFPQ with a flat quantizer over the same centroids
    and codebooks returns."""
    xb, xq = real_split
    xb = xb[:3000]
    nested = pqfast.index_factory(384, "IVF64(IVF8,Flat),PQ16", metric)
    assert type(nested.quantizer) is pqfast.IndexIVFFlat
    assert nested.quantizer.nlist == 8 and nested.quantizer.nprobe == 1
    nested.train(xb)
    assert nested.is_trained and nested.quantizer.ntotal == 64
    nested.quantizer.nprobe = 8  # also governs the assignment in add
    nested.add(xb)
    flat_q = pqfast.IndexFlat(384, metric)
    flat_q.add(nested.quantizer.reconstruct_n(0, 64))
    plain = pqfast.IndexIVFPQ(flat_q, 384, 64, 16, 8, metric)
    plain.pq.centroids = nested.pq.centroids
    plain.add(xb)
    nested.nprobe = plain.nprobe = 6
    D1, I1 = nested.search(xq[:50], 10)
    D2, I2 = plain.search(xq[:50], 10)
    np.testing.assert_allclose(D1, D2, rtol=1e-4, atol=1e-5)
    assert (I1 == I2).mean() > 0.97  # ties aside
    # with one inner list probed the coarse search is approximate, still sane
    nested.quantizer.nprobe = 1
    D, I = nested.search(xq[:50], 10)
    assert (I >= 0).all()
    assert np.isin(I, I2).mean() > 0.5
    lims, _, _ = nested.range_search(xq[:5], float(np.median(D[:5, -1])))
    assert lims[-1] > 0
