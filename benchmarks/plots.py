"""matplotlib figures: recall/QPS Pareto curves, memory vs recall, train time, scaling.

Every function takes the run's records and returns the PNG paths it wrote;
`make_plots` returns [] when matplotlib is not installed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.report import display_k
from benchmarks.runners import Record

Groups = dict[tuple, list[Record]]


def _slug(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(map(str, parts))).strip("-")


def _group(records: Iterable[Record], key: Callable[[Record], Any]) -> Groups:
    out: Groups = defaultdict(list)
    for r in records:
        out[key(r)].append(r)
    return out


def _curve(r: Record) -> str:
    return f"{r['library']} {r['index']}"


LIBRARY_COLORS = {"pqfast": "tab:blue", "faiss": "tab:orange", "nanopq": "tab:green"}
INDEX_MARKERS = {
    "IVFPQ": ("o", "-"),
    "IVFPQfs": ("^", "-"),
    "PQ": ("s", "--"),
    "PQfs": ("D", "-."),
    "Flat": ("*", ":"),
}


def _style(r: Record) -> dict[str, str | None]:
    """Colour by library, marker and line style by index type, in every plot."""
    marker, line = INDEX_MARKERS.get(r["index"], ("^", "-."))
    return {
        "color": LIBRARY_COLORS.get(r["library"]),
        "marker": marker,
        "linestyle": line,
    }


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(recall, qps) points not beaten on both axes, by ascending recall."""
    front: list[tuple[float, float]] = []
    for rec, qps in sorted(points, key=lambda p: (-p[1], -p[0])):
        if not front or rec > front[-1][0]:
            front.append((rec, qps))
    return sorted(front)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_plots(plt: Any, records: list[Record], out: Path, prefix: str) -> list[Path]:
    """Recall@k vs batch QPS (log), one Pareto curve per library and index type."""
    paths = []
    for (ds, metric, threads), group in _group(
        records, lambda r: (r["dataset"], r["metric"], r["threads"])
    ).items():
        k = display_k(group)
        fig, ax = plt.subplots(figsize=(7, 5))
        for label, curve in sorted(
            _group([r for r in group if r["k"] == k], _curve).items()
        ):
            pts = [
                (r[f"recall@{min(k, 10)}"], r["search_batch_qps"])
                for r in curve
                if r[f"recall@{min(k, 10)}"] is not None and r["search_batch_qps"]
            ]
            if not pts:
                continue
            line = ax.plot(*zip(*pareto(pts)), label=label, **_style(curve[0]))[0]
            ax.scatter(*zip(*pts), s=10, alpha=0.3, color=line.get_color())
        ax.set(
            yscale="log",
            xlabel=f"recall@{min(k, 10)} (k={k})",
            ylabel="queries / s",
            title=f"{ds} {metric}, {threads} thread(s)",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(
            _save(
                plt,
                fig,
                out / f"{prefix}-pareto-{_slug(ds, metric, f't{threads}')}.png",
            )
        )
    return paths


def memory_plots(plt: Any, records: list[Record], out: Path, prefix: str) -> list[Path]:
    """Bytes per vector vs the best recall@k each index configuration reaches."""
    paths = []
    for (ds, metric), group in _group(
        records, lambda r: (r["dataset"], r["metric"])
    ).items():
        k = display_k(group)
        key = f"recall@{min(k, 10)}"
        fig, ax = plt.subplots(figsize=(7, 5))
        for label, curve in sorted(
            _group([r for r in group if r["k"] == k], _curve).items()
        ):
            best: dict[tuple, tuple[float, float]] = {}
            for r in curve:
                if r[key] is None:
                    continue
                cfg = (r["M"], r["nbits"], r["nlist"])
                best[cfg] = max(
                    best.get(cfg, (0.0, 0.0)), (r[key], r["bytes_per_vector"])
                )
            if best:
                style = _style(curve[0])
                ax.scatter(
                    *zip(*best.values()),
                    label=label,
                    color=style["color"],
                    marker=style["marker"],
                )
        ax.set(
            yscale="log",
            xlabel=f"best {key} over nprobe",
            ylabel="index bytes / vector",
            title=f"{ds} {metric}: memory vs recall",
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_save(plt, fig, out / f"{prefix}-memory-{_slug(ds, metric)}.png"))
    return paths


def train_plots(plt: Any, records: list[Record], out: Path, prefix: str) -> list[Path]:
    """Train seconds per index configuration and library, one panel per thread count."""
    paths = []
    for ds, group in _group(records, lambda r: r["dataset"]).items():
        group = [r for r in group if r["index"] != "Flat"]
        threads = sorted({r["threads"] for r in group})
        if not threads:
            continue
        fig, axes = plt.subplots(
            len(threads), 1, figsize=(9, 3.2 * len(threads)), squeeze=False
        )
        for ax, t in zip(axes[:, 0], threads):
            cells = {
                (
                    f"{r['index']} {r['metric']} {r['M']}x{r['nbits']}"
                    + (f" L{r['nlist']}" if r["nlist"] else ""),
                    r["library"],
                ): r["train_s"]
                for r in group
                if r["threads"] == t
            }
            configs = sorted({c for c, _ in cells})
            libs = sorted({lib for _, lib in cells})
            width = 0.8 / len(libs)
            for j, lib in enumerate(libs):
                xs = [i + j * width for i, c in enumerate(configs) if (c, lib) in cells]
                ax.bar(
                    xs,
                    [cells[(c, lib)] for c in configs if (c, lib) in cells],
                    width,
                    label=lib,
                    color=LIBRARY_COLORS.get(lib),
                )
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(configs))])
            ax.set_xticklabels(configs, rotation=30, ha="right", fontsize=7)
            ax.set(ylabel="train s", title=f"{ds}: train time, {t} thread(s)")
            ax.legend(fontsize=8)
        paths.append(_save(plt, fig, out / f"{prefix}-train-{_slug(ds)}.png"))
    return paths


