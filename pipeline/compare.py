"""Architectures searched for different (target, device) tables, compared side by side.

The library behind `pipeline compare`. It puts numbers on the claim the tool rests on: the
architecture searched for a device is the fastest on that device, and devices prefer
different blocks. For every pair it predicts (and, through a callback, measures) the latency
of the architecture searched for one table under another table: the cross matrix.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.predict import LatencyModel
from benchmarks.table import LatencyTable, load_table, measure_command
from blocks.architecture import Architecture, load_architecture
from blocks.space import SearchSpace
from pipeline.errors import PipelineError
from pipeline.fileio import write_text_atomic, write_with
from pipeline.weights import read_weights_info
from pipeline.workspace import weights_path

log = logging.getLogger(__name__)

# [i][j]: the architecture searched for entry i, timed with entry j's table (or on its device).
Matrix = tuple[tuple[float | None, ...], ...]


@dataclass(frozen=True)
class Entry:
    """One (target, device): its table and the architecture searched with that table."""

    label: str  # what the report calls it, e.g. "android/pixel1"
    table: LatencyTable
    table_path: Path
    architecture: Architecture
    arch_path: Path


Measure = Callable[[Entry, Architecture], float | None]


def load_entry(table_path: str | os.PathLike, arch_path: str | os.PathLike, label: str | None = None) -> Entry:
    """Read a table and an architecture; the label defaults to the table's `target/device`."""
    table, arch = load_table(table_path), load_architecture(arch_path)
    return Entry(label or f"{table.target}/{table.device}", table, Path(table_path), arch, Path(arch_path))


@dataclass(frozen=True)
class Accuracy:
    """Test accuracies recorded for one architecture (fractions; None where unknown)."""

    inherited: float | None = None  # derived network with the super-net's weights (search)
    trained: float | None = None  # trained from scratch ('pipeline train')
    supernet: float | None = None  # the whole super-net at the end of the search

    @property
    def best(self) -> tuple[float, str] | None:
        """The figure to compare architectures by: trained if known, else inherited."""
        if self.trained is not None:
            return self.trained, "trained"
        if self.inherited is not None:
            return self.inherited, "inherited"
        return None


@dataclass(frozen=True)
class SpaceGroup:
    """Entries whose architectures share one space, and what the tables say about that space."""

    space: SearchSpace
    members: tuple[int, ...]  # entry indices
    differing: tuple[int, ...]  # layers where the members' architectures choose different blocks
    tables: tuple[int, ...]  # entries whose table fits this space
    fastest: tuple[tuple[str, ...], ...]  # per table in `tables`, per layer: its fastest candidate

    @property
    def title(self) -> str:
        return f"space '{self.space.name}' ({self.space.fingerprint})"

    def shapes(self) -> list[tuple[list[int], str]]:
        """Unique layer shapes, each with the layers that have it (a table row is per shape)."""
        seen: dict[str, list[int]] = {}
        for i, s in enumerate(self.space.layers):
            seen.setdefault(s.key, []).append(i)
        return [(layers, key) for key, layers in seen.items()]

    def disagreeing_shapes(self) -> list[str]:
        """Shapes where the tables name different fastest candidates: devices prefer different blocks."""
        return [key for layers, key in self.shapes() if len({f[layers[0]] for f in self.fastest}) > 1]


# ---------------------------------------------------------------------------- computing
def compare(entries: list[Entry], measure: Measure | None = None) -> Comparison:
    """Cross-predict every architecture under every table, line up their blocks, gather accuracies.

    `measure(entry, arch)` times `arch` end to end on `entry`'s target and device, or returns
    None where no runner exists here; it is called for every pair (column by column). A
    PipelineError it raises is logged and leaves that cell None.
    """
    _check_entries(entries)
    spaces = {e.architecture.space.fingerprint: e.architecture.space for e in entries}
    models = {(j, fp): _model(e.table, space) for j, e in enumerate(entries) for fp, space in spaces.items()}
    for j, e in enumerate(entries):
        _check_own_table(e, models[(j, e.architecture.space.fingerprint)])
    predicted = tuple(
        tuple(_predict(models[(j, a.architecture.space.fingerprint)], a.architecture) for j in range(len(entries)))
        for a in entries
    )
    measured = None
    if measure is not None:
        cols = [[_measure(measure, e, a) for a in entries] for e in entries]
        measured = tuple(tuple(cols[j][i] for j in range(len(entries))) for i in range(len(entries)))
    accuracy = tuple(entry_accuracy(e.architecture, e.arch_path) for e in entries)
    return Comparison(tuple(entries), predicted, measured, accuracy, _groups(entries, models))


