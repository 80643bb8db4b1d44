"""Rendering of a comparison: the terminal text, the Markdown report, the plot, and the
files `pipeline compare` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from core.fileio import write_text_atomic, write_with
from pipeline.stages.compare.report import (Comparison, Matrix, PrecisionGain, SpaceGroup, _acc, _column, _fastest, _ms,
                                            _pct, precision_of)


def to_text(c: Comparison) -> str:
    """Compact terminal view: the cross matrix, accuracies, the layer tables, the summary."""
    parts = ["predicted latency (ms): rows = architecture searched for, columns = table it is timed on",
             _grid(*_matrix_rows(c.labels, c.predicted)), MATRIX_LEGEND]
    if c.measured is not None:
        parts += ["measured latency (ms), end to end on this machine:", _grid(*_matrix_rows(c.labels, c.measured))]
    parts.append("test accuracy: " + ", ".join(f"{lab} {_acc(a)}" for lab, a in zip(c.labels, c.accuracy)))
    for g in c.groups:
        parts += [_layers_title(g), _grid(*_layer_rows(c, g))]
    for gain in c.gains:
        parts += [_gain_title(c, gain), _grid(*_gain_rows(gain))]
    return "\n".join(parts + ["summary:"] + [f"  - {s}" for s in c.summary()])


def _gain_title(c: Comparison, g: PrecisionGain) -> str:
    wide, narrow = c.entries[g.wide], c.entries[g.narrow]
    return (f"speed-up per block, {narrow.label} ({precision_of(narrow.table)}) over {wide.label} "
            f"({precision_of(wide.table)}): time ratio, median over the block's layer shapes")


def _gain_rows(g: PrecisionGain) -> tuple[list[str], list[list[str]]]:
    return ["block", "speed-up", "shapes"], [[b, f"{x:.2f}x", str(n)] for b, x, n in g.by_block]


def to_markdown(c: Comparison, plot: str | None = None) -> str:
    """A report: the summary, the plot (a path relative to the report), and every table."""
    return _markdown(c, plot)


def write_outputs(comparison: Comparison, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write compare.md, compare.json and compare.png into `out_dir` (atomically each)."""
    out = Path(out_dir)
    paths = {"markdown": out / "compare.md", "json": out / "compare.json", "plot": out / "compare.png"}
    plot(comparison, paths["plot"])
    write_text_atomic(paths["json"], json.dumps(comparison.to_dict(), indent=2) + "\n")
    write_text_atomic(paths["markdown"], to_markdown(comparison, plot=paths["plot"].name))
    return paths




# ---------------------------------------------------------------------------- tables
MATRIX_LEGEND = "  (own) = searched for that table; +x% = vs own; * = fastest under that table"


def _cell(matrix: Matrix, i: int, j: int, fastest: int | None) -> str:
    v, own = matrix[i][j], matrix[j][j]
    if v is None:
        return "n/a"
    rel = "(own)" if i == j else (f"({_pct(v, own)})" if own is not None else "")
    return f"{_ms(v)} {rel}".strip() + (" *" if i == fastest else "")


def _matrix_rows(labels: list[str], matrix: Matrix) -> tuple[list[str], list[list[str]]]:
    fastest = [_fastest(matrix, j) for j in range(len(labels))]
    rows = [[lab, *(_cell(matrix, i, j, fastest[j]) for j in range(len(labels)))] for i, lab in enumerate(labels)]
    return ["searched for \\ timed on", *labels], rows


def _layers_title(g: SpaceGroup) -> str:
    diff = f"; they differ in {len(g.differing)} of {len(g.space.layers)} layers (*)" if len(g.members) > 1 else ""
    return f"blocks chosen per layer, {g.title}{diff}"


def _layer_rows(c: Comparison, g: SpaceGroup) -> tuple[list[str], list[list[str]]]:
    members = [c.entries[i] for i in g.members]
    rows = [[str(layer), shape.key, *(e.architecture.blocks[layer] for e in members),
             "*" if layer in g.differing else ""]
            for layer, shape in enumerate(g.space.layers)]
    return ["layer", "shape", *(e.label for e in members), ""], rows


def _preferred_rows(c: Comparison, g: SpaceGroup) -> tuple[list[str], list[list[str]]]:
    disagree = set(g.disagreeing_shapes())
    rows = [[_span(layers), key, *(f[layers[0]] for f in g.fastest), "*" if key in disagree else ""]
            for layers, key in g.shapes()]
    return ["layers", "shape", *(c.entries[j].label for j in g.tables), ""], rows


def _span(layers: list[int]) -> str:
    return ", ".join(map(str, layers))


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|").replace("*", "\\*") or " " for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def _entry_rows(c: Comparison) -> tuple[list[str], list[list[str]]]:
    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"
    rows = [[e.label, f"`{e.table_path}`", f"`{e.arch_path}`", e.architecture.space.name,
             _ms(c.predicted[i][i]), acc(a.inherited), acc(a.trained)]  # type: ignore[arg-type]
            for i, (e, a) in enumerate(zip(c.entries, c.accuracy))]
    return ["entry", "table", "architecture", "space", "own predicted ms", "inherited acc.", "trained acc."], rows


def _count_rows(c: Comparison, g: SpaceGroup) -> tuple[list[str], list[list[str]]]:
    counts = [c.block_counts(i) for i in g.members]
    rows = [[b, *(str(n.get(b, 0)) for n in counts)] for b in g.space.blocks if any(b in n for n in counts)]
    return ["block", *(c.entries[i].label for i in g.members)], rows


