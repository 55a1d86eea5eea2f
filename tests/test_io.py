"""write_index / read_index (plain and memory-mapped), serialize, pickle, corruption."""

import io
import json
import pickle
import struct
import zlib

import numpy as np
import pytest

import pqfast


@pytest.fixture(scope="module")
def indexes(embeddings):
    x = embeddings[:3000]
    flat = pqfast.IndexFlatL2(384)
    flat.add(x)
    pq = pqfast.IndexPQ(384, 16, 8, pqfast.METRIC_INNER_PRODUCT)
    pq.train(x)
    pq.add(x)
    fs = pqfast.IndexPQFastScan(384, 16)
    fs.train(x)
    fs.add(x[:1001])  # a partial last block
    ivf = pqfast.IndexIVFPQ(pqfast.IndexFlatL2(384), 384, 16, 16, 8)
    ivf.train(x)
    ivf.add_with_ids(x, np.arange(3000) * 3 + 1)
    ivf.remove_ids(np.arange(100) * 3 + 1)
    ivf.nprobe = 4
    ivfs = pqfast.IndexIVFPQFastScan(pqfast.IndexFlatIP(384), 384, 16, 16, 4, 0)
    ivfs.train(x)
    ivfs.add(x)
    ivfs.nprobe = 4
    opq = pqfast.IndexPreTransform(
        pqfast.OPQMatrix(384, 16, 64),
        pqfast.IndexIVFPQ(pqfast.IndexFlatL2(64), 64, 16, 16, 8),
    )
    opq.transform.niter, opq.transform.niter_pq_0 = 2, 4
    opq.train(x)
    opq.add(x)
    opq.nprobe = 4
    idmap = pqfast.IndexIDMap(pqfast.IndexPQ(384, 16, 8))
    idmap.train(x)
    idmap.add_with_ids(x, np.arange(3000) * 7 + 2)
    idmap.remove_ids(np.arange(50) * 7 + 2)
    nested = pqfast.IndexPreTransform(
        opq.transform, pqfast.IndexIDMap(pqfast.IndexFlatIP(64))
    )
    nested.add_with_ids(x[:500], np.arange(500)[::-1].copy())
    two_level = pqfast.index_factory(384, "IVF64(IVF8,Flat),PQ16")  # IVF quantizer
    two_level.quantizer.nprobe = 3
    two_level.train(x)
    two_level.add(x)
    two_level.nprobe = 4
    indexes = [flat, pq, fs, ivf, ivfs, opq, idmap, nested, two_level]
    return indexes, embeddings[5000:5020]