SCALING_PANELS = (
    ("train_s", "train s"),
    ("add_s", "add s"),
    ("search_batch_qps", "batch queries / s"),
    ("index_bytes", "index bytes"),
)


def scaling_plots(
    plt: Any, records: list[Record], out: Path, prefix: str
) -> list[Path]:
    """Train/add time, batch QPS and memory vs n, per data family with several n."""
    paths = []
    for family, group in _group(records, lambda r: r["family"]).items():
        if len({r["n"] for r in group}) < 2:
            continue
        top = max(r["threads"] for r in group)
        group = [r for r in group if r["threads"] == top]
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        for ax, (key, label) in zip(axes.flat, SCALING_PANELS):
            for name, curve in sorted(_group(group, _curve).items()):
                values: dict[int, list[float]] = defaultdict(list)
                for r in curve:
                    if r[key] is not None:
                        values[r["n"]].append(r[key])
                best = (
                    max if key == "search_batch_qps" else min
                )  # over nprobe/k settings
                if values:
                    ax.plot(
                        *zip(*sorted((n, best(v)) for n, v in values.items())),
                        label=name,
                        **_style(curve[0]),
                    )
            ax.set(xscale="log", yscale="log", xlabel="n", ylabel=label)
            ax.grid(True, which="both", alpha=0.3)
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"{family}: scaling with n ({top} threads)")
        paths.append(_save(plt, fig, out / f"{prefix}-{_slug(family)}-vs-n.png"))
    return paths


def make_plots(records: list[Record], out: Path, prefix: str) -> list[Path]:
    """Write every applicable figure; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    scaling = [r for r in records if r["mode"] == "scaling"]
    sweep = [r for r in records if r["mode"] != "scaling"]
    paths = [
        *pareto_plots(plt, sweep, out, prefix),
        *memory_plots(plt, sweep, out, prefix),
        *train_plots(plt, sweep, out, prefix),
        *scaling_plots(plt, scaling, out, prefix),
    ]
    return paths
