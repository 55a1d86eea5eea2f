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
from benchmarks.equal_recall import (  # noqa: E402
    equal_recall_ratios,
    equal_recall_summary,
    summary_lines,
)
from benchmarks.groundtruth import exact_knn, ground_truth, recall  # noqa: E402
from benchmarks.libraries import load_libraries  # noqa: E402
from benchmarks.plots import pareto  # noqa: E402
from benchmarks.report import rerender, terminal_report  # noqa: E402
from benchmarks.runners import Results  # noqa: E402

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


def _rec(
    library: str,
    recall: float,
    qps: float,
    *,
    index: str = "IVFPQfs",
    nprobe: int | None = 1,
    k: int = 10,
    threads: int = 1,
    single: float | None = None,
) -> dict:
    """A minimal record: only the fields the equal-recall comparison reads."""
    return {
        "dataset": "toy",
        "metric": "l2",
        "library": library,
        "index": index,
        "M": None if index == "Flat" else 16,
        "nbits": None if index == "Flat" else 4,
        "nlist": 64 if index.startswith("IVF") else None,
        "nprobe": nprobe,
        "k": k,
        "threads": threads,
        "recall@1": None,
        "recall@10": recall if k == 10 else None,
        "recall@100": recall if k == 100 else None,
        "search_batch_qps": qps,
        "search_single_qps": qps if single is None else single,
    }


def _ivf_group(threads: int = 1) -> list[dict]:
    """pqfast slower at every nprobe, more accurate; only it reaches 0.7 and 0.9."""
    pq = [(1, 0.5, 80.0), (2, 0.7, 60.0), (4, 0.9, 30.0)]
    fa = [(1, 0.4, 100.0), (2, 0.5, 75.0), (4, 0.6, 40.0)]
    return [
        _rec("pqfast", r, q, nprobe=n, threads=threads, single=2 * q) for n, r, q in pq
    ] + [_rec("faiss", r, q, nprobe=n, threads=threads) for n, r, q in fa]


def test_equal_recall_beats_equal_nprobe_by_hand() -> None:
    recs = _ivf_group()
    by_nprobe = {
        n: [r["search_batch_qps"] for r in recs if r["nprobe"] == n] for n in (1, 2, 4)
    }
    assert all(p < f for p, f in by_nprobe.values())  # slower at equal nprobe
    (g,) = equal_recall_ratios(recs)
    assert (g["index"], g["M"], g["nbits"], g["k"], g["threads"]) == (
        "IVFPQfs",
        16,
        4,
        10,
        1,
    )
    assert g["recall_key"] == "recall@10"
    assert g["max_recall"] == {"pqfast": 0.9, "faiss": 0.6}
    assert g["points"] == {"pqfast": 3, "faiss": 3}
    batch = g["search_batch"]
    # levels 0.7 and 0.9 only pqfast reaches: no ratio there
    assert batch["levels"] == [0.4, 0.5, 0.6]
    # 0.4: 80 / 100; 0.5: 80 / 75; 0.6: pqfast's 0.7 point (60) / faiss's 40
    assert batch["ratios"] == pytest.approx([0.8, 80 / 75, 1.5])
    assert batch["min"] == pytest.approx(0.8)
    assert batch["geomean"] == pytest.approx((0.8 * 80 / 75 * 1.5) ** (1 / 3))
    single = g["search_single"]  # pqfast's single-query QPS doubled
    assert single["ratios"] == pytest.approx([1.6, 160 / 75, 3.0])


def test_equal_recall_when_faiss_recall_falls_with_nprobe() -> None:
    # faiss's best recall is at its fastest point, which then serves every level
    recs = [
        _rec("faiss", 0.30, 100.0, nprobe=1),
        _rec("faiss", 0.25, 80.0, nprobe=2),
        _rec("faiss", 0.20, 60.0, nprobe=4),
        _rec("pqfast", 0.32, 70.0, nprobe=1),
        _rec("pqfast", 0.35, 50.0, nprobe=2),
    ]
    (g,) = equal_recall_ratios(recs)
    assert g["search_batch"]["levels"] == [0.20, 0.25, 0.30]
    assert g["search_batch"]["ratios"] == pytest.approx([0.7, 0.7, 0.7])
    assert g["max_recall"] == {"pqfast": 0.35, "faiss": 0.30}