def _check_entries(entries: list[Entry]) -> None:
    if len(entries) < 2:
        raise PipelineError(
            f"compare needs at least two (table, architecture) pairs, got {len(entries)}; "
            "pass a table and the architecture searched with it for each device to compare"
        )
    seen: dict[str, Entry] = {}
    for e in entries:
        if e.label in seen:
            raise PipelineError(
                f"two entries are labelled '{e.label}' (tables '{seen[e.label].table_path}' and '{e.table_path}'); "
                "compare tables of different (target, device) or give each entry its own label"
            )
        seen[e.label] = e


def _model(table: LatencyTable, space: SearchSpace) -> LatencyModel | None:
    """The table's latency model for `space`, or None (logged) when the table lacks its rows."""
    try:
        return LatencyModel.from_table(table, space)
    except PipelineError as e:
        log.info("no prediction under %s/%s for space '%s': %s", table.target, table.device, space.name, e)
        return None


def _check_own_table(e: Entry, model: LatencyModel | None) -> None:
    if model is not None:
        return
    space = e.architecture.space
    searched_with = (e.architecture.info.get("table") or {}).get("path")
    hint = "pass the table it was searched with" + (f" ('{searched_with}')" if searched_with else "")
    raise PipelineError(
        f"entry '{e.label}': table '{e.table_path}' ({e.table.target}/{e.table.device}) does not fit space "
        f"'{space.name}' of architecture '{e.arch_path}'; {hint}, or measure it with "
        f"'{measure_command(e.table.target, space.name, e.table.device)}'"
    )


def _measure(measure: Measure, on: Entry, searched_for: Entry) -> float | None:
    # One cell that cannot be timed should not sink the whole report: log it and show n/a.
    try:
        return measure(on, searched_for.architecture)
    except PipelineError as e:
        log.warning("not measuring the architecture searched for %s on %s: %s", searched_for.label, on.label, e)
        return None


def _predict(model: LatencyModel | None, arch: Architecture) -> float | None:
    return None if model is None else model.predict(arch.space, arch.blocks)


def _groups(entries: list[Entry], models: dict[tuple[int, str], LatencyModel | None]) -> tuple[SpaceGroup, ...]:
    by_space: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_space.setdefault(e.architecture.space.fingerprint, []).append(i)
    groups = []
    for fp, members in by_space.items():
        space = entries[members[0]].architecture.space
        chosen = [entries[i].architecture.blocks for i in members]
        differing = tuple(layer for layer in range(len(space.layers)) if len({c[layer] for c in chosen}) > 1)
        tables = tuple(j for j in range(len(entries)) if models[(j, fp)] is not None)
        fastest = tuple(_fastest_blocks(models[(j, fp)], space) for j in tables)  # type: ignore[arg-type]
        groups.append(SpaceGroup(space, tuple(members), differing, tables, fastest))
    return tuple(groups)


def _fastest_blocks(model: LatencyModel, space: SearchSpace) -> tuple[str, ...]:
    # A tie goes to the earlier candidate in the space's block order.
    return tuple(space.candidates(i)[int(t.argmin())] for i, t in enumerate(model.per_layer))


