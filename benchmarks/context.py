"""Blocks timed in context: every row measured inside a whole network instead of alone.

A block timed alone misses what happens between blocks in a network: per-call overhead paid
once, caches warm from the layer before, a runtime's fusions across blocks. nn-Meter's answer
is to time kernels as they run in context; this is that answer at the granularity of a table
row (`pipeline benchmark --timing in-context`).

The base network is every layer at its cheapest candidate by the isolated table of the same
space, target and device (measured first where it is missing). For each row (block, shape)
that is not one of the base's parts, the network with that block at the first layer of that
shape that offers it (every other layer at its base candidate) is timed against the base
network, repeat by repeat (`benchmarks.protocol.Reference`), and keeps the median ratio r of
its repeats to the base's. T is the base network's median over every repeat of it the table
holds, as a reference row's scale is (`LatencyTable.apply_reference`). Then

    row = T · (f + max(r − 1, 0))

where f is the share of the base network's time its part at that layer takes: T split over the
base's parts (its fixed parts and its candidate at every layer, each as often as it occurs) in
proportion to their isolated times. The shares sum to 1, so the table sum of the base
architecture is T, and of any architecture T + Σ_l Δ_l, with Δ_l = T·(r_l − 1) the difference
its block at layer l made in context: the base's measured time plus each change from it, as if
the changes added up independently. Calibration (`pipeline validate`) corrects the rest.

The ratio, not a difference of milliseconds: the two repeats of a pair are milliseconds apart
and see the same machine, and one T puts rows measured at different moments on one scale.
Storing r ≤ 1 as 1 (below) biases a noisy Δ upward, and the bias adds up over the layers: how
much that costs, against timing blocks alone, is in docs/measurement.md ("Blocks timed in
context").

A block no slower than the base's candidate within noise (r ≤ 1) is stored as equal to it
(Δ = 0, `at_or_below_base`), with its measured ratio kept (`context_ratio`): never a latency
below the base part's, so never zero or negative. The report counts these rows.

The table lives beside the isolated one (`<device>.in-context.json`): it is built from it, and
the two are compared (`perf/context_effect.py`, docs/measurement.md); `validate`, `search` and
`export` read it with `--table FILE`.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from benchmarks.boundary import layer_latency
from benchmarks.exclusive import timing_alone
from benchmarks.harness import BenchmarkJob, _start_table, in_workers, steadiest
from benchmarks.isolate import NetworkTimer
from benchmarks.networks import export_architecture
from benchmarks.table import LatencyTable, Row, row_key
from benchmarks.targets import Target
from blocks.architecture import Architecture
from blocks.space import LayerShape, SearchSpace
from core.errors import PipelineError

log = logging.getLogger(__name__)

IN_CONTEXT = "in-context"
TIMINGS = ("isolated", IN_CONTEXT)  # how a table's rows are timed: `pipeline benchmark --timing`
# Networks kept loaded in one timing process: an ONNX Runtime session of FBNet at 224x224 holds
# its weights and activation buffers, and a table has a network per row.
LOADED_AT_ONCE = 16
Exported = tuple[Any, np.ndarray]  # (Artifact, the input it was checked on)


def context_table_path(isolated: Path) -> Path:
    """Where the in-context table of the isolated table at `isolated` lives: beside it."""
    return isolated.with_name(f"{isolated.stem}.{IN_CONTEXT}{isolated.suffix}")


def base_architecture(space: SearchSpace, isolated: LatencyTable) -> tuple[str, ...]:
    """Every layer at its cheapest candidate by the isolated table (the first of equals; a block
    the format cannot express is no candidate)."""
    def measured(b: str, shape: LayerShape) -> bool:
        row = isolated.rows.get(row_key(b, shape))
        return row is not None and row.status == "ok"
    return tuple(min([b for b in space.candidates(i) if measured(b, shape)] or space.candidates(i),
                     key=lambda b: layer_latency(isolated, b, shape)) for i, shape in enumerate(space.layers))


def base_parts(space: SearchSpace, base: tuple[str, ...]) -> list[tuple[str, LayerShape]]:
    """The base network's parts, each as often as it occurs."""
    return space.fixed_parts() + [(b, shape) for b, shape in zip(base, space.layers)]


