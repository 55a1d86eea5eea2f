"""Shared fixtures: the bundled real embeddings and seeded synthetic data."""

from pathlib import Path

import numpy as np
import pytest

import pqfast

DATA = Path(__file__).resolve().parent.parent / "data" / "minilm-words-10k.npy"


@pytest.fixture(scope="session")
def embeddings():
    """Real MiniLM word embeddings, 10,000 x 384, unit norm, float32."""
    return np.load(DATA).astype(np.float32)


@pytest.fixture(scope="session")
def real_split(embeddings):
    """(base, queries): 9,000 base vectors and 300 queries from the real data."""
    return embeddings[1000:], embeddings[:300]


@pytest.fixture()
def rng():
    return np.random.default_rng(42)


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests that change the thread count leave it as they found it."""
    n = pqfast.omp_get_max_threads()
    yield
    pqfast.omp_set_num_threads(n)


def gaussian_mixture(rng, n, d, n_clusters=20, spread=0.3):
    """Clustered float32 data, like real descriptors (low intrinsic dimension)."""
    centers = rng.standard_normal((n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, n)
    return (centers[labels] + spread * rng.standard_normal((n, d))).astype(np.float32)


def recall_at(I, I_true, k):
    """Mean fraction of the true k nearest found among the first k results."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, I_true)]))


def same_ids_ties_aside(D1, I1, D2, I2, rtol=1e-4, atol=1e-5):
    """Assert two (D, I) results agree up to ties; return the fraction of rows
    whose id sets are identical (order among equal distances may differ).

    Quantized codes often coincide, so ties at the k-th distance are common and
    either library may keep either tied id; anything closer must match.

    Sorted distances agree within tolerance; an id found by one side only lies
    at the boundary (k-th) distance, where ties may cut either way; an id found
    by both has the same distance on both sides.
    """
    np.testing.assert_allclose(D1, D2, rtol=rtol, atol=atol)
    identical = 0
    for d1, i1, d2, i2 in zip(D1, I1, D2, I2):
        if set(i1) == set(i2):
            identical += 1
        tol = atol + rtol * abs(d1[-1])
        for d, ids, other in ((d1, i1, set(i2)), (d2, i2, set(i1))):
            for j, v in enumerate(ids):
                if v not in other:
                    assert abs(d[j] - d[-1]) <= tol, (v, d[j], d[-1])
        dist2 = dict(zip(i2, d2))
        for j, v in enumerate(i1):
            if v in dist2:
                assert abs(d1[j] - dist2[v]) <= atol + rtol * abs(d1[j]), (v, d1[j])
    return identical / len(I1)


def assert_distances_match_reconstruction(index, xq, k=5):
    """Search `index` and check each returned distance against the decoded vector."""
    D, I = index.search(xq, k)
    recon = np.stack([index.reconstruct(int(i)) for i in I.ravel()])
    recon = recon.reshape(*I.shape, -1)
    if index.metric_type == pqfast.METRIC_L2:
        ref = ((xq[:, None, :] - recon) ** 2).sum(-1)
    else:
        ref = np.einsum("qd,qkd->qk", xq, recon)
    np.testing.assert_allclose(D, ref, rtol=1e-4, atol=1e-3)
