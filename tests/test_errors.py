"""Bad input gets a clear ValueError/TypeError, and a failed call changes nothing."""

import numpy as np
import pytest
from conftest import gaussian_mixture

import pqfast

D = 32


@pytest.fixture(scope="module")
def xb():
    return gaussian_mixture(np.random.default_rng(3), 2000, D)


@pytest.fixture(scope="module")
def indexes(xb):
    """One filled index of each kind."""
    flat = pqfast.IndexFlatL2(D)
    pq = pqfast.IndexPQ(D, 8, 8)
    ivf = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(D), D, 16, 8, 8)
    for index in (flat, pq, ivf):
        index.train(xb)
        index.add(xb)
    ivf.nprobe = 4
    return {"flat": flat, "pq": pq, "ivf": ivf}


def snapshot(index, xb):
    return index.ntotal, *index.search(xb[:5], 3)


def assert_unchanged(index, xb, before):
    after = snapshot(index, xb)
    assert after[0] == before[0]
    for a, b in zip(after[1:], before[1:]):
        np.testing.assert_array_equal(a, b)


BAD_VECTORS = [
    (np.zeros((4, D + 1)), ValueError, "dimensions"),
    (np.zeros((4, D, 1)), ValueError, "2-D"),
    (np.zeros(D - 1), ValueError, "dimensions"),
    (np.full((4, D), np.nan), ValueError, "NaN"),
    (np.full((4, D), np.inf), ValueError, "NaN or infinity"),
    (np.zeros((4, D), np.complex64), TypeError, "real"),
    (np.array([["a"] * D]), TypeError, "numeric"),
    # float32 C-contiguous: the unconverted path, range-checked in C
    (np.full((1, D), np.nan, np.float32), ValueError, "NaN or infinity"),
    (
        np.where(np.arange(D) == D - 1, np.inf, 0).astype(np.float32)[None],
        ValueError,
        "NaN or infinity",
    ),
    (np.full((1, D), -1e20, np.float32), ValueError, "overflow"),
    (np.zeros((1, D + 1), np.float32), ValueError, "dimensions"),
    (np.zeros((1, D, 1), np.float32), ValueError, "2-D"),
]


@pytest.mark.parametrize("kind", ["flat", "pq", "ivf"])
@pytest.mark.parametrize("bad,exc,match", BAD_VECTORS)
def test_bad_vectors_rejected_everywhere(indexes, xb, kind, bad, exc, match):
    index = indexes[kind]
    before = snapshot(index, xb)
    with pytest.raises(exc, match=match):
        index.add(bad)
    with pytest.raises(exc, match=match):
        index.search(bad, 3)
    assert_unchanged(index, xb, before)


@pytest.mark.parametrize("kind", ["flat", "pq", "ivf"])
@pytest.mark.parametrize(
    "k,exc",
    [
        (0, ValueError),
        (-1, ValueError),
        (1.5, TypeError),
        ("3", TypeError),
        (True, TypeError),
    ],
)
def test_bad_k(indexes, xb, kind, k, exc):
    with pytest.raises(exc, match="k"):
        indexes[kind].search(xb[:2], k)


@pytest.mark.parametrize(
    "make",
    [
        lambda: pqfast.IndexPQ(D, 8, 8),
        lambda: pqfast.IndexIVFPQ(pqfast.IndexFlatL2(D), D, 16, 8, 8),
    ],
)
def test_untrained(make, xb):
    index = make()
    for call in (lambda: index.add(xb), lambda: index.search(xb, 1)):
        with pytest.raises(pqfast.NotTrainedError, match="before train"):
            call()
    with pytest.raises(RuntimeError):  # what faiss raises, for faiss-style handlers
        index.search(xb, 1)
    assert index.ntotal == 0
    with pytest.raises(pqfast.NotTrainedError):
        pqfast.ProductQuantizer(D, 8, 8).compute_codes(xb)
    with pytest.raises(pqfast.NotTrainedError):
        pqfast.Kmeans(D, 4).assign(xb)


