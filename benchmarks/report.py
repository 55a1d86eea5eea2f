"""Result tables (terminal and markdown), the speedup summary, JSON and the report.

``python -m benchmarks.report results-<mode>.json`` re-renders the markdown
report from a results file, without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.equal_recall import equal_recall_ratios, summary_lines
from benchmarks.runners import Record, Results

EQUAL_RECALL_TEXT = (
    "Ratios pqfast / faiss (>1: pqfast faster) of the best QPS each library "
    "reaches at the same recall, R@k (share of the true k nearest among the k "
    "results, at the record's k). Per group (data, metric, index, M, nbits, k, "
    "threads), every R@k of either library's points (all nprobe and nlist) up "
    "to the lower of the two libraries' highest R@k is a level r, and QPS(r) is "
    "the library's best QPS among its points with R@k >= r: no interpolation, "
    "no level dropped, and exhaustive indexes (one point each) have one level, "
    "the lower recall. A line gives the geometric mean over its groups of each "
    "group's geometric mean over its levels, and the lowest ratio at any level."
)


def display_k(records: list[Record]) -> int:
    """The k shown when a run swept several: 10 if searched, else the smallest."""
    ks = {r["k"] for r in records}
    return 10 if 10 in ks else min(ks)


def _fmt(x: float | None, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def _qps(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _speed(rec: Record, key: str) -> str:
    s = rec["speedup_vs_faiss"]
    return "-" if not s or s.get(key) is None else f"{s[key]:.2f}x"


def _build(rec: Record) -> str:
    if rec["M"] is None:
        return ""
    return f"{rec['M']}x{rec['nbits']}" + (f" L{rec['nlist']}" if rec["nlist"] else "")


COLUMNS: list[tuple[str, Callable[[Record], str]]] = [
    ("data", lambda r: f"{r['dataset']} {r['metric']}"),
    ("index", lambda r: r["index"]),
    ("MxB nlist", _build),
    ("nprobe", lambda r: _fmt(r["nprobe"], "d")),
    ("k", lambda r: str(r["k"])),
    ("thr", lambda r: str(r["threads"])),
    (
        "library",
        lambda r: r["library"] + (" (scalar)" if r["variant"] == "NONE" else ""),
    ),
    ("train s", lambda r: _fmt(r["train_s"])),
    ("add vec/s", lambda r: _qps(r["add_vectors_per_s"])),
    ("QPS batch", lambda r: _qps(r["search_batch_qps"])),
    ("QPS 1-query", lambda r: _qps(r["search_single_qps"])),
    ("R@1", lambda r: _fmt(r["recall@1"], ".3f")),
    ("R@10", lambda r: _fmt(r["recall@10"], ".3f")),
    ("R@100", lambda r: _fmt(r["recall@100"], ".3f")),
    ("B/vec", lambda r: _fmt(r["bytes_per_vector"], ".4g")),
    ("vs faiss batch", lambda r: _speed(r, "search_batch")),
    ("vs faiss 1-query", lambda r: _speed(r, "search_single")),
]


def table(records: list[Record]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows, one row per record."""
    return [h for h, _ in COLUMNS], [[fn(r) for _, fn in COLUMNS] for r in records]


def render_text(headers: list[str], rows: list[list[str]]) -> str:
    """An aligned plain-text table (numbers right-aligned)."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    left = {0, 1, 2, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def render_markdown(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def speedup_summary(records: list[Record]) -> list[str]:
    """Geometric means of pqfast/faiss throughput ratios per index type and threads.

    Search ratios count once per (nprobe, k) point, build ratios once per
    index configuration.
    """
    groups: dict[tuple[str, int], dict[str, dict[tuple, float]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in records:
        s = r["speedup_vs_faiss"]
        if not s:
            continue
        config = (r["dataset"], r["metric"], r["M"], r["nbits"], r["nlist"])
        g = groups[(r["index"], r["threads"])]
        for key in ("train", "add"):
            if s[key]:
                g[key][config] = s[key]
        for key in ("search_batch", "search_single"):
            if s[key]:
                g[key][(*config, r["nprobe"], r["k"])] = s[key]
    lines = []
    for (kind, threads), g in sorted(groups.items()):
        parts = [
            f"{key} {math.exp(sum(map(math.log, v.values())) / len(v)):.2f}x"
            for key, v in g.items()
            if v
        ]
        lines.append(f"{kind} threads={threads}: " + ", ".join(parts))
    return lines


def terminal_report(results: Results) -> str:
    """The table (k = `display_k` rows only), the speedup summary and the notes."""
    text = []
    shown = results.records
    if len({r["k"] for r in shown}) > 1:
        k = display_k(shown)
        shown = [r for r in shown if r["k"] == k]
        text.append(f"(rows with k={k}; every k is in the JSON and markdown report)")
    text.append(render_text(*table(shown)))
    summary = speedup_summary(results.records)
    if summary:
        text += [
            "",
            "pqfast vs faiss, geometric mean of throughput ratios (>1: pqfast faster):",
            *(f"  {s}" for s in summary),
        ]
    equal = summary_lines(equal_recall_ratios(results.records))
    if equal:
        text += [
            "",
            "pqfast vs faiss at equal recall (R@k; best QPS reaching each level):",
            *(f"  {s}" for s in equal),
        ]
    if results.notes:
        text += ["", "notes:", *(f"  {n}" for n in results.notes)]
    return "\n".join(text)


EQUAL_RECALL_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("data", lambda g: f"{g['dataset']} {g['metric']}"),
    ("index", lambda g: g["index"]),
    ("MxB", lambda g: "" if g["M"] is None else f"{g['M']}x{g['nbits']}"),
    ("k", lambda g: str(g["k"])),
    ("thr", lambda g: str(g["threads"])),
    ("max R@k pqfast", lambda g: f"{g['max_recall']['pqfast']:.3f}"),
    ("max R@k faiss", lambda g: f"{g['max_recall']['faiss']:.3f}"),
    ("levels", lambda g: str(len(g["search_batch"]["levels"]))),
    ("batch geomean", lambda g: f"{g['search_batch']['geomean']:.2f}x"),
    ("batch min", lambda g: f"{g['search_batch']['min']:.2f}x"),
    ("1-query geomean", lambda g: f"{g['search_single']['geomean']:.2f}x"),
    ("1-query min", lambda g: f"{g['search_single']['min']:.2f}x"),
]


def equal_recall_table(
    groups: list[dict[str, Any]],
) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the per-group equal-recall comparison."""
    return [h for h, _ in EQUAL_RECALL_COLUMNS], [
        [fn(g) for _, fn in EQUAL_RECALL_COLUMNS] for g in groups
    ]


