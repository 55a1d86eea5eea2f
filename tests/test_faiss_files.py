"""read_index / deserialize_index on files written by faiss itself."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import gaussian_mixture, same_ids_ties_aside

import pqfast

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module", autouse=True)
def _faiss_single_thread():
    """faiss's OpenMP threads spin on a busy machine; these tests check contents."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


D = 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = gaussian_mixture(rng, 2100, D)
    return x[:2000], x[2000:]


def build(kind, metric, xb):
    """A trained, filled faiss index of the given kind."""
    if kind == "flat":
        index = faiss.IndexFlat(D, metric)
    elif kind == "pq":
        index = faiss.IndexPQ(D, 8, 6, metric)
    elif kind == "ivfflat":
        index = faiss.IndexIVFFlat(faiss.IndexFlat(D, metric), D, 16, metric)
    elif kind in ("ivfpq", "ivfpq-no-residual"):
        index = faiss.IndexIVFPQ(faiss.IndexFlat(D, metric), D, 16, 8, 8, metric)
        index.by_residual = kind == "ivfpq"
    elif kind == "ivfpq-sparse":  # fewer than half the lists used: "sprs" sizes
        index = faiss.IndexIVFPQ(faiss.IndexFlat(D, metric), D, 64, 8, 8, metric)
        index.train(xb)
        index.add(xb[:20])
        index.make_direct_map()
        return index
    elif kind == "opq":
        opq = faiss.OPQMatrix(D, 8, 16)
        opq.niter, opq.niter_pq_0 = 3, 3
        inner = faiss.IndexIVFPQ(faiss.IndexFlat(16, metric), 16, 8, 8, 8, metric)
        index = faiss.IndexPreTransform(opq, inner)
    elif kind == "idmap-pq":
        index = faiss.IndexIDMap(faiss.IndexPQ(D, 8, 8, metric))
        index.train(xb)
        index.add_with_ids(xb, np.arange(len(xb)) * 3 + 11)
        return index
    elif kind == "idmap2-flat":
        index = faiss.IndexIDMap2(faiss.IndexFlat(D, metric))
        index.add_with_ids(xb, np.arange(len(xb))[::-1].copy())
        return index
    index.train(xb)
    if kind == "ivfpq":
        index.add_with_ids(xb, np.arange(len(xb)) * 2 + 5)
    else:
        index.add(xb)
    if hasattr(index, "nprobe"):
        index.nprobe = 4
    if kind == "opq":
        faiss.downcast_index(index.index).nprobe = 4
    return index


KINDS = ["flat", "pq", "ivfflat", "ivfpq", "ivfpq-no-residual", "ivfpq-sparse", "opq",
         "idmap-pq", "idmap2-flat"]  # fmt: skip
PQFAST_TYPE = {"flat": "IndexFlat", "pq": "IndexPQ", "ivfflat": "IndexIVFFlat",
               "ivfpq": "IndexIVFPQ", "ivfpq-sparse": "IndexIVFPQ",
               "ivfpq-no-residual": "IndexIVFPQ",
               "opq": "IndexPreTransform", "idmap-pq": "IndexIDMap",
               "idmap2-flat": "IndexIDMap"}  # fmt: skip


def assert_same_search(ours, theirs, xq):
    D1, I1 = ours.search(xq, 10)
    D2, I2 = theirs.search(xq, 10)
    same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("metric", [faiss.METRIC_L2, faiss.METRIC_INNER_PRODUCT])
@pytest.mark.parametrize("kind", KINDS)
def test_read_faiss_file(data, tmp_path, kind, metric):
    xb, xq = data
    theirs = build(kind, metric, xb)
    path = tmp_path / f"{kind}.faissindex"
    faiss.write_index(theirs, str(path))
    for flags in (0, pqfast.IO_FLAG_MMAP):  # the flag is ignored for faiss files
        ours = pqfast.read_index(str(path), flags)
        assert type(ours).__name__.startswith(PQFAST_TYPE[kind])
        assert ours.ntotal == theirs.ntotal and ours.metric_type == metric
        if kind.startswith("ivfpq"):
            assert ours.by_residual == theirs.by_residual
        assert_same_search(ours, theirs, xq)
    ours = pqfast.deserialize_index(faiss.serialize_index(theirs))
    assert_same_search(ours, theirs, xq)
    if hasattr(theirs, "nprobe"):
        assert ours.nprobe == theirs.nprobe