def entry_accuracy(arch: Architecture, arch_path: Path) -> Accuracy:
    """Accuracies from the architecture's search record and the trained weights beside it."""
    trained = None
    path = weights_path(arch_path, "trained")
    if path.exists():
        try:
            trained = read_weights_info(path, arch.space, arch.blocks).get("test_accuracy")
        except PipelineError as e:
            log.warning("not showing a trained accuracy for '%s': %s", arch_path, e)
    info = arch.info
    return Accuracy(_number(info.get("inherited_test_accuracy")), _number(trained),
                    _number(info.get("supernet_test_accuracy")))


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# ---------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Comparison:
    entries: tuple[Entry, ...]
    predicted: Matrix  # ms from the tables; None where table j lacks rows for arch i's space
    measured: Matrix | None  # ms end to end; None without a `measure` callback
    accuracy: tuple[Accuracy, ...]
    groups: tuple[SpaceGroup, ...]

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    def fastest(self, j: int, matrix: Matrix | None = None) -> int | None:
        """Which architecture is fastest under table (or on device) j; None if nothing was timed."""
        return _fastest(matrix or self.predicted, j)

    def block_counts(self, i: int) -> dict[str, int]:
        """How often architecture i chooses each block, in the space's block order."""
        arch = self.entries[i].architecture
        counts = Counter(arch.blocks)
        return {b: counts[b] for b in arch.space.blocks if counts[b]}

    def summary(self) -> list[str]:
        """Sentences that state, from the numbers, whether the claim holds here."""
        lines = _claims(self.labels, self.predicted, "predicted")
        if self.measured is not None:
            lines += _claims(self.labels, self.measured, "measured")
        for g in self.groups:
            lines += _group_sentences(g, self.labels)
        return lines + [_accuracy_sentence(self.labels, self.accuracy)]

    def to_text(self) -> str:
        """Compact terminal view: the cross matrix, accuracies, the layer tables, the summary."""
        parts = ["predicted latency (ms): rows = architecture searched for, columns = table it is timed on",
                 _grid(*_matrix_rows(self.labels, self.predicted)), MATRIX_LEGEND]
        if self.measured is not None:
            parts += ["measured latency (ms), end to end on this machine:", _grid(*_matrix_rows(self.labels, self.measured))]
        parts.append("test accuracy: " + ", ".join(f"{lab} {_acc(a)}" for lab, a in zip(self.labels, self.accuracy)))
        for g in self.groups:
            parts += [_layers_title(g), _grid(*_layer_rows(self, g))]
        return "\n".join(parts + ["summary:"] + [f"  - {s}" for s in self.summary()])

    def to_markdown(self, plot: str | None = None) -> str:
        """A report: the summary, the plot (a path relative to the report), and every table."""
        return _markdown(self, plot)

    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)

    def plot(self, path: str | os.PathLike) -> None:
        """A PNG: the cross matrix normalised per table, and latencies per device as grouped bars."""
        _plot(self, Path(path))