def write_json(results: Results, path: Path) -> None:
    """meta, notes and every record, as one JSON document."""
    doc: dict[str, Any] = {
        "meta": results.meta,
        "notes": results.notes,
        "records": results.records,
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")


def write_markdown(
    results: Results,
    path: Path,
    plots: list[Path],
    command: str,
    rendered_from: str | None = None,
) -> None:
    """A markdown report: machine, versions, command, summaries, tables and plots.

    `rendered_from` names the results file when the report is re-rendered
    from one rather than written by the run.
    """
    m = results.meta
    lines = [
        f"# pqfast benchmark ({m['settings']['mode']})",
        "",
        f"- date: {m['date']}",
        f"- CPU: {m['cpu']} ({m['cores']} cores available)",
        f"- platform: {m['platform']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- faiss SIMD level: {m['faiss_simd_level']}",
        f"- command: `{command}`",
    ]
    if rendered_from:
        lines.append(
            f"- report re-rendered from `{rendered_from}` by "
            "`python -m benchmarks.report` (no new measurement)"
        )
    lines.append("")
    summary = speedup_summary(results.records)
    if summary:
        lines += [
            "## pqfast vs faiss",
            "",
            "Geometric mean of per-configuration throughput ratios "
            "(>1: pqfast faster), each the median of interleaved rounds.",
            "",
            *(f"- {s}" for s in summary),
            "",
        ]
    groups = equal_recall_ratios(results.records)
    if groups:
        lines += [
            "## pqfast vs faiss at equal recall",
            "",
            EQUAL_RECALL_TEXT,
            "",
            *(f"- {s}" for s in summary_lines(groups)),
            "",
            "Per group. max R@k is the highest recall each library reaches; "
            "above the lower of the two only one library has points, and no "
            "ratio is taken. The minimum is the worst single level; near the "
            "lower ceiling a library may need its slowest point to reach it.",
            "",
            render_markdown(*equal_recall_table(groups)),
            "",
        ]
    if plots:
        lines += ["## Plots", ""]
        lines += [
            f"![{p.stem}]({p.relative_to(path.parent).as_posix()})" for p in plots
        ]
        lines.append("")
    lines += ["## Results", "", render_markdown(*table(results.records)), ""]
    if results.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in results.notes), ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _linked_plots(report: Path) -> list[Path]:
    """The images an existing markdown report links to, in its order."""
    if not report.exists():
        return []
    links = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", report.read_text(), re.M)
    return [report.parent / link for link in links if "://" not in link]


def _command_of(report: Path) -> str | None:
    """The command line an existing markdown report states."""
    if not report.exists():
        return None
    found = re.search(r"^- command: `(.*)`$", report.read_text(), re.M)
    return found.group(1) if found else None


def rerender(json_path: Path, out: Path | None = None) -> Path:
    """Write the markdown report of a results JSON file again, measuring nothing.

    Parameters
    ----------
    json_path
        A ``results-<mode>.json`` written by ``python -m benchmarks``.
    out
        The report to write; default ``report-<mode>.md`` next to the JSON.

    Returns
    -------
    Path
        The report written.  Plots are not redrawn: the report links the
        images its previous version linked (those still present), or else
        every ``<mode>-*.png`` next to it.  The command is the one in the
        JSON's meta, or else the one the previous report states.
    """
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    results = Results(doc["meta"], doc["records"], doc["notes"])
    mode = results.meta["settings"]["mode"]
    out = out or json_path.parent / f"report-{mode}.md"
    plots = [p for p in _linked_plots(out) if p.exists()]
    if not plots and not out.exists():
        plots = sorted(out.parent.glob(f"{mode}-*.png"))
    command = results.meta.get("command") or _command_of(out) or "(not recorded)"
    write_markdown(results, out, plots, command, rendered_from=json_path.name)
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.report RESULTS.json [--out REPORT.md]``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Re-render the markdown report from a results JSON file "
        "(no benchmark is run, no plot redrawn).",
    )
    p.add_argument("results", type=Path, help="results-<mode>.json")
    p.add_argument(
        "--out", type=Path, help="report to write (default: report-<mode>.md beside it)"
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"wrote {rerender(args.results, args.out)}")


if __name__ == "__main__":
    main()