def base_shares(space: SearchSpace, isolated: LatencyTable, base: tuple[str, ...]) -> dict[str, float]:
    """Each base part's share of the base network's time (per occurrence), in proportion to its
    isolated time: summed over the base's parts, 1."""
    parts = base_parts(space, base)
    ms = {row_key(b, s): layer_latency(isolated, b, s) for b, s in parts}
    bad = [k for k, v in ms.items() if not v > 0]
    if bad:
        raise PipelineError(f"isolated table row '{bad[0]}' is not above 0 ms, so it cannot share the base network's "
                            "time; remeasure the isolated table with 'pipeline benchmark --force'")
    total = sum(ms[row_key(b, s)] for b, s in parts)
    return {k: v / total for k, v in ms.items()}


def context_rows(space: SearchSpace, base: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each row the space needs that is not a base part, as the network that times it: the base
    with the row's block at the first layer of its shape that offers it."""
    parts = {row_key(b, s) for b, s in base_parts(space, base)}
    out: dict[str, tuple[str, ...]] = {}
    for i, shape in enumerate(space.layers):
        for b in space.candidates(i):
            key = row_key(b, shape)
            if key not in parts and key not in out:
                out[key] = base[:i] + (b,) + base[i + 1:]
    return out


def _layer_of(blocks: tuple[str, ...], base: tuple[str, ...]) -> int:
    return next(i for i, (a, b) in enumerate(zip(blocks, base)) if a != b)


def _export_one(target: Target, space: SearchSpace, blocks: tuple[str, ...], cache: Path) -> Exported | str:
    try:
        return export_architecture(Architecture(space, blocks, {}), target, cache)
    except PipelineError as e:  # a converter's refusal: the row is unavailable, with its reason
        return str(e)


def export_networks(target: Target, space: SearchSpace, nets: dict[str, tuple[str, ...]], cache: Path, jobs: int,
                    progress: bool) -> dict[str, Exported | str]:
    """Every network exported and checked against PyTorch (cached like validate's), in `jobs`
    worker processes; a converter's refusal comes back as its reason."""
    bar = tqdm(total=len(nets), desc=f"export {target.name} networks", unit="net", disable=not progress or not nets)
    out: dict[str, Exported | str] = {}
    if jobs <= 1 or len(nets) <= 1:
        for key, blocks in nets.items():
            out[key] = _export_one(target, space, blocks, cache)
            bar.update()
    else:
        tasks = {key: partial(_export_one, target, space, blocks, cache) for key, blocks in nets.items()}
        out = in_workers(jobs, tasks, bar)
    bar.close()
    return out


def _fresh_context(job: BenchmarkJob, isolated: LatencyTable, isolated_path: Path) -> dict[str, Any]:
    base = base_architecture(job.space, isolated)
    return {"base": list(base), "shares": base_shares(job.space, isolated, base),
            "split_by": {"table": str(isolated_path), "created": isolated.provenance.get("created")},
            "base_samples_ms": [], "base_median_ms": None}


def _stored_context(job: BenchmarkJob, table: LatencyTable) -> dict[str, Any]:
    """The base and shares a resumed table was measured with (new rows must share them), checked."""
    ctx, space = table.provenance.get("context"), job.space
    try:
        base = tuple(str(b) for b in ctx["base"])
        ok = len(base) == len(space.layers) and all(b in space.candidates(i) for i, b in enumerate(base))
        shares = {str(k): float(v) for k, v in ctx["shares"].items()}
        samples = [float(v) for v in ctx["base_samples_ms"]]
        ok = ok and all(shares.get(row_key(b, s), 0) > 0 for b, s in base_parts(space, base))
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise PipelineError(f"table '{job.table_path}': its base network is missing or does not fit space "
                            f"'{space.name}'; remeasure it with 'pipeline benchmark --timing {IN_CONTEXT} --force'")
    ctx.update(base=list(base), shares=shares, base_samples_ms=samples)
    return ctx


def apply_context(table: LatencyTable) -> None:
    """Every row from the base network's time T (its median over every repeat of it the table
    holds) and the row's share and ratio: T·(f + max(r − 1, 0)). The raw difference T·(r − 1),
    at or below zero for a block no slower than the base's, stays in the row as `delta_ms`."""
    ctx = table.provenance["context"]
    pool = list(ctx["base_samples_ms"]) + [float(v) for r in table.rows.values() if r.status == "ok"
                                           for v in r.stats.get("base_samples_ms", [])]
    if not pool:
        return
    t = statistics.median(pool)
    ctx["base_median_ms"] = t
    for r in table.rows.values():
        if r.status == "ok" and "base_share" in r.stats:
            ratio = float(r.stats.get("context_ratio", 1.0))
            r.median_ms = t * (float(r.stats["base_share"]) + max(ratio - 1.0, 0.0))
            if "context_ratio" in r.stats:
                r.stats["delta_ms"] = t * (ratio - 1.0)


def at_or_below_base(table: LatencyTable) -> int:
    """Rows whose block came out no slower than the base's candidate in context: stored as equal to it."""
    return sum(1 for r in table.rows.values() if r.stats.get("at_or_below_base") is True)


def context_row(block: str, shape: LayerShape, layer: int, share: float, stats: dict[str, Any]) -> Row:
    """A row from one measurement of its network against the base (`Samples.stats`); its latency
    is set by `apply_context`."""
    ratio = float(stats["ratio"])
    kept = {k: stats[k] for k in ("cv", "count", "number", "load_ms", "first_ms", "attempts", "wide") if k in stats}
    return Row(block, shape, "ok", None, {
        **kept, "layer": layer, "base_share": share, "context_ratio": ratio, "at_or_below_base": ratio <= 1.0,
        "network_samples_ms": stats["samples_ms"], "base_samples_ms": stats["reference_ms"]})


BASE = "base network"  # its key among the exported networks (row keys all hold a '/')


@contextlib.contextmanager
def _timer(job: BenchmarkJob, target: Target) -> Iterator[Any]:
    """A fresh timing process for the next networks; on an agent's device, its one connection."""
    if job.remote is not None:
        yield job.remote
        return
    with NetworkTimer(target.make_runner(job.protocol.threads), job.protocol) as timer:
        yield timer


def _save(job: BenchmarkJob, table: LatencyTable) -> None:
    layers_of: dict[str, list[int]] = {}
    for i, shape in enumerate(job.space.layers):
        for b in job.space.candidates(i):
            layers_of.setdefault(row_key(b, shape), []).append(i)
    for key, row in table.rows.items():
        row.layers = layers_of.get(key, row.layers)
    apply_context(table)
    table.save(job.table_path)


def _measure(job: BenchmarkJob, timer: Any, base_index: int, key: str, blocks: tuple[str, ...],
             exported: Exported | str, ctx: dict[str, Any]) -> Row:
    """One row: its network timed against the base network, or why it could not be."""
    layer = _layer_of(blocks, tuple(ctx["base"]))
    block, shape = blocks[layer], job.space.layers[layer]
    if isinstance(exported, str):
        return Row(block, shape, status="unavailable", reason=exported)
    try:
        index = timer.load(exported[0], [exported[1]])
        stats = steadiest(lambda: timer.stats(index, base_index), job.protocol)
    except PipelineError as e:
        if job.remote is not None:  # the agent's failure, not this row's: stop, keeping the rows so far
            raise
        return Row(block, shape, status="failed", reason=str(e))
    return context_row(block, shape, layer, ctx["shares"][row_key(ctx["base"][layer], shape)], stats)


def _time_rows(job: BenchmarkJob, target: Target, table: LatencyTable, todo: dict[str, tuple[str, ...]],
               exported: dict[str, Exported | str], progress: bool) -> None:
    """The base network alone (once per table), then every row's network against it, saving the
    table after each; a timing process keeps `LOADED_AT_ONCE` networks, and one that failed a
    row is replaced with what it had loaded."""
    ctx, pending = table.provenance["context"], list(todo)
    bar = tqdm(total=len(pending), desc=f"measure {target.name} in context", unit="block",
               disable=not progress or not pending)
    while pending or not ctx["base_samples_ms"]:
        with _timer(job, target) as timer:
            artifact, x = exported[BASE]  # type: ignore[misc]
            base_index = timer.load(artifact, [x])
            if not ctx["base_samples_ms"]:
                ctx["base_samples_ms"] = steadiest(partial(timer.stats, base_index), job.protocol)["samples_ms"]
                _save(job, table)
            for _ in range(min(LOADED_AT_ONCE, len(pending))):
                key = pending.pop(0)
                bar.set_postfix_str(key)
                row = _measure(job, timer, base_index, key, todo[key], exported[key], ctx)
                table.add(row)
                _save(job, table)  # after every row: an interruption loses at most one
                bar.update()
                if row.status == "failed":
                    log.warning("%s failed in context: %s", key, row.reason)
                    break
    bar.close()


def _add_base_rows(space: SearchSpace, table: LatencyTable, base: tuple[str, ...], shares: dict[str, float]) -> None:
    """The base's parts: each its share of the base network's time, timed as the base is."""
    for block, shape in base_parts(space, base):
        table.add(Row(block, shape, "ok", None, {"base_share": shares[row_key(block, shape)], "base_part": True}))


def check_job(job: BenchmarkJob) -> None:
    """In context, every row is timed against the base network, in one round."""
    if job.rounds > 1 or not job.reference:
        raise PipelineError(f"--timing {IN_CONTEXT} times every row against the base network in one round; drop "
                            f"{'--rounds' if job.rounds > 1 else '--no-reference'} (--repeats N times each more)")


def benchmark_in_context(job: BenchmarkJob, target: Target, isolated: LatencyTable, isolated_path: Path,
                         progress: bool = True) -> tuple[LatencyTable, int]:
    """Measure every row `job.space` needs that the in-context table lacks, inside the base
    network chosen from `isolated` (see the module's docstring). Returns (table, rows measured)."""
    check_job(job)
    table = _start_table(job)
    table.provenance.setdefault("context", _fresh_context(job, isolated, isolated_path))
    ctx = _stored_context(job, table)
    base = tuple(ctx["base"])
    todo = {k: v for k, v in context_rows(job.space, base).items()
            if k not in table.rows or table.rows[k].status == "failed"}
    need_base = bool(todo) or not ctx["base_samples_ms"]
    exported = export_networks(target, job.space, {BASE: base, **todo} if need_base else {}, job.cache_dir, job.jobs,
                               progress)
    if isinstance(exported.get(BASE), str):
        raise PipelineError(f"the base network ({', '.join(base)}) cannot be exported: {exported[BASE]}")
    _add_base_rows(job.space, table, base, ctx["shares"])
    if need_base:
        with timing_alone():  # across the timing processes, which would each take it and let others in between
            _time_rows(job, target, table, todo, exported, progress)
    _save(job, table)
    return table, len(todo)


def context_summary(table: LatencyTable) -> str | None:
    """How an in-context table's rows were timed, for its report; None for any other table."""
    ctx = table.provenance.get("context")
    if table.provenance.get("timing") != IN_CONTEXT or not isinstance(ctx, dict) or not ctx.get("base_median_ms"):
        return None
    return (f"each timed inside the network of every layer's cheapest candidate ({ctx['base_median_ms']:.4g} ms), "
            f"against it; {at_or_below_base(table)} row(s) came out at or below the cheapest candidate: stored as "
            "equal to it")