@pytest.mark.parametrize(
    "args,match",
    [
        ((30, 8, 8), "divisible"),
        ((D, 8, 0), "nbits"),
        ((D, 8, 17), "between 1 and 16"),
        ((D, 0, 8), "M"),
        ((0, 8, 8), "d"),
    ],
)
def test_bad_pq_parameters(args, match):
    with pytest.raises(ValueError, match=match):
        pqfast.ProductQuantizer(*args)
    with pytest.raises(ValueError, match=match):
        pqfast.IndexPQ(*args)
    with pytest.raises(ValueError, match=match):
        pqfast.IndexIVFPQ(pqfast.IndexFlatL2(args[0] or 1), args[0], 4, *args[1:])


def test_bad_metric_and_quantizer():
    with pytest.raises(ValueError, match="metric"):
        pqfast.IndexPQ(D, 8, 8, metric=7)
    with pytest.raises(ValueError, match="quantizer has d"):
        pqfast.IndexIVFPQ(pqfast.IndexFlatL2(16), D, 4, 8, 8)
    with pytest.raises(TypeError, match="quantizer"):
        pqfast.IndexIVFPQ(None, D, 4, 8, 8)
    with pytest.raises(ValueError, match="nlist"):
        pqfast.IndexIVFPQ(pqfast.IndexFlatL2(D), D, 0, 8, 8)


def test_too_few_training_points(xb):
    pq_index = pqfast.IndexPQ(D, 8, 8)
    with pytest.raises(ValueError, match="too few training points"):
        pq_index.train(xb[:255])
    assert not pq_index.is_trained
    quantizer = pqfast.IndexFlatL2(D)
    ivf = pqfast.IndexIVFPQ(quantizer, D, 512, 8, 4)
    with pytest.raises(ValueError, match="too few training points"):
        ivf.train(xb[:300])
    assert not ivf.is_trained and quantizer.ntotal == 0
    with pytest.raises(ValueError, match="too few training points"):
        pqfast.Kmeans(D, 100).train(xb[:99])


def test_bad_ids(indexes, xb):
    ivf = indexes["ivf"]
    before = snapshot(ivf, xb)
    with pytest.raises(ValueError, match="one id per vector"):
        ivf.add_with_ids(xb[:10], np.arange(9))
    with pytest.raises(TypeError, match="integers"):
        ivf.add_with_ids(xb[:10], np.arange(10, dtype=np.float64))
    with pytest.raises(ValueError, match=">= 0"):
        ivf.add_with_ids(xb[:10], -np.arange(1, 11))
    with pytest.raises(TypeError, match="integers"):
        ivf.remove_ids(np.array([1.5]))
    assert_unchanged(ivf, xb, before)


def test_bad_nprobe(indexes, xb):
    ivf = indexes["ivf"]
    for bad, exc in ((0, ValueError), (-3, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="nprobe"):
            ivf.nprobe = bad
    assert ivf.nprobe == 4
    ivf.nprobe = 10_000  # above nlist: clamps, as in faiss
    D_all, _ = ivf.search(xb[:3], 3)
    ivf.nprobe = ivf.nlist
    np.testing.assert_array_equal(D_all, ivf.search(xb[:3], 3)[0])
    ivf.nprobe = 4


def test_bad_centroids_and_codes(indexes):
    pq = pqfast.ProductQuantizer(D, 8, 8)
    with pytest.raises(ValueError, match="shape"):
        pq.centroids = np.zeros((8, 255, 4))
    with pytest.raises(ValueError, match="NaN"):
        pq.centroids = np.full((8, 256, 4), np.nan)
    assert not pq.is_trained
    index = indexes["pq"]
    with pytest.raises(ValueError, match="code_size"):
        index.sa_decode(np.zeros((2, 5), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        index.sa_decode(np.zeros((2, 8), np.int64))


def test_reconstruct_out_of_range(indexes):
    for kind in ("flat", "pq", "ivf"):
        with pytest.raises(KeyError):
            indexes[kind].reconstruct(10**9)


@pytest.mark.parametrize("kind", ["pq", "ivf"])
def test_retrain_with_data_refused(indexes, xb, kind):
    index = indexes[kind]
    before = snapshot(index, xb)
    with pytest.raises(ValueError, match="reset"):
        index.train(xb)
    assert_unchanged(index, xb, before)


def test_is_trained_assignment(indexes):
    indexes["pq"].is_trained = True  # faiss idiom, true here: accepted
    with pytest.raises(ValueError, match="pq.centroids"):
        pqfast.IndexPQ(D, 8, 8).is_trained = True
