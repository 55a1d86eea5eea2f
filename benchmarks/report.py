"""Result tables (terminal and markdown), the speedup summary, JSON and the report."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.runners import Record, Results


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
    if results.notes:
        text += ["", "notes:", *(f"  {n}" for n in results.notes)]
    return "\n".join(text)


def write_json(results: Results, path: Path) -> None:
    """meta, notes and every record, as one JSON document."""
    doc: dict[str, Any] = {
        "meta": results.meta,
        "notes": results.notes,
        "records": results.records,
    }
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n", encoding="utf-8")


def write_markdown(
    results: Results, path: Path, plots: list[Path], command: str
) -> None:
    """A markdown report: machine, versions, command, summary, table and plots."""
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
        "",
    ]
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