def write_outputs(comparison: Comparison, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write compare.md, compare.json and compare.png into `out_dir` (atomically each)."""
    out = Path(out_dir)
    paths = {"markdown": out / "compare.md", "json": out / "compare.json", "plot": out / "compare.png"}
    comparison.plot(paths["plot"])
    write_text_atomic(paths["json"], json.dumps(comparison.to_dict(), indent=2) + "\n")
    write_text_atomic(paths["markdown"], comparison.to_markdown(plot=paths["plot"].name))
    return paths


# ---------------------------------------------------------------------------- sentences
def _column(matrix: Matrix, j: int) -> list[float | None]:
    return [row[j] for row in matrix]


def _fastest(matrix: Matrix, j: int) -> int | None:
    col = [(v, i) for i, v in enumerate(_column(matrix, j)) if v is not None]
    return min(col)[1] if col else None


def _pct(v: float, own: float) -> str:
    return f"{100.0 * (v / own - 1.0):+.1f}%" if own > 0 else "n/a"


def _ms(v: float) -> str:
    return f"{v:#.4g}"  # four significant digits, trailing zeros kept so columns line up


def _claims(labels: list[str], matrix: Matrix, what: str) -> list[str]:
    sentences, held, judged = [], 0, 0
    for j, label in enumerate(labels):
        own = matrix[j][j]
        others = [(labels[i], v) for i, v in enumerate(_column(matrix, j)) if i != j and v is not None]
        if own is None or not others:
            continue
        judged += 1
        faster = [(lab, v) for lab, v in others if v < own]
        if not faster:
            held += 1
            rest = ", ".join(f"searched for {lab} {_pct(v, own)}" for lab, v in others)
            sentences.append(f"{what}: on {label}, the architecture searched for it is the fastest "
                             f"({_ms(own)} ms; {rest})")
        else:
            lab, v = min(faster, key=lambda t: t[1])
            sentences.append(f"{what}: on {label}, the architecture searched for it is NOT the fastest "
                             f"({_ms(own)} ms): the one searched for {lab} takes {_ms(v)} ms ({_pct(v, own)})")
    if judged:
        where = "under it for {} of {} table(s)" if what == "predicted" else "on it for {} of {} device(s)"
        sentences.insert(0, f"{what}: the architecture searched for a device is the fastest "
                            + where.format(held, judged))
    return sentences


def _group_sentences(g: SpaceGroup, labels: list[str]) -> list[str]:
    lines, n = [], len(g.space.layers)
    if len(g.members) > 1:
        lines.append(f"in {g.title}, the architectures of {', '.join(labels[i] for i in g.members)} "
                     f"differ in {len(g.differing)} of {n} layer(s)")
    if len(g.tables) > 1:
        lines.append(f"in {g.title}, the tables disagree on the fastest candidate at "
                     f"{len(g.disagreeing_shapes())} of {len(g.shapes())} layer shape(s)")
    return lines


def _acc(a: Accuracy) -> str:
    best = a.best
    return "-" if best is None else f"{best[0]:.3f} ({best[1]})"


def _accuracy_sentence(labels: list[str], accuracy: tuple[Accuracy, ...]) -> str:
    known = [(lab, a.best) for lab, a in zip(labels, accuracy) if a.best is not None]
    if len(known) < 2:
        return ("test accuracy is known for fewer than two architectures; train them with 'pipeline train' "
                "to compare latency at known accuracy")
    values = [b[0] for _, b in known]
    listed = ", ".join(f"{lab} {b[0]:.3f} ({b[1]})" for lab, b in known)
    return f"test accuracy: {listed}; spread {100.0 * (max(values) - min(values)):.1f} points"


# ---------------------------------------------------------------------------- tables
MATRIX_LEGEND = "  (own) = searched for that table; +x% = vs own; * = fastest under that table; n/a = table lacks that space's rows"


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
    return "\n".join(parts)


# ---------------------------------------------------------------------------- JSON
def _by_label(labels: list[str], matrix: Matrix | None) -> dict[str, dict[str, float | None]] | None:
    if matrix is None:
        return None
    return {a: {t: matrix[i][j] for j, t in enumerate(labels)} for i, a in enumerate(labels)}


def _entry_dict(e: Entry, a: Accuracy) -> dict[str, Any]:
    return {
        "label": e.label, "target": e.table.target, "device": e.table.device,
        "table": str(e.table_path), "architecture": str(e.arch_path),
        "space": e.architecture.space.name, "space_fingerprint": e.architecture.space.fingerprint,
        "blocks": list(e.architecture.blocks),
        "accuracy": {"inherited": a.inherited, "trained": a.trained, "supernet": a.supernet},
    }


def _group_dict(c: Comparison, g: SpaceGroup) -> dict[str, Any]:
    layers = [{"layer": layer, "shape": shape.key,
               "chosen": {c.entries[i].label: c.entries[i].architecture.blocks[layer] for i in g.members},
               "fastest": {c.entries[j].label: f[layer] for j, f in zip(g.tables, g.fastest)}}
              for layer, shape in enumerate(g.space.layers)]
    return {"space": g.space.name, "space_fingerprint": g.space.fingerprint,
            "entries": [c.entries[i].label for i in g.members], "differing_layers": list(g.differing),
            "disagreeing_shapes": g.disagreeing_shapes(), "layers": layers}


def _as_dict(c: Comparison) -> dict[str, Any]:
    labels = c.labels
    return {
        "entries": [_entry_dict(e, a) for e, a in zip(c.entries, c.accuracy)],
        "predicted_ms": _by_label(labels, c.predicted),
        "measured_ms": _by_label(labels, c.measured),
        "fastest": {t: (labels[i] if (i := c.fastest(j)) is not None else None) for j, t in enumerate(labels)},
        "block_counts": {lab: c.block_counts(i) for i, lab in enumerate(labels)},
        "spaces": [_group_dict(c, g) for g in c.groups],
        "summary": c.summary(),
    }


# ---------------------------------------------------------------------------- plot
def _plot(c: Comparison, path: Path) -> None:
    # The object API with no pyplot: no global backend or figure state; savefig renders with Agg.
    from matplotlib.figure import Figure

    n = len(c.entries)
    fig = Figure(figsize=(5.0 + 2.6 * n, 1.8 + 1.1 * n), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.0, 1.3])
    _heatmap(fig, left, c)
    _bars(right, c)
    fig.suptitle("Architectures searched for each device, timed on every device")
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))


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

    rel, n = _relative(c), len(c.entries)
    top = max(float(np.nanmax(rel)), 1.0 + 1e-6)
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
    fig.colorbar(im, ax=ax, shrink=0.8, label="× the fastest under that table")


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
