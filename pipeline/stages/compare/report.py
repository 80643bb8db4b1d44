"""Architectures searched for different (target, device) tables, compared side by side.

The library behind `pipeline compare`. It puts numbers on the claim the tool rests on: the
architecture searched for a device is the fastest on that device, and devices prefer
different blocks. For every pair it predicts (and, through a callback, measures) the latency
of the architecture searched for one table under another table: the cross matrix.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.predict import LatencyModel
from benchmarks.table import LatencyTable, load_table, measure_command, required_rows
from blocks.architecture import Architecture, load_architecture
from blocks.space import SearchSpace
from core.errors import PipelineError
from pipeline.training.weights import read_weights_info
from core.workspace import weights_path

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


@dataclass(frozen=True)
class PrecisionGain:
    """Two tables of one device and space at different precisions: each block kind's speed-up,
    the wider precision's time over the narrower's, median over the layer shapes it has."""

    wide: int  # entry index of the wider precision (fp32)
    narrow: int  # entry index of the narrower one (int8)
    by_block: tuple[tuple[str, float, int], ...]  # (block, speed-up, shapes), fastest gain first

    def to_dict(self, labels: list[str]) -> dict[str, Any]:
        return {"wide": labels[self.wide], "narrow": labels[self.narrow],
                "by_block": [{"block": b, "speedup": x, "shapes": n} for b, x, n in self.by_block]}


# Widest first: a pair's speed-up is the wider one's time over the narrower one's.
PRECISION_ORDER = ("fp32", "fp16", "w8", "int8")


def precision_of(table: LatencyTable) -> str | None:
    p = table.provenance.get("precision")
    return p if p in PRECISION_ORDER else None


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
    _check_one_space(entries)
    predicted = tuple(
        tuple(_predict(models[(j, a.architecture.space.fingerprint)], a.architecture) for j in range(len(entries)))
        for a in entries
    )
    measured = None
    if measure is not None:
        cols = [[_measure(measure, e, a) for a in entries] for e in entries]
        measured = tuple(tuple(cols[j][i] for j in range(len(entries))) for i in range(len(entries)))
    accuracy = tuple(entry_accuracy(e.architecture, e.arch_path) for e in entries)
    return Comparison(tuple(entries), predicted, measured, accuracy, _groups(entries, models), _gains(entries))


def _gains(entries: list[Entry]) -> tuple[PrecisionGain, ...]:
    """Every pair of entries whose tables time one device and space at two precisions."""
    out = []
    for i, a in enumerate(entries):
        for j, b in enumerate(entries):
            pa, pb = precision_of(a.table), precision_of(b.table)
            same = (a.table.device == b.table.device and a.table.provenance.get("host") == b.table.provenance.get("host")
                    and a.architecture.space.fingerprint == b.architecture.space.fingerprint)
            if same and pa and pb and PRECISION_ORDER.index(pa) < PRECISION_ORDER.index(pb):
                out.append(PrecisionGain(i, j, _speedups(a.table, b.table, a.architecture.space)))
    return tuple(out)


def _speedups(wide: LatencyTable, narrow: LatencyTable, space: SearchSpace) -> tuple[tuple[str, float, int], ...]:
    ratios: dict[str, list[float]] = {}
    for block, shape in required_rows(space):
        if block not in space.blocks:  # the stem and head are in every network alike
            continue
        try:
            ratios.setdefault(block, []).append(wide.latency(block, shape) / narrow.latency(block, shape))
        except (PipelineError, ZeroDivisionError):
            continue  # a row one table could not measure
    gains = [(b, float(statistics.median(r)), len(r)) for b, r in ratios.items() if r]
    return tuple(sorted(gains, key=lambda g: -g[1]))


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


def _check_one_space(entries: list[Entry]) -> None:
    """Refuse architectures of different spaces: a table times only its own space's blocks (the
    cross matrix would be n/a off each space's own cells), and accuracies of networks from
    different spaces are not alike enough to set side by side."""
    by_space: dict[str, list[Entry]] = {}
    for e in entries:
        by_space.setdefault(e.architecture.space.fingerprint, []).append(e)
    if len(by_space) < 2:
        return
    listed = "; ".join(f"space '{es[0].architecture.space.name}' ({fp}): {', '.join(e.label for e in es)}"
                       for fp, es in by_space.items())
    raise PipelineError(f"compare needs architectures of one search space, got {len(by_space)} ({listed}); "
                        "compare each space's entries in a run of their own")


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
    predicted: Matrix  # ms from the tables (every table fits the one space compared)
    measured: Matrix | None  # ms end to end; None without a `measure` callback
    accuracy: tuple[Accuracy, ...]
    groups: tuple[SpaceGroup, ...]
    gains: tuple[PrecisionGain, ...] = ()  # pairs of one device at two precisions

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
        same = [[a.architecture.space.fingerprint == b.architecture.space.fingerprint
                 and a.architecture.blocks == b.architecture.blocks for b in self.entries] for a in self.entries]
        lines = _claims(self.labels, self.predicted, "predicted", same)
        if self.measured is not None:
            lines += _claims(self.labels, self.measured, "measured", same)
        for g in self.groups:
            lines += _group_sentences(g, self.labels)
        lines += [_gain_sentence(g, self.entries) for g in self.gains if g.by_block]
        data = [_search_data(e.architecture) for e in self.entries]
        return lines + [_accuracy_sentence(self.labels, self.accuracy, data)]


    def to_dict(self) -> dict[str, Any]:
        return _as_dict(self)



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


def _claims(labels: list[str], matrix: Matrix, what: str, same: list[list[bool]]) -> list[str]:
    """Is each entry's own architecture the fastest in its column? Another entry with the very
    same architecture is no rival: what separates their times is the machine's noise."""
    sentences, held, judged = [], 0, 0
    for j, label in enumerate(labels):
        own = matrix[j][j]
        others = [(labels[i], v) for i, v in enumerate(_column(matrix, j))
                  if i != j and v is not None and not same[i][j]]
        if own is None or not others:
            twins = [labels[i] for i in range(len(labels)) if i != j and same[i][j]]
            if own is not None and twins:
                sentences.append(f"{what}: on {label}, the architecture searched for it is the one searched for "
                                 f"{', '.join(twins)}: nothing to choose between")
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


