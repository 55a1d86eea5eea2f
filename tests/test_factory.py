"""index_factory builds the index a faiss factory string names."""

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
        ("IVF1024(IVF32,Flat),PQ16", "not supported"),
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
