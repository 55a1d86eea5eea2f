"""IndexPQFastScan: 4-bit codes in blocks of 32, scored by byte shuffles."""

import itertools

import numpy as np
import pytest
from conftest import recall_at

import pqfast
from pqfast._blocks import BlockCodes, flat_to_sub, pack_blocks
from pqfast._kernels import _fastscan, _openmp
from pqfast.invlists import BlockInvertedLists

FLT_MAX = np.finfo(np.float32).max


@pytest.mark.parametrize("M", [1, 16, 48, 257, 300])
def test_table_quantizer_simd_matches_portable(rng, M):
    """8-bit tables: each row's minimum subtracted, one shared scale; every
    SIMD level gives the portable result, and the rounding error of an entry
    is at most half a step.  Entries stop short of 255 where M of them would
    overflow a 16-bit block sum (M > 257)."""
    top = 255 if M <= 257 else 65535 // M
    table = (rng.standard_normal((M, 16)) * rng.uniform(0.1, 3, (M, 1))).astype(
        np.float32
    )
    results = []
    for level in (0, 1, 2):
        lut = np.empty((M, 16), np.uint8)
        scale, bias = _fastscan.quantize(table, level, lut)
        results.append((lut, scale, bias))
        np.testing.assert_array_equal(lut, results[0][0])
        assert (scale, bias) == pytest.approx(results[0][1:], rel=1e-6)
    lut, scale, bias = results[0]
    lo = table.min(1, keepdims=True)
    assert bias == pytest.approx(lo.sum(), rel=1e-5)
    assert scale == pytest.approx(top / (table.max(1) - table.min(1)).max(), rel=1e-5)
    assert np.abs(lut / scale - (table - lo)).max() <= 0.5 / scale * 1.001
    assert lut.max() == top
    constant = np.ones((M, 16), np.float32)
    for level in (0, 1, 2):
        lut = np.empty((M, 16), np.uint8)
        assert _fastscan.quantize(constant, level, lut)[0] == 0 and not lut.any()


@pytest.mark.parametrize("M", [8, 15, 16])
def test_block_kernel_simd_matches_portable(rng, M):
    codes = rng.integers(0, 16, (100, M)).astype(np.uint8)
    blocks = np.empty((4, M * 16), np.uint8)
    _fastscan.pack_blocks(codes, blocks)
    back = np.empty_like(codes)
    _fastscan.unpack_blocks(blocks, back)
    np.testing.assert_array_equal(back, codes)
    lut = rng.integers(0, 256, (M, 16)).astype(np.uint8)
    expected = lut[np.arange(M), codes].sum(1)
    portable = None
    for level in (0, 1, 2):  # portable, AVX2, AVX-512BW (as far as the CPU has them)
        out, masks = np.empty((4, 32), np.uint16), np.empty(4, np.int64)
        _fastscan.block_sums(blocks, lut, level, 1000, out, masks)
        portable = (out, masks) if portable is None else portable
        np.testing.assert_array_equal(out, portable[0])
        np.testing.assert_array_equal(masks, portable[1])
        np.testing.assert_array_equal(out.ravel()[:100], expected)
        bits = (out <= 1000).astype(np.int64) << np.arange(32)
        np.testing.assert_array_equal(masks, bits.sum(1))