def test_loaded_index_works_like_any_other(data, tmp_path):
    xb, xq = data
    theirs = build("ivfpq", faiss.METRIC_L2, xb)
    ours = pqfast.deserialize_index(faiss.serialize_index(theirs))
    theirs.set_direct_map_type(faiss.DirectMap.Hashtable)
    np.testing.assert_allclose(ours.reconstruct(7), theirs.reconstruct(7), atol=1e-6)
    assert ours.remove_ids(np.arange(100) * 2 + 5) == 100
    ours.add(xq)
    assert ours.ntotal == theirs.ntotal - 100 + len(xq)
    pqfast.write_index(ours, str(tmp_path / "converted.pqf"))
    again = pqfast.read_index(str(tmp_path / "converted.pqf"))
    for a, b in zip(ours.search(xq, 5), again.search(xq, 5)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["ivfpq-sparse", "opq", "idmap-pq", "pq"])
def test_truncated_or_extended_faiss_files(data, tmp_path, kind):
    xb, _ = data
    blob = faiss.serialize_index(build(kind, faiss.METRIC_L2, xb)).tobytes()
    path = tmp_path / "cut.faissindex"
    cuts = sorted({*range(0, 80, 3), *np.linspace(80, len(blob) - 1, 40, dtype=int)})
    for cut in cuts:
        path.write_bytes(blob[:cut])
        with pytest.raises(pqfast.CorruptIndexError):
            pqfast.read_index(str(path))
    with pytest.raises(pqfast.CorruptIndexError, match="bytes after the index"):
        pqfast.deserialize_index(blob + b"\0")


def unsupported_indexes(xb):
    hnsw = faiss.IndexHNSWFlat(D, 8)
    hnsw.add(xb[:100])
    sq = faiss.IndexScalarQuantizer(D, faiss.ScalarQuantizer.QT_8bit)
    sq.train(xb)
    polysemous = faiss.IndexPQ(D, 8, 8)
    polysemous.train(xb)
    polysemous.search_type = faiss.IndexPQ.ST_polysemous
    pca = faiss.index_factory(D, "PCA16,Flat")
    pca.train(xb)
    hnsw_coarse = faiss.IndexIVFFlat(faiss.IndexHNSWFlat(D, 8), D, 4)
    fast_scan = faiss.IndexPQFastScan(D, 8, 4)
    return {
        "IndexHNSWFlat": hnsw,
        "IndexScalarQuantizer": sq,
        "polysemous": polysemous,
        "PCAMatrix": pca,
        "coarse quantizer|IndexHNSWFlat": hnsw_coarse,
        "IndexPQFastScan": fast_scan,
    }


def test_unsupported_faiss_files(data, tmp_path):
    xb, _ = data
    path = tmp_path / "unsupported.faissindex"
    for what, index in unsupported_indexes(xb).items():
        faiss.write_index(index, str(path))
        with pytest.raises(pqfast.UnsupportedIndexError, match=what) as info:
            pqfast.read_index(str(path))
        assert isinstance(info.value, ValueError)
        assert not isinstance(info.value, pqfast.CorruptIndexError)


def test_reading_needs_no_faiss(data, tmp_path):
    """The parser is pqfast's own: it runs with faiss made unimportable."""
    xb, xq = data
    theirs = build("opq", faiss.METRIC_L2, xb)
    faiss.write_index(theirs, str(tmp_path / "opq.faissindex"))
    np.save(tmp_path / "xq.npy", xq)
    np.save(tmp_path / "expected.npy", theirs.search(xq, 10)[1])
    script = f"""
import sys
sys.modules["faiss"] = None  # import faiss now fails
import numpy as np, pqfast
index = pqfast.read_index({str(tmp_path / "opq.faissindex")!r})
I = index.search(np.load({str(tmp_path / "xq.npy")!r}), 10)[1]
expected = np.load({str(tmp_path / "expected.npy")!r})
assert np.mean(I == expected) > 0.95, np.mean(I == expected)
"""
    # (run outside the repository: there `import pqfast` would find the
    # source folder, whose kernels are not built in a non-editable install)
    subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=120, cwd=tmp_path
    )