def _gain_sentence(g: PrecisionGain, entries: tuple[Entry, ...]) -> str:
    wide, narrow = entries[g.wide], entries[g.narrow]
    (top, most, _), (bottom, least, _) = g.by_block[0], g.by_block[-1]
    chosen = [layer for layer, (x, y) in enumerate(zip(wide.architecture.blocks, narrow.architecture.blocks))
              if x != y]
    return (f"{precision_of(narrow.table)} over {precision_of(wide.table)} on {narrow.table.device} "
            f"({wide.label} -> {narrow.label}): blocks run {least:.2f}x to {most:.2f}x as fast ({top} gains most, "
            f"{bottom} least); the architectures searched for them differ in {len(chosen)} of "
            f"{len(wide.architecture.blocks)} layer(s)")


def _acc(a: Accuracy) -> str:
    best = a.best
    return "-" if best is None else f"{best[0]:.3f} ({best[1]})"


def _search_data(arch: Architecture) -> str | None:
    """The data an architecture was searched on, in words (None where its file does not say)."""
    d = arch.info.get("data")
    if not isinstance(d, dict) or "source" not in d:
        return None
    return f"{d['source']}, {d.get('classes', '?')} classes, {d.get('test', '?')} test images"


def _accuracy_sentence(labels: list[str], accuracy: tuple[Accuracy, ...], data: list[str | None]) -> str:
    known = [(lab, a.best, d) for lab, a, d in zip(labels, accuracy, data) if a.best is not None]
    if len(known) < 2:
        return ("test accuracy is known for fewer than two architectures; train them with 'pipeline train' "
                "to compare latency at known accuracy")
    listed = ", ".join(f"{lab} {b[0]:.3f} ({b[1]})" for lab, b, _ in known)
    if len({d for _, _, d in known if d is not None}) > 1:  # test sets of different data: no common scale
        used = "; ".join(f"{lab}: {d or 'not recorded'}" for lab, _, d in known)
        return (f"test accuracy: {listed}; not compared, the searches used different data ({used}); "
                "search on the same data to compare accuracy")
    values = [b[0] for _, b, _ in known]
    return f"test accuracy: {listed}; spread {100.0 * (max(values) - min(values)):.1f} points"



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
        "precision_gains": [g.to_dict(labels) for g in c.gains],
        "summary": c.summary(),
    }