@pytest.mark.parametrize("M", [1, 8, 15])
def test_exact_rescoring_simd_matches_portable(rng, M):
    """The exact re-scoring of a block (AVX-512 scores all 32 codes) returns,
    like the portable version, only candidates whose score is <= thr: a code
    the quantized filter dropped is not brought back, so the SIMD level cannot
    change which codes are offered to the heap."""
    codes = rng.integers(0, 16, (128, M)).astype(np.uint8)
    blocks = np.empty((4, M * 16), np.uint8)
    _fastscan.pack_blocks(codes, blocks)
    table = rng.standard_normal((M, 16)).astype(np.float32)
    exact = 0.5 + table[np.arange(M), codes].astype(np.float32).sum(1)
    thr = float(np.median(exact))
    cand = rng.integers(0, 1 << 32, 4, dtype=np.int64)
    cand[0], cand[1] = 0, (1 << 32) - 1  # none, all
    cand[3] &= 0x5555_5555  # every other code: non-candidates that would pass
    results = []
    for level in (0, 2):  # portable, AVX-512 (as far as the CPU has it)
        masks, out = cand.copy(), np.empty((4, 32), np.float32)
        _fastscan.exact_scores(blocks, table, level, 0.5, thr, masks, out)
        results.append(masks)
        for b in range(4):
            for j in range(32):
                if (cand[b] >> j) & 1:
                    np.testing.assert_allclose(out[b, j], exact[32 * b + j], rtol=1e-5)
        want = np.array([
            sum(1 << j for j in range(32)
                if (cand[b] >> j) & 1 and out[b, j] <= thr)
            for b in range(4)
        ])  # fmt: skip
        np.testing.assert_array_equal(masks, want)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.fixture(scope="module", params=[pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def pair(request, real_split):
    """A fast-scan index and an IndexPQ with the same 4-bit centroids."""
    xb, _ = real_split
    fs = pqfast.IndexPQFastScan(xb.shape[1], 48, 4, request.param)
    fs.train(xb)
    fs.add(xb)
    exact = pqfast.IndexPQ(xb.shape[1], 48, 4, request.param)
    exact.pq.centroids = fs.pq.centroids
    exact.add(xb)
    return fs, exact


@pytest.mark.parametrize("k", [10, 100])
def test_matches_exact_adc_up_to_table_quantization(pair, real_split, k):
    fs, exact = pair
    _, xq = real_split
    D1, I1 = fs.search(xq, k)
    D2, I2 = exact.search(xq, k)
    assert recall_at(I1, I2, k) > 0.97
    same = I1 == I2  # returned distances are exact ADC distances
    np.testing.assert_allclose(D1[same], D2[same], rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(fs.reconstruct_n(0, 50), exact.reconstruct_n(0, 50))


def test_recall_like_faiss_fast_scan(pair, real_split):
    faiss = pytest.importorskip("faiss")
    fs, exact = pair
    xb, xq = real_split
    theirs = faiss.IndexPQFastScan(xb.shape[1], 48, 4, fs.metric_type)
    faiss.copy_array_to_vector(fs.pq.centroids.ravel(), theirs.pq.centroids)
    theirs.is_trained = True
    theirs.add(xb)
    _, I_exact = exact.search(xq, 10)
    ours = recall_at(fs.search(xq, 10)[1], I_exact, 10)
    assert ours >= recall_at(theirs.search(xq, 10)[1], I_exact, 10) - 0.01


def test_several_adds_partial_blocks_and_padding(pair, real_split):
    fs, _ = pair
    xb, xq = real_split
    index = pqfast.IndexPQFastScan(xb.shape[1], 48, 4, fs.metric_type)
    index.pq.centroids = fs.pq.centroids
    for part in np.array_split(xb[:1000], 7):  # sizes not multiples of 32
        index.add(part)
    whole = pqfast.IndexPQFastScan(xb.shape[1], 48, 4, fs.metric_type)
    whole.pq.centroids = fs.pq.centroids
    whole.add(xb[:1000])
    for a, b in zip(index.search(xq, 10), whole.search(xq, 10)):
        np.testing.assert_array_equal(a, b)
    index.reset()
    index.add(xb[:3])
    D, I = index.search(xq[:2], 5)
    pad = FLT_MAX if fs.metric_type == pqfast.METRIC_L2 else -FLT_MAX
    assert np.all(I[:, 3:] == -1) and np.all(D[:, 3:] == pad)


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
def test_identical_at_1_and_2_threads(pair, real_split):
    fs, _ = pair
    _, xq = real_split
    results = []
    for n in (1, 2):
        pqfast.omp_set_num_threads(n)
        results.append([*fs.search(xq, 10), *fs.search(xq[:1], 10)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_errors():
    with pytest.raises(ValueError, match="nbits=4"):
        pqfast.IndexPQFastScan(32, 8, 8)
    with pytest.raises(ValueError, match="bbs"):
        pqfast.IndexPQFastScan(32, 8, 4, bbs=64)
    index = pqfast.IndexPQFastScan(32, 8)
    with pytest.raises(pqfast.NotTrainedError):
        index.search(np.zeros((1, 32)), 1)
    with pytest.raises(ValueError, match="too few training points"):
        index.train(np.zeros((10, 32)))


@pytest.fixture(scope="module", params=[pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def ivf_pair(request, real_split):
    """An IVF fast-scan index and an IndexIVFPQ sharing its trained state."""
    xb, _ = real_split
    d, nlist, metric = xb.shape[1], 32, request.param
    flat = pqfast.IndexFlatL2 if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP
    fs = pqfast.IndexIVFPQFastScan(flat(d), d, nlist, 48, 4, metric)
    fs.train(xb)
    ref = pqfast.IndexIVFPQ(flat(d), d, nlist, 48, 4, metric)
    ref.quantizer.add(fs.quantizer.reconstruct_n(0, nlist))
    ref.pq.centroids = fs.pq.centroids
    for index in (fs, ref):
        index.add(xb[:3000])
        index.add(xb[3000:])
    return fs, ref


def test_ivf_fast_scan_equals_ivfpq(ivf_pair, real_split):
    fs, ref = ivf_pair
    _, xq = real_split
    for nprobe in (1, 8):
        fs.nprobe = ref.nprobe = nprobe
        D1, I1 = fs.search(xq, 10)
        D2, I2 = ref.search(xq, 10)
        assert recall_at(I1, I2, 10) > 0.99  # the 8-bit tables only filter
        same = I1 == I2
        np.testing.assert_allclose(D1[same], D2[same], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(fs.reconstruct(7), ref.reconstruct(7), rtol=1e-6)


def test_ivf_fast_scan_sees_removals_and_adds(ivf_pair, real_split):
    fs, _ = ivf_pair
    xb, xq = real_split
    fs.nprobe = fs.nlist
    _, I = fs.search(xq[:20], 5)
    gone = np.unique(I[I >= 0])
    assert fs.remove_ids(gone) == len(gone)
    _, I2 = fs.search(xq[:20], 5)
    assert not set(I2.ravel()) & set(gone)
    fs.add_with_ids(xb[gone], gone)  # back, same ids
    np.testing.assert_array_equal(np.sort(fs.search(xq[:20], 5)[1], 1), np.sort(I, 1))


@pytest.mark.skipif(not _openmp.have_openmp(), reason="serial build")
def test_ivf_fast_scan_identical_at_1_and_2_threads(ivf_pair, real_split):
    fs, _ = ivf_pair
    _, xq = real_split
    fs.nprobe = 8
    results = []
    for n in (1, 2):
        pqfast.omp_set_num_threads(n)
        results.append([*fs.search(xq, 10), *fs.search(xq[:1], 10)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_ivf_fast_scan_recall_like_faiss(real_split):
    faiss = pytest.importorskip("faiss")
    xb, xq = real_split
    d = xb.shape[1]
    gt = pqfast.IndexFlatL2(d)
    gt.add(xb)
    _, I_true = gt.search(xq, 10)
    recalls = {}
    for lib in (pqfast, faiss):
        index = lib.IndexIVFPQFastScan(lib.IndexFlatL2(d), d, 64, 48, 4)
        index.train(xb)
        index.add(xb)
        index.nprobe = 8
        recalls[lib.__name__] = recall_at(index.search(xq, 10)[1], I_true, 10)
    assert recalls["pqfast"] >= recalls["faiss"] - 0.02, recalls
    with pytest.raises(ValueError, match="nbits=4"):
        pqfast.IndexIVFPQFastScan(pqfast.IndexFlatL2(d), d, 64, 48, 8)


def test_ivf_fast_scan_stores_blocks_only(ivf_pair):
    """Codes live only in blocks of 32 per list, as in faiss: the lists hold
    the blocks plus 8 bytes an id, the index besides them its list-term table,
    and get_codes still gives IndexIVFPQ's codes."""
    fs, ref = ivf_pair
    sizes = np.array(fs.invlists.sizes)
    np.testing.assert_array_equal(sizes, ref.invlists.sizes)
    block_bytes = fs.pq.M * 16
    expect = int((-(-sizes // 32)).sum()) * block_bytes + 8 * int(sizes.sum())
    assert fs.invlists.nbytes == expect
    stored = ref.invlists.nbytes
    assert fs.invlists.nbytes <= stored + fs.nlist * block_bytes  # last blocks' padding
    fs.precompute_table()  # L2 by residual: a (nlist, M, 16) float32 table
    table = fs.nlist * fs.pq.M * 16 * 4 if fs.metric_type == pqfast.METRIC_L2 else 0
    assert fs.nbytes == expect + table
    for list_no in (0, 5, 31):  # (an earlier test re-added ids: compare by id)
        inv, ref_inv = fs.invlists, ref.invlists
        mine = inv.get_codes(list_no)[np.argsort(inv.get_ids(list_no))]
        theirs = ref_inv.get_codes(list_no)[np.argsort(ref_inv.get_ids(list_no))]
        np.testing.assert_array_equal(mine, theirs)


def test_search_kernels_simd_match_portable(pair, real_split):
    """The SIMD block filter and exact re-scoring (AVX-512 permutes) return
    exactly what the portable versions return, with and without a selector."""
    from pqfast._kernels import _fastscan
    from pqfast._search import result_arrays
    from pqfast.selectors import selector_args

    fs, _ = pair
    _, xq = real_split
    pq = fs.pq
    for sel, k in itertools.product(
        (None, pqfast.IDSelectorRange(50, 4000)), (10, 100)
    ):
        out = []
        for simd in (False, True):
            D, I = result_arrays(xq.shape[0], k)
            _fastscan.pq4_search(
                xq, pq._cbt, pq._ynorm, fs._codes.blocks.view(), fs.ntotal,
                fs.metric_type == pqfast.METRIC_L2, 1, simd,
                selector_args(pqfast.SearchParameters(sel=sel)), D, I,
            )  # fmt: skip
            out.append((D, I))
        for a, b in zip(*out):
            np.testing.assert_array_equal(a, b)


def test_search_simd_matches_portable_with_large_norms():
    """Data far from the origin (SIFT-like offsets): the float sums of the
    exact re-scoring round by more than the quantized filter's slack, so
    codes it dropped can score <= the threshold.  The AVX-512 re-scoring used
    to return them anyway, and 8 % of the results here differed from the
    portable search."""
    from pqfast._search import result_arrays
    from pqfast.selectors import selector_args

    rng = np.random.default_rng(0)
    xb = (1000 + rng.standard_normal((3000, 64))).astype(np.float32)
    xq = (1000 + rng.standard_normal((100, 64))).astype(np.float32)
    fs = pqfast.IndexPQFastScan(64, 16, 4)
    fs.train(xb)
    fs.add(xb)
    pq = fs.pq
    for k in (10, 100):
        out = []
        for simd in (False, True):
            D, I = result_arrays(xq.shape[0], k)
            _fastscan.pq4_search(
                xq, pq._cbt, pq._ynorm, fs._codes.blocks.view(), fs.ntotal, True, 1,
                simd, selector_args(None), D, I,
            )  # fmt: skip
            out.append((D, I))
        for a, b in zip(*out):
            np.testing.assert_array_equal(a, b)


def test_many_sub_quantizers_do_not_overflow_block_sums(rng):
    """With M = 300 sub-quantizers, M table entries of 255 would overflow the
    16-bit sums of a block: a far vector would wrap around to a small sum and
    push the true neighbours out of the large-k reservoir.  The tables are
    quantized to fit, so results stay those of IndexPQ (flat and IVF) with the
    same 4-bit centroids.  Vectors of 0/1 coordinates, 200 of them all ones,
    queried from the origin, make the largest sums."""
    d = M = 300
    bits = (rng.random((3000, d)) < 0.5).astype(np.float32)
    bits[:200] = 1
    xb = bits + rng.normal(scale=0.01, size=bits.shape).astype(np.float32)
    xq = np.zeros((3, d), np.float32)
    fs = pqfast.IndexPQFastScan(d, M, 4)
    fs.train(xb)
    ivf = pqfast.IndexIVFPQFastScan(pqfast.IndexFlatL2(d), d, 2, M, 4)
    ivf.train(xb)
    ivf.nprobe = 2
    exact = pqfast.IndexPQ(d, M, 4)
    exact.pq.centroids = fs.pq.centroids
    ref = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(d), d, 2, M, 4)
    ref.quantizer.add(ivf.quantizer.reconstruct_n(0, 2))
    ref.pq.centroids = ivf.pq.centroids
    ref.nprobe = 2
    for index, want in ((fs, exact), (ivf, ref)):
        index.add(xb)
        want.add(xb)
        for k in (10, 100):
            D1, I1 = index.search(xq, k)
            D2, I2 = want.search(xq, k)
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_allclose(D1, D2, rtol=1e-5)


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_large_k_with_many_equal_quantized_sums(metric):
    """IndexPQFastScan keeps large-k candidates by quantized sum and scores
    them at the end.  With a few distinct vectors, each repeated 300 times,
    a full reservoir cannot shrink by sum (every code in it is within reach
    of the k-th), so it is decided exactly: results stay those of IndexPQ
    with the same 4-bit centroids, ties by id, at 1 and 2 threads."""
    rng = np.random.default_rng(11)
    distinct = rng.normal(size=(7, 64)).astype(np.float32)
    x = np.repeat(distinct, 300, axis=0)  # in order: a query near the last
    # vector finds the others first, and must still find the later, closer ones
    fs = pqfast.IndexPQFastScan(64, 8, 4, metric)
    fs.train(x)
    fs.add(x)
    exact = pqfast.IndexPQ(64, 8, 4, metric)
    exact.pq.centroids = fs.pq.centroids
    exact.add(x)
    xq = np.vstack([distinct[::-1], rng.normal(size=(5, 64))]).astype(np.float32) + 0.01
    for threads in (1, 2):
        pqfast.omp_set_num_threads(threads)
        for k in (17, 50, 400, 2500):
            D1, I1 = fs.search(xq, k)
            D2, I2 = exact.search(xq, k)
            np.testing.assert_array_equal(I1, I2)
            np.testing.assert_allclose(D1, D2, rtol=1e-5, atol=1e-4)
            D1, I1 = fs.search(xq[:1], k)  # one query: blocks split over threads
            np.testing.assert_array_equal(I1, I2[:1])


@pytest.mark.parametrize("metric", [pqfast.METRIC_L2, pqfast.METRIC_INNER_PRODUCT])
def test_large_k_reservoir_keeps_what_the_heap_keeps(metric):
    """From k = 17 on, fast-scan candidates go through a reservoir instead of
    the heap.  Its first 16 results are exactly the heap's k = 16 results
    (ties broken by id: duplicated vectors), for IndexPQFastScan and
    IndexIVFPQFastScan, with a selector and with k beyond ntotal."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(700, 32)).astype(np.float32)
    x[400:600] = x[:200]  # duplicates: equal distances
    flat = (
        pqfast.IndexFlatL2(32) if metric == pqfast.METRIC_L2 else pqfast.IndexFlatIP(32)
    )
    indexes = [pqfast.IndexPQFastScan(32, 8, 4, metric),
               pqfast.IndexIVFPQFastScan(flat, 32, 4, 8, 4, metric)]  # fmt: skip
    for index in indexes:
        index.train(x)
        index.add(x)
        if hasattr(index, "nprobe"):
            index.nprobe = 3
        xq = x[:37] + 0.01
        for params in (
            None,
            pqfast.SearchParameters(sel=pqfast.IDSelectorRange(50, 650)),
        ):
            D16, I16 = index.search(xq, 16, params=params)
            for k in (17, 100, 300, 800):
                D, I = index.search(xq, k, params=params)
                np.testing.assert_array_equal(I[:, :16], I16)
                np.testing.assert_array_equal(D[:, :16], D16)
                found = I >= 0
                step = (
                    np.diff(D, axis=1)
                    if metric == pqfast.METRIC_L2
                    else -np.diff(D, axis=1)
                )
                assert np.all(step[found[:, 1:]] >= 0)  # sorted by distance
                tie = (np.diff(D, axis=1) == 0) & found[:, 1:]
                assert np.all(np.diff(I, axis=1)[tie] > 0)  # then by id
            assert np.all(I[:, index.ntotal :] == -1)


@pytest.mark.parametrize("M", [7, 16])
def test_appends_in_pieces_pack_like_one_append(M):
    """Entries appended in uneven pieces (in place, into the free slots of
    each list's last block) are stored exactly as one append packs them,
    with the unused slots of the last block zero whatever was there."""
    rng = np.random.default_rng(5)
    n, nlist = 700, 5
    codes = rng.integers(0, 256, (n, (M + 1) // 2)).astype(np.uint8)
    if M % 2:
        codes[:, -1] &= 15  # the unused high nibble of an odd M
    lists = rng.integers(0, nlist, n).astype(np.int64)
    ids = rng.permutation(n).astype(np.int64)
    whole = BlockInvertedLists(nlist, M)
    whole.add_entries(lists, codes, ids)
    pieces = BlockInvertedLists(nlist, M)
    for a, b in ((0, 1), (1, 40), (40, 41), (41, 333), (333, n)):
        pieces.add_entries(lists[a:b], codes[a:b], ids[a:b])
    blocks = BlockCodes(M)
    for a, b in ((0, 3), (3, 3), (3, 100), (100, n)):
        blocks.append(codes[a:b])
    np.testing.assert_array_equal(blocks.view(), codes)
    np.testing.assert_array_equal(
        blocks.blocks.view(), pack_blocks(flat_to_sub(codes, M))
    )
    blocks.size = 650  # slots 650.. of the last block keep old codes
    blocks.append(codes[:10])
    again = np.concatenate([codes[:650], codes[:10]])
    np.testing.assert_array_equal(
        blocks.blocks.view(), pack_blocks(flat_to_sub(again, M))
    )
    for i in range(nlist):
        np.testing.assert_array_equal(pieces.get_ids(i), ids[lists == i])
        np.testing.assert_array_equal(pieces.get_codes(i), codes[lists == i])
        mine = pieces._codes[i].blocks.view()
        np.testing.assert_array_equal(mine, whole._codes[i].blocks.view())
        np.testing.assert_array_equal(
            mine, pack_blocks(flat_to_sub(codes[lists == i], M))
        )
    with pytest.raises(ValueError, match="outside"):
        pieces.add_entries(np.array([nlist]), codes[:1], ids[:1])
    assert pieces.ntotal == n