def test_equal_recall_exhaustive_single_points() -> None:
    recs = [
        # PQ: faiss more accurate, the one level is pqfast's recall
        _rec("pqfast", 0.8, 50.0, index="PQ", nprobe=None),
        _rec("faiss", 0.9, 100.0, index="PQ", nprobe=None),
        _rec("nanopq", 0.95, 1000.0, index="PQ", nprobe=None),  # not compared
        # Flat: both exact
        _rec("pqfast", 1.0, 30.0, index="Flat", nprobe=None),
        _rec("faiss", 1.0, 20.0, index="Flat", nprobe=None),
        # only pqfast: left out
        _rec("pqfast", 0.5, 10.0, index="PQfs", nprobe=None),
    ]
    groups = equal_recall_ratios(recs)
    assert [g["index"] for g in groups] == ["Flat", "PQ"]
    flat, pq = groups
    assert flat["search_batch"]["levels"] == [1.0]
    assert flat["search_batch"]["ratios"] == pytest.approx([1.5])
    assert pq["search_batch"]["levels"] == [0.8]
    assert pq["search_batch"]["ratios"] == pytest.approx([0.5])
    assert pq["max_recall"] == {"pqfast": 0.8, "faiss": 0.9}


def test_equal_recall_groups_and_summary() -> None:
    recs = _ivf_group(threads=1) + _ivf_group(threads=2)
    # a second k at 1 thread: own group, recall@100
    recs += [
        _rec("pqfast", 0.6, 50.0, k=100, nprobe=1),
        _rec("faiss", 0.6, 100.0, k=100, nprobe=1),
    ]
    # k without a measured recall@k: ignored
    recs += [_rec("pqfast", 0.6, 50.0, k=5), _rec("faiss", 0.6, 100.0, k=5)]
    groups = equal_recall_ratios(recs)
    assert [(g["k"], g["threads"]) for g in groups] == [(10, 1), (10, 2), (100, 1)]
    assert groups[2]["recall_key"] == "recall@100"
    summary = equal_recall_summary(groups)
    assert [(s["index"], s["threads"], s["groups"]) for s in summary] == [
        ("IVFPQfs", 1, 2),
        ("IVFPQfs", 2, 1),
    ]
    one = (0.8 * 80 / 75 * 1.5) ** (1 / 3)
    assert summary[0]["search_batch"]["geomean"] == pytest.approx((one * 0.5) ** 0.5)
    assert summary[0]["search_batch"]["min"] == pytest.approx(0.5)
    assert summary[0]["levels"] == 4
    assert summary[1]["search_batch"]["geomean"] == pytest.approx(one)
    lines = summary_lines(groups)
    assert lines[1] == (
        f"IVFPQfs threads=2: search_batch {one:.2f}x (min 0.80x), "
        f"search_single {2 * one:.2f}x (min 1.60x) [1 groups, 3 levels]"
    )


def test_report_has_equal_recall_section(
    quick_run: tuple[Path, dict], tmp_path: Path
) -> None:
    pytest.importorskip("faiss")
    out, doc = quick_run
    report = (out / "report-quick.md").read_text()
    assert "## pqfast vs faiss at equal recall" in report
    assert "R@k" in report and "max R@k pqfast" in report
    again = rerender(out / "results-quick.json", tmp_path / "again.md").read_text()
    assert "## pqfast vs faiss at equal recall" in again
    assert "re-rendered from `results-quick.json`" in again
    assert doc["meta"]["command"].startswith("python -m benchmarks --quick")
    text = terminal_report(Results(doc["meta"], doc["records"], doc["notes"]))
    lines = summary_lines(equal_recall_ratios(doc["records"]))
    assert lines and "at equal recall" in text
    for line in lines:
        assert f"- {line}" in report and f"- {line}" in again and line in text
