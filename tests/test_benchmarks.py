"""End-to-end check of the benchmark tool on tiny synthetic data (no timing checks)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ is not installed: reach it from the repository root, appended so
# that an installed pqfast still takes precedence over the source folder.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.append(ROOT)

from benchmarks import datasets  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402
from benchmarks.groundtruth import exact_knn, ground_truth, recall  # noqa: E402
from benchmarks.libraries import load_libraries  # noqa: E402
from benchmarks.plots import pareto  # noqa: E402

RECORD_KEYS = {
    "dataset",
    "n",
    "d",
    "nq",
    "metric",
    "library",
    "library_version",
    "index",
    "M",
    "nbits",
    "nlist",
    "nprobe",
    "k",
    "threads",
    "train_s",
    "add_s",
    "add_vectors_per_s",
    "search_batch_qps",
    "search_single_qps",
    "recall@1",
    "recall@10",
    "recall@100",
    "1-recall@1",
    "index_bytes",
    "serialized_bytes",
    "peak_rss_mb",
    "speedup_vs_faiss",
    "cpu",
    "date",
    "versions",
    "mode",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench")
    main(
        [
            "--quick",
            "--synthetic",
            "2000",
            "--dim",
            "64",
            "--nq",
            "100",
            "--nprobe",
            "1,16",
            "--single-queries",
            "20",
            "--build-repeats",
            "1",
            "--repeats",
            "2",
            "--out",
            str(out),
            "--cache",
            str(out / "cache"),
            "--no-progress",
        ]
    )
    return out, json.loads((out / "results-quick.json").read_text())


def test_json_schema(quick_run: tuple[Path, dict]) -> None:
    out, doc = quick_run
    assert {"meta", "notes", "records"} <= doc.keys()
    assert {"date", "cpu", "cores", "versions", "settings"} <= doc["meta"].keys()
    assert doc["records"], "no records written"
    for rec in doc["records"]:
        assert RECORD_KEYS <= rec.keys(), RECORD_KEYS - rec.keys()
    kinds = {(r["library"], r["index"]) for r in doc["records"]}
    assert ("pqfast", "IVFPQ") in kinds and ("pqfast", "PQ") in kinds
    assert {r["metric"] for r in doc["records"]} == {"l2", "ip"}
    assert (out / "report-quick.md").read_text().startswith("# pqfast benchmark")


def test_recall_in_unit_interval(quick_run: tuple[Path, dict]) -> None:
    for rec in quick_run[1]["records"]:
        values = [v for key, v in rec.items() if "recall@" in key and v is not None]
        assert values and all(0.0 <= v <= 1.0 for v in values)


def test_exact_search_recall_is_one(quick_run: tuple[Path, dict]) -> None:
    exact = [r for r in quick_run[1]["records"] if r["index"] == "Flat"]
    assert exact
    for rec in exact:
        assert rec["recall@1"] == 1.0 and rec["recall@10"] == 1.0


def test_speedups_pair_pqfast_with_faiss(quick_run: tuple[Path, dict]) -> None:
    pytest.importorskip("faiss")
    for rec in quick_run[1]["records"]:
        if rec["library"] == "pqfast":
            assert rec["speedup_vs_faiss"]["search_batch"] > 0
        else:
            assert rec["speedup_vs_faiss"] is None


def test_plots_written(quick_run: tuple[Path, dict]) -> None:
    pytest.importorskip("matplotlib")
    out = quick_run[0]
    assert list(out.glob("quick-pareto-*.png")) and list(out.glob("quick-memory-*.png"))
    assert "![" in (out / "report-quick.md").read_text()


def test_ground_truth_is_cached(quick_run: tuple[Path, dict]) -> None:
    assert len(list((quick_run[0] / "cache").glob("gt-*.npy"))) == 2  # l2 and ip


def test_recall_counts_ties_and_misses(tmp_path: Path) -> None:
    ds = datasets.synthetic(300, 8, nq=20, seed=3)
    truth = ground_truth(ds, "l2", tmp_path)
    assert truth.source == "computed"
    assert ground_truth(ds, "l2", tmp_path).source == "cache"
    perfect = recall(truth.ids[:, :10], truth, ds, "l2")
    assert perfect["recall@10"] == 1.0 and perfect["recall@100"] is None
    missing = recall(np.full((20, 10), -1), truth, ds, "l2")
    assert missing["recall@10"] == 0.0 and missing["1-recall@10"] == 0.0


def test_exact_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    xb, xq = (
        rng.normal(size=(200, 16)).astype(np.float32),
        rng.normal(size=(5, 16)).astype(np.float32),
    )
    d2 = ((xq[:, None, :] - xb[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(exact_knn(xb, xq, 5, "l2"), np.argsort(d2, 1)[:, :5])
    np.testing.assert_array_equal(
        exact_knn(xb, xq, 5, "ip"), np.argsort(-xq @ xb.T, 1)[:, :5]
    )


def test_file_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ds = datasets.load_file(tmp_path / "x.npy", nq=10)
    np.testing.assert_array_equal(ds.xq, x[:10])
    np.testing.assert_array_equal(ds.xb, x[10:])

    def write_vecs(path: Path, a: np.ndarray) -> None:
        head = np.full((a.shape[0], 1), a.shape[1], np.int32).view(
            a.dtype if a.itemsize == 4 else np.uint8
        )
        np.hstack([head, a]).tofile(path)

    write_vecs(tmp_path / "t_base.fvecs", x)
    write_vecs(tmp_path / "t_query.fvecs", x[:5])
    gt = np.arange(25, dtype=np.int32).reshape(5, 5)
    write_vecs(tmp_path / "t_groundtruth.ivecs", gt)
    ds = datasets.load_file(tmp_path / "t_base.fvecs")
    assert ds.name == "t" and ds.n == 60 and ds.nq == 5
    np.testing.assert_array_equal(ds.gt["l2"], gt)
    b = (x * 10 + 128).clip(0, 255).astype(np.uint8)
    write_vecs(tmp_path / "b.bvecs", b)
    np.testing.assert_array_equal(datasets.read_vecs(tmp_path / "b.bvecs"), b)


def test_hdf5_angular_is_normalized_inner_product(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(2)
    with h5py.File(tmp_path / "toy-angular.hdf5", "w") as f:
        f.attrs["distance"] = "angular"
        f["train"] = rng.normal(size=(50, 4)).astype(np.float32)
        f["test"] = rng.normal(size=(3, 4)).astype(np.float32)
        f["neighbors"] = np.zeros((3, 10), np.int32)
    ds = datasets.load_file(tmp_path / "toy-angular.hdf5")
    assert ds.metrics == ("ip",) and "ip" in ds.gt
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1.0, rtol=1e-5)


def test_missing_library_is_skipped() -> None:
    libs, skipped = load_libraries(["pqfast", "no_such_library"], faiss_scalar=False)
    assert [lib.name for lib in libs] == ["pqfast"]
    assert skipped and "no_such_library" in skipped[0]


def test_pareto_front() -> None:
    pts = [(0.5, 100.0), (0.6, 50.0), (0.55, 40.0), (0.9, 10.0), (0.4, 90.0)]
    assert pareto(pts) == [(0.5, 100.0), (0.6, 50.0), (0.9, 10.0)]