def _markdown(c: Comparison, plot: str | None) -> str:
    parts = ["# Architectures searched for different devices, compared", "",
             *(f"- {s}" for s in c.summary()), ""]
    if plot:
        parts += [f"![cross matrix and latencies per device]({plot})", ""]
    parts += ["## Entries", "", _md_table(*_entry_rows(c)), "",
              "## Predicted latency (ms): the cross matrix", "",
              "Rows: the architecture searched for that entry. Columns: the table it is timed with.", "",
              _md_table(*_matrix_rows(c.labels, c.predicted)), "", MATRIX_LEGEND.strip(), ""]
    if c.measured is not None:
        parts += ["## Measured latency (ms), end to end on this machine", "",
                  _md_table(*_matrix_rows(c.labels, c.measured)), "", "n/a: not measured (no runner for that device here, or the run failed: see the log).", ""]
    for g in c.groups:
        parts += [f"## Blocks chosen per layer, {g.title}", "",
                  f"\\* marks the {len(g.differing)} layer(s) where the architectures differ." if len(g.members) > 1
                  else "One architecture in this space: nothing to line it up with.", "",
                  _md_table(*_layer_rows(c, g)), "", "Blocks chosen, counted:", "", _md_table(*_count_rows(c, g)), ""]
        if g.tables:
            parts += [f"### Fastest candidate per layer shape, by table ({g.space.name})", "",
                      "\\* marks shapes where the tables disagree: there the devices prefer different blocks.", "",
                      _md_table(*_preferred_rows(c, g)), ""]
    for gain in c.gains:
        parts += [f"## {_gain_title(c, gain)[0].upper()}{_gain_title(c, gain)[1:]}", "", _md_table(*_gain_rows(gain)), ""]
    return "\n".join(parts)



# ---------------------------------------------------------------------------- plot
def plot(c: Comparison, path: str | os.PathLike) -> None:
    """A PNG: the cross matrix normalised per table, and latencies per device as grouped bars."""
    fig = figure(c)
    write_with(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def figure(c: Comparison) -> Any:
    """The plot's matplotlib Figure (what `plot` saves)."""
    # The object API with no pyplot: no global backend or figure state; savefig renders with Agg.
    from matplotlib.figure import Figure

    n = len(c.entries)
    fig = Figure(figsize=(5.0 + 2.6 * n, 1.8 + 1.1 * n), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.0, 1.3])
    _heatmap(fig, left, c)
    _bars(right, c)
    fig.suptitle("Architectures searched for each device, timed on every device")
    return fig


# The colour scale spans at least ×1.00 to ×1.10: where every cell is (nearly) ×1.00 a narrower
# one would paint rounding noise in full colour, and its ticks would all read ×1.00.
HEATMAP_MIN_SPAN = 0.1


def _relative(c: Comparison) -> Any:
    import numpy as np

    rel = np.full((len(c.entries),) * 2, np.nan)
    for j in range(len(c.entries)):
        col = [v for v in _column(c.predicted, j) if v is not None]
        lo = min(col)
        for i, v in enumerate(_column(c.predicted, j)):
            if v is not None:
                rel[i, j] = v / lo if lo > 0 else 1.0
    return rel


def _heatmap(fig: Any, ax: Any, c: Comparison) -> None:
    import matplotlib
    import numpy as np
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import StrMethodFormatter

    rel, n = _relative(c), len(c.entries)
    top = max(float(np.nanmax(rel)), 1.0 + HEATMAP_MIN_SPAN)
    cmap = matplotlib.colormaps["YlOrRd"].with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(rel), cmap=cmap, vmin=1.0, vmax=top)
    for i in range(n):
        for j in range(n):
            v = c.predicted[i][j]
            text = "n/a" if v is None else f"{_ms(v)} ms\n×{rel[i, j]:.2f}"
            dark = v is not None and rel[i, j] > 1.0 + 0.6 * (top - 1.0)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black",
                    fontweight="bold" if c.fastest(j) == i else "normal")
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    ax.set_xticks(range(n), c.labels, rotation=20, ha="right")
    ax.set_yticks(range(n), c.labels)
    ax.set_xlabel("timed with the table of")
    ax.set_ylabel("architecture searched for")
    ax.set_title("predicted latency, × fastest under each table\n(framed: own table; bold: fastest)", fontsize=10)
    # Ratios as the cells write them: the default formatter turns a narrow range into an offset ("1e-7+1").
    fig.colorbar(im, ax=ax, shrink=0.8, label="× the fastest under that table", format=StrMethodFormatter("×{x:.2f}"))


def _bars(ax: Any, c: Comparison) -> None:
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n, width = len(c.entries), 0.8 / len(c.entries)
    x = np.arange(n)
    handles = [Patch(facecolor=f"C{i}", label=f"searched for {label}") for i, label in enumerate(c.labels)]
    for i in range(n):
        xs = x + (i - (n - 1) / 2) * width
        heights = [np.nan if v is None else v for v in c.predicted[i]]
        ax.bar(xs, heights, width, color=f"C{i}",
               edgecolor=["black" if j == i else f"C{i}" for j in range(n)], linewidth=1.5)
        if c.measured is not None:
            ax.scatter(xs, [np.nan if v is None else v for v in c.measured[i]], marker="D", color="black", zorder=3)
    if c.measured is not None and any(v is not None for row in c.measured for v in row):
        handles.append(Line2D([], [], marker="D", color="black", linestyle="", label="measured"))
    values = [v for row in c.predicted for v in row if v is not None and v > 0]
    if values and max(values) / min(values) > 20:  # phones and desktops differ by orders of magnitude
        ax.set_yscale("log")
    ax.set_xticks(x, c.labels, rotation=20, ha="right")
    ax.set_xlabel("device (table)")
    ax.set_ylabel("latency (ms, log scale)" if ax.get_yscale() == "log" else "latency (ms)")
    ax.set_title("predicted latency per device (outlined: own architecture)", fontsize=10)
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: bars stay visible