def same_results(a, b, xq):
    for u, v in zip(a.search(xq, 5), b.search(xq, 5)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("flags", [0, pqfast.IO_FLAG_MMAP])
def test_round_trip_files(indexes, tmp_path, flags):
    all_indexes, xq = indexes
    for i, index in enumerate(all_indexes):
        path = tmp_path / f"index{i}.pqf"
        pqfast.write_index(index, str(path))
        loaded = pqfast.read_index(str(path), flags)
        assert type(loaded) is type(index) and loaded.ntotal == index.ntotal
        same_results(index, loaded, xq)
        if hasattr(index, "nprobe"):
            assert loaded.nprobe == index.nprobe


def test_round_trip_file_objects_serialize_and_pickle(indexes):
    all_indexes, xq = indexes
    for index in all_indexes:
        buf = io.BytesIO()
        pqfast.write_index(index, buf)
        buf.seek(0)
        same_results(index, pqfast.read_index(buf), xq)
        data = pqfast.serialize_index(index)
        assert data.dtype == np.uint8
        same_results(index, pqfast.deserialize_index(data), xq)
        same_results(index, pickle.loads(pickle.dumps(index)), xq)


def test_mmapped_index_can_change_without_touching_the_file(indexes, tmp_path):
    all_indexes, xq = indexes
    ivf = all_indexes[3]
    path = tmp_path / "ivf.pqf"
    pqfast.write_index(ivf, str(path))
    before = path.read_bytes()
    mapped = pqfast.read_index(str(path), pqfast.IO_FLAG_MMAP)
    assert mapped.remove_ids(np.arange(100, 200) * 3 + 1) == 100
    mapped.add(xq)
    assert mapped.ntotal == ivf.ntotal - 100 + len(xq)
    assert path.read_bytes() == before
    same_results(ivf, pqfast.read_index(str(path)), xq)


def corruptions(data: bytes) -> dict:
    hlen = struct.unpack("<I", data[12:16])[0]
    flip = bytearray(data)
    flip[-100] ^= 0xFF  # inside the last array
    header = bytearray(data)
    header[20] ^= 0x01  # inside the JSON header
    return {
        "empty": b"",
        "magic": b"NOTANIDX" + data[8:],
        "version": data[:8] + struct.pack("<I", 99) + data[12:],
        "truncated header": data[: 16 + hlen // 2],
        "truncated data": data[: len(data) - 1000],
        "header checksum": bytes(header),
        "data checksum": bytes(flip),
    }


@pytest.mark.parametrize(
    "what",
    ["empty", "magic", "version", "truncated header", "truncated data",
     "header checksum", "data checksum"],
)  # fmt: skip
@pytest.mark.parametrize("which", [3, 5, 6, 8])  # IVFPQ, OPQ + IVFPQ, IDMap, two-level
def test_corrupt_files_rejected(indexes, tmp_path, what, which):
    index = indexes[0][which]
    data = corruptions(pqfast.serialize_index(index).tobytes())[what]
    path = tmp_path / "bad.pqf"
    path.write_bytes(data)
    for flags in (0, pqfast.IO_FLAG_MMAP):
        with pytest.raises(pqfast.CorruptIndexError, match="not a valid pqfast index"):
            pqfast.read_index(str(path), flags)
    with pytest.raises(pqfast.CorruptIndexError):
        pqfast.deserialize_index(np.frombuffer(data, np.uint8))


def with_header(data: bytes, change) -> bytes:
    """`data` with its JSON header changed by `change(meta)`, checksum redone."""
    hlen = struct.unpack("<I", data[12:16])[0]
    meta = json.loads(data[16 : 16 + hlen])
    change(meta)
    header = json.dumps(meta).encode()
    old_start = -(-(20 + hlen) // 64) * 64
    start = 20 + len(header)
    pad = b"\0" * (-(-start // 64) * 64 - start)
    head = data[:8] + struct.pack("<II", 1, len(header)) + header
    return head + struct.pack("<I", zlib.crc32(header)) + pad + data[old_start:]


def test_inconsistent_nested_headers_rejected(indexes):
    idmap = pqfast.serialize_index(indexes[0][6]).tobytes()
    unchanged = pqfast.deserialize_index(with_header(idmap, lambda meta: None))
    same_results(unchanged, indexes[0][6], indexes[1])

    def bogus_inner(meta):
        meta["params"]["index"]["type"] = "Bogus"

    def too_deep(meta):
        for _ in range(20):
            meta["params"] = {"index": {"type": meta["type"], "params": meta["params"]}}

    def short_id_map(meta):
        next(e for e in meta["arrays"] if e["name"] == "id_map")["shape"] = [10]

    def bad_transform(meta):
        meta["params"]["transform"]["d_out"] = 1000

    opq = pqfast.serialize_index(indexes[0][5]).tobytes()
    cases = [(idmap, bogus_inner, "unknown index type 'Bogus'"),
             (idmap, too_deep, "nested too deeply"),
             (idmap, short_id_map, "id_map"),
             (opq, bad_transform, "d2")]  # fmt: skip
    for data, change, message in cases:
        with pytest.raises(pqfast.CorruptIndexError, match=message):
            pqfast.deserialize_index(with_header(data, change))


def test_mmapped_idmap_can_change_without_touching_the_file(indexes, tmp_path):
    all_indexes, xq = indexes
    idmap = all_indexes[6]
    path = tmp_path / "idmap.pqf"
    pqfast.write_index(idmap, str(path))
    before = path.read_bytes()
    mapped = pqfast.read_index(str(path), pqfast.IO_FLAG_MMAP)
    base = mapped.id_map
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert base is not None  # the ids are mapped, not read
    assert mapped.remove_ids(np.arange(50, 150) * 7 + 2) == 100
    mapped.add_with_ids(xq, np.arange(len(xq)) + 10**6)
    assert mapped.ntotal == idmap.ntotal - 100 + len(xq)
    assert path.read_bytes() == before
    same_results(idmap, pqfast.read_index(str(path)), xq)


def test_unsupported_index_type(tmp_path):
    with pytest.raises(TypeError, match="does not support"):
        pqfast.write_index(object(), str(tmp_path / "x"))


def test_ivfflat_round_trip(embeddings, tmp_path):
    x = embeddings[:2000]
    index = pqfast.IndexIVFFlat(pqfast.IndexFlatL2(384), 384, 16)
    index.train(x)
    index.add(x)
    index.nprobe = 3
    path = tmp_path / "ivfflat.pqf"
    pqfast.write_index(index, str(path))
    for flags in (0, pqfast.IO_FLAG_MMAP):
        same_results(index, pqfast.read_index(str(path), flags), embeddings[5000:5010])
    same_results(index, pickle.loads(pickle.dumps(index)), embeddings[5000:5010])
