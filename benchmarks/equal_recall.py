"""pqfast vs faiss throughput at equal recall, from the benchmark records.

The per-record ratios (`speedup_vs_faiss`) compare the libraries at the same
parameters (nprobe, k).  Where one library's results are more accurate at the
same nprobe, as pqfast's fast scan (exact 4-bit ADC distances) is against
faiss's (8-bit quantized tables), that is not the comparison a user makes:
they pick the fastest setting that reaches the recall they need.  This module
compares each library's recall/QPS Pareto frontier at the recall levels both
reach.

Definition (also stated in the report):

* A group is one (dataset, index, metric, M, nbits, k, threads); its points
  are the records of one library in it (every nprobe and nlist measured).
* Recall is R@k, the record's ``recall@{k}``: the share of the true k nearest
  among the k results.
* Levels are the distinct recalls of both libraries' points that both reach
  (r <= each library's highest recall).  At a level r, QPS_lib(r) is the best
  QPS among that library's points with recall >= r; the ratio is
  QPS_pqfast(r) / QPS_faiss(r).  No interpolation, no level left out.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from benchmarks.runners import Record

GROUP_FIELDS: tuple[str, ...] = (
    "dataset",
    "index",
    "metric",
    "M",
    "nbits",
    "k",
    "threads",
)
"""Record fields that define a group; points differ only in nprobe and nlist."""

QPS_KINDS: dict[str, str] = {
    "search_batch": "search_batch_qps",
    "search_single": "search_single_qps",
}
"""Summary name -> record field of the throughputs compared."""

LIBRARIES: tuple[str, str] = ("pqfast", "faiss")


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(map(math.log, xs)) / len(xs))


def best_qps_at(points: list[tuple[float, float]], level: float) -> float | None:
    """The highest QPS among (recall, qps) points with recall >= `level`.

    Parameters
    ----------
    points
        (recall, qps) pairs of one library in one group.
    level
        The recall that a point must reach.

    Returns
    -------
    float or None
        The best QPS, or None when no point reaches `level`.
    """
    qps = [q for r, q in points if r >= level]
    return max(qps) if qps else None


def _points(records: list[Record], qps_key: str) -> list[tuple[float, float]]:
    """(R@k, qps) of the records that have both figures."""
    out = []
    for r in records:
        rec, qps = r.get(f"recall@{r['k']}"), r.get(qps_key)
        if rec is not None and qps:
            out.append((float(rec), float(qps)))
    return out


def _compare(
    ours: list[tuple[float, float]], theirs: list[tuple[float, float]]
) -> dict[str, Any]:
    """Ratios of best QPS at every recall level both point sets reach."""
    top = min(max(r for r, _ in ours), max(r for r, _ in theirs))
    levels = sorted({r for r, _ in ours + theirs if r <= top})
    ratios = []
    for level in levels:
        q_ours, q_theirs = best_qps_at(ours, level), best_qps_at(theirs, level)
        assert q_ours is not None and q_theirs is not None  # level <= both maxima
        ratios.append(q_ours / q_theirs)
    return {
        "levels": levels,
        "ratios": ratios,
        "geomean": _geomean(ratios),
        "min": min(ratios),
    }


def equal_recall_ratios(records: list[Record]) -> list[dict[str, Any]]:
    """pqfast/faiss QPS ratios at equal R@k, one entry per group.

    Parameters
    ----------
    records
        Benchmark records (`benchmarks.runners._record` schema).  Records of
        other libraries, and records without R@k (k not in 1, 10, 100) or
        without a QPS figure, are ignored.

    Returns
    -------
    list of dict
        One entry per group (the `GROUP_FIELDS` values) where both pqfast and
        faiss have points, sorted by group.  Besides the group fields, each
        has ``recall_key`` (``"recall@{k}"``), ``max_recall`` (library ->
        highest R@k among its points), ``points`` (library -> number of
        points) and, per `QPS_KINDS` name (``"search_batch"``,
        ``"search_single"``), a dict with ``levels`` (the recall levels both
        libraries reach, ascending), ``ratios`` (QPS_pqfast / QPS_faiss at
        each level, where QPS_lib(r) is the best QPS among the library's
        points with R@k >= r), ``geomean`` and ``min`` of the ratios.

    Notes
    -----
    A group with one point per library (exhaustive indexes, IndexPQ) follows
    the same rule: its one level is the lower of the two recalls, and the
    ratio is the plain QPS ratio; no level exists only if a library has no
    usable point, and then the group is left out.
    """
    groups: dict[tuple, dict[str, list[Record]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in records:
        if r["library"] in LIBRARIES:
            groups[tuple(r[f] for f in GROUP_FIELDS)][r["library"]].append(r)
    out = []
    for key in sorted(groups, key=lambda g: tuple((v is None, v) for v in g)):
        by_lib = groups[key]
        entry: dict[str, Any] = dict(zip(GROUP_FIELDS, key))
        entry["recall_key"] = f"recall@{entry['k']}"
        usable = True
        for kind, qps_key in QPS_KINDS.items():
            pts = {lib: _points(by_lib.get(lib, []), qps_key) for lib in LIBRARIES}
            if not all(pts.values()):
                usable = False
                break
            entry[kind] = _compare(pts["pqfast"], pts["faiss"])
            if kind == "search_batch":
                entry["max_recall"] = {lib: max(r for r, _ in pts[lib]) for lib in pts}
                entry["points"] = {lib: len(pts[lib]) for lib in pts}
        if usable:
            out.append(entry)
    return out


def equal_recall_summary(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (index, threads): geomean over groups of their geomean ratios, and min.

    Parameters
    ----------
    groups
        The output of `equal_recall_ratios`.

    Returns
    -------
    list of dict
        Sorted by (index, threads); each has ``index``, ``threads``,
        ``groups`` (count), ``levels`` (total levels of the batch
        comparison) and, per `QPS_KINDS` name, ``{"geomean": ..., "min":
        ...}``: the geometric mean of the groups' geomean ratios (every
        group weighs the same) and the lowest ratio at any level of any
        group.
    """
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for g in groups:
        by[(g["index"], g["threads"])].append(g)
    out = []
    for (index, threads), gs in sorted(by.items()):
        entry: dict[str, Any] = {
            "index": index,
            "threads": threads,
            "groups": len(gs),
            "levels": sum(len(g["search_batch"]["levels"]) for g in gs),
        }
        for kind in QPS_KINDS:
            entry[kind] = {
                "geomean": _geomean([g[kind]["geomean"] for g in gs]),
                "min": min(g[kind]["min"] for g in gs),
            }
        out.append(entry)
    return out


def summary_lines(groups: list[dict[str, Any]]) -> list[str]:
    """One line per (index, threads), in the style of `report.speedup_summary`."""
    return [
        f"{s['index']} threads={s['threads']}: "
        + ", ".join(
            f"{kind} {s[kind]['geomean']:.2f}x (min {s[kind]['min']:.2f}x)"
            for kind in QPS_KINDS
        )
        + f" [{s['groups']} groups, {s['levels']} levels]"
        for s in equal_recall_summary(groups)
    ]
