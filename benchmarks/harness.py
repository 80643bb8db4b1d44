"""Build a latency table: export every (block, shape) a space needs, check it, time it.

Exports run first, in parallel worker processes, and are cached by content key (block,
shape, exporter options and versions), so a second run re-exports nothing. Timing then runs
one artifact at a time. Rows are written to disk as they are measured, so an interrupted
run keeps its work and the next run measures only what is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.agent.client import AgentError, RemoteTimer
from benchmarks.exclusive import timing_alone
from benchmarks.isolate import RowWorker, follow_parent
from benchmarks.protocol import Protocol, Reference, measure, pinned, warm_reference
from benchmarks.runners.base import Run, Runner
from benchmarks.boundary import NOOP_PARTS, build_noop, noop_rows
from benchmarks.plausible import Implausible, implausible_rows
from benchmarks.table import LatencyTable, Row, load_table, required_rows, row_key
from blocks.space import LayerShape, SearchSpace, build_part
from export.base import Artifact, Exporter
from export.verify import MISTRANSLATED, Tolerance, check_against_torch
from core.errors import PipelineError, StorageError
from core.fileio import sweep_temporaries
from core.plugins import LOADED, load_plugins

log = logging.getLogger(__name__)

# Provenance fields that must agree before rows of an existing table are reused.
_SAME_SETUP = ("target", "device", "runtime", "runtime_version", "exporter", "precision", "threads", "timing")
# What a provenance without one of them means (rows timed alone need not say so).
_UNSTATED = {"timing": "isolated"}


@dataclass(frozen=True)
class BenchmarkJob:
    space: SearchSpace
    exporter: Exporter
    runner: Runner | None  # None: the runtime does not exist here; export and check only
    tolerance: Tolerance
    protocol: Protocol
    table_path: Path
    cache_dir: Path
    provenance: dict[str, Any] = field(default_factory=dict)  # target, device, host, ...
    force: bool = False
    jobs: int = 1  # export worker processes
    # Every row measured this many times, in rounds over all the rows measured now, and kept as
    # its median round: a row is timed in well under a second, so a slow spell of the machine
    # (seconds) lands whole in one row's measurement and would stay in the table.
    rounds: int = 1
    # Every row timed against a reference row, repeat by repeat (`benchmarks.protocol`), and kept
    # as its ratio to it: a row's spread over repeated tables (perf/table_spread.py) is a
    # quarter to a third of what it is without, and the calibrated held-out error is lower on
    # every local target (docs/measurement.md). Costs 30-50% more timing.
    reference: bool = True
    # Time on an agent's device instead of here (`pipeline benchmark --remote`).
    remote: RemoteTimer | None = None


def example_input(shape: LayerShape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, shape.in_ch, shape.height, shape.width, generator=g)


def randomize_batchnorm(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh BN layers are identities in eval mode; random statistics make the check meaningful."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module.eval()


def row_module(block: str, shape: LayerShape) -> tuple[torch.nn.Module, torch.Tensor]:
    """The module and input of one row, identical in every process (seeded by the row key)."""
    seed = zlib.crc32(row_key(block, shape).encode())
    torch.manual_seed(seed)
    module = build_noop(block, shape) if block in NOOP_PARTS else build_part(block, shape)
    return randomize_batchnorm(module, seed), example_input(shape, seed)


def rows_to_measure(space: SearchSpace, exporter: Exporter) -> list[tuple[str, LayerShape]]:
    """Every row the space needs, then, for a format that converts layout at its edges, the
    no-op layers that price its identities (`boundary`)."""
    return required_rows(space) + (noop_rows(space) if exporter.has_layout_edges() else [])


def cache_path(exporter: Exporter, ident: dict, cache_dir: Path) -> Path:
    """One artifact per (module identity, input shape, exporter, its options and versions)."""
    key = hashlib.sha256(json.dumps({**ident, **exporter.fingerprint()}, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / exporter.format / f"{key}{exporter.suffix}"


def cached_export(
    exporter: Exporter, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], cache_dir: Path, ident: dict
) -> Artifact:
    path = cache_path(exporter, ident, cache_dir)
    if path.exists():
        return exporter.artifact(path, inputs)
    return exporter.export(module, inputs, path)


def export_row(exporter: Exporter, block: str, shape: LayerShape, cache_dir: Path) -> Artifact | str:
    """Export one row (or find it cached). A converter's refusal comes back as its reason; a full
    or read-only disk (StorageError) is raised: it is no reason to record the row unavailable."""
    module, x = row_module(block, shape)
    try:
        return cached_export(exporter, module, (x,), cache_dir, {"block": block, "shape": shape.key})
    except StorageError:
        raise
    except PipelineError as e:
        return str(e)


def _worker_init(plugins: list[str], parent_pid: int) -> None:
    follow_parent(parent_pid)
    torch.set_num_threads(1)  # the pool already uses every core; nested threads only thrash
    load_plugins(plugins)


def _abandon(pool: ProcessPoolExecutor) -> None:
    """Stop on Ctrl-C or an error: drop the queued exports, let each worker finish the one it
    is writing (one row: a second or two) and leave. Leaving the pool's `with` block instead
    waits for every queued export: a Ctrl-C early in a cold `android` table returned after 69 s.
    (Killing the workers would leave their temporary files and the pool's semaphores behind.)"""
    pool.shutdown(wait=True, cancel_futures=True)


def in_workers(jobs: int, tasks: dict[str, Callable[[], Any]], bar: Any) -> dict[str, Any]:
    """Each task's result by its key, run in `jobs` worker processes (a task must pickle: a
    `partial` of a module-level function), `bar` advanced as each finishes."""
    # spawn, not fork: the parent holds runtime thread pools that a forked child would inherit broken.
    pool = ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(list(LOADED), os.getpid()))
    out: dict[str, Any] = {}
    try:
        futures = {pool.submit(task): key for key, task in tasks.items()}
        for fut in as_completed(futures):
            out[futures[fut]] = fut.result()
            bar.update()
    except BaseException:
        _abandon(pool)
        raise
    pool.shutdown()
    return out


def export_rows(job: BenchmarkJob, rows: list[tuple[str, LayerShape]], progress: bool) -> dict[str, Artifact | str]:
    """Export every row: cached ones are found at once, the rest in `job.jobs` worker processes."""
    out: dict[str, Artifact | str] = {}
    pending = []
    sweep_temporaries(job.cache_dir / job.exporter.format)  # a killed run's half-written exports
    for block, shape in rows:
        path = cache_path(job.exporter, {"block": block, "shape": shape.key}, job.cache_dir)
        if path.exists():
            out[row_key(block, shape)] = job.exporter.artifact(path, (example_input(shape, 0),))
        else:
            pending.append((block, shape))
    bar = tqdm(total=len(pending), desc=f"export {job.exporter.format}", unit="block", disable=not progress or not pending)
    if job.jobs <= 1 or len(pending) <= 1:
        for block, shape in pending:
            out[row_key(block, shape)] = export_row(job.exporter, block, shape, job.cache_dir)
            bar.update()
    else:
        out.update(in_workers(job.jobs, {row_key(b, s): partial(export_row, job.exporter, b, s, job.cache_dir)
                                         for b, s in pending}, bar))
    bar.close()
    for key, result in out.items():
        if isinstance(result, str):
            log.warning("%s cannot be exported to %s: %s", key, job.exporter.format, result)
    return out


def _load(job: BenchmarkJob, block: str, shape: LayerShape, artifact: Artifact) -> Run:
    """Open a cached artifact; one that is damaged (a killed run, a full disk) is exported again."""
    assert job.runner is not None
    try:
        return job.runner.load(artifact)
    except PipelineError:
        log.warning("cached artifact %s is damaged; exporting it again", artifact.path)
        shutil.rmtree(artifact.path) if artifact.path.is_dir() else artifact.path.unlink(missing_ok=True)
        again = export_row(job.exporter, block, shape, job.cache_dir)
        if isinstance(again, str):
            raise PipelineError(f"{row_key(block, shape)}: {again}") from None
        return job.runner.load(again)


def reference_row(space: SearchSpace) -> tuple[str, LayerShape]:
    """The row every other is timed against: the middle layer's candidate of median size
    (parameters), so that it takes about as long as a typical row."""
    i = len(space.layers) // 2
    shape = space.layers[i]
    sized = sorted((sum(p.numel() for p in build_part(b, shape).parameters()), b) for b in space.candidates(i))
    sized = [s for s in sized if s[0] > 0] or sized  # not an identity, where the space has other blocks
    return sized[len(sized) // 2][1], shape


class RowTimer:
    """`measure_row` for one row after another, against `reference` (block, shape, artifact),
    which it loads on first use and keeps, when given."""

    def __init__(self, job: BenchmarkJob, reference: tuple[str, LayerShape, Artifact] | None = None) -> None:
        self.job, self.reference_row = job, reference
        self.reference: Reference | None = None

    def __call__(self, block: str, shape: LayerShape, artifact: Artifact) -> Row:
        if self.reference_row is not None and self.reference is None:
            b, s, a = self.reference_row
            run, x = _load(self.job, b, s, a), [row_module(b, s)[1].numpy()]
            self.reference = warm_reference(lambda: run(x), self.job.protocol)
        return measure_row(self.job, block, shape, artifact, self.reference)


def measure_row(job: BenchmarkJob, block: str, shape: LayerShape, artifact: Artifact,
                reference: Reference | None = None) -> Row:
    """Time one exported row (against `reference` when given), loaded once as whole networks
    are (`NetworkTimer`), then check the same loaded artifact against PyTorch (a mismatch is an
    error)."""
    assert job.runner is not None
    start = time.perf_counter()
    run = _load(job, block, shape, artifact)
    load_ms = (time.perf_counter() - start) * 1e3
    inputs = [row_module(block, shape)[1].numpy()]
    return timed_row(job, block, shape, artifact, lambda: measure(lambda: run(inputs), job.protocol, load_ms, reference).stats(),
                     lambda: run)


def timed_row(job: BenchmarkJob, block: str, shape: LayerShape, artifact: Artifact,
              attempt: Callable[[], dict[str, Any]], outputs: Callable[[], Run | None]) -> Row:
    """A row from `attempt` (one measurement's `Samples.stats`), repeated while its spread is
    wide (`steadiest`), checked against PyTorch through `outputs()` (a run of the artifact, or
    None where only its converter can check it: a device whose tool returns no outputs)."""
    module, x = row_module(block, shape)
    attempts: list[dict[str, Any]] = []

    def once() -> dict[str, Any]:
        attempts.append(attempt())
        return attempts[-1]

    try:
        stats = steadiest(once, job.protocol)
    except AgentError:  # not this row's failure: the run stops, keeping the rows measured so far
        raise
    except PipelineError as e:
        return Row(block, shape, status="failed", reason=str(e))
    stats["first_ms"] = attempts[0]["first_ms"]  # a retry's first call was not the artifact's first
    median = stats.pop("median_ms")
    run = outputs()
    if run is None:
        job.exporter.inspect(artifact)
        stats["max_abs_err"] = None
    else:
        cause = job.exporter.mismatch_cause() if job.remote is None else MISTRANSLATED  # another CPU ran it
        check = check_against_torch(module, (x,), run, job.tolerance,
                                    f"block '{block}' at {shape.key} ({job.exporter.format})", cause)
        stats["max_abs_err"] = check.max_abs_err
    return Row(block, shape, "ok", median, stats)


def steadiest(measure: Callable[[], dict[str, Any]], protocol: Protocol) -> dict[str, Any]:
    """Measure; while the spread is too wide (`spread`), measure again (up to `retries`), keep
    the steadiest run and flag it `wide` if even that one is too wide."""
    runs = [measure()]
    while spread(runs[-1]) > protocol.max_cv and len(runs) <= protocol.retries:
        runs.append(measure())
    best = min(runs, key=spread)
    best["attempts"] = len(runs)
    if spread(best) > protocol.max_cv:
        best["wide"] = True
    return best


def spread(stats: dict[str, Any]) -> float:
    """A measurement's coefficient of variation as its middle half of repeats shows it: IQR /
    1.349 / median (the cv of normal samples), of its ratios to the reference where timed
    against one. The stored `cv` (std / mean) is ruled by the one or two repeats a spike of a
    shared machine hits, which the median ignores (docs/measurement.md, "Wide rows"). Where a
    measurement has no samples (a device's summary), its `cv`."""
    samples, ref = stats.get("samples_ms"), stats.get("reference_ms")
    if not samples:
        return float(stats["cv"])
    a = np.asarray(samples, dtype=float) / (np.asarray(ref, dtype=float) if ref else 1.0)
    q1, median, q3 = np.percentile(a, [25, 50, 75])
    return float((q3 - q1) / 1.349 / median) if median > 0 else 0.0


def inspect_rows(job: BenchmarkJob, progress: bool = True) -> tuple[int, list[str]]:
    """For a runtime that does not exist here: export every row and check each artifact with
    the converter's own tools. Returns (artifacts checked, rows the format cannot express)."""
    artifacts = export_rows(job, rows_to_measure(job.space, job.exporter), progress)
    unavailable = [f"{k} ({v})" for k, v in artifacts.items() if isinstance(v, str)]
    ok = [a for a in artifacts.values() if not isinstance(a, str)]
    for artifact in ok:
        job.exporter.inspect(artifact)
    return len(ok), unavailable


def _start_table(job: BenchmarkJob) -> LatencyTable:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fresh = LatencyTable({**job.provenance, "created": now, "updated": now})
    if job.force or not job.table_path.exists():
        return fresh
    old = load_table(job.table_path)
    # a table that records no precision was timed at its target's own
    old.provenance.setdefault("precision", job.provenance.get("precision"))
    for k in _SAME_SETUP:
        was, given = old.provenance.get(k, _UNSTATED.get(k)), job.provenance.get(k, _UNSTATED.get(k))
        if was != given:
            raise PipelineError(
                f"table '{job.table_path}' was measured with {k}={was!r}, this run uses "
                f"{given!r}; pass --force to remeasure it or --device NAME for a new table"
            )
    old.provenance.update(job.provenance, created=old.provenance.get("created", now), updated=now)
    return old


def _reference_for(job: BenchmarkJob, table: LatencyTable) -> tuple[str, LayerShape] | None:
    """The row to time the others against: the table's own when it has one (resumed rows must
    share its scale); none for a table already measured without one (for the same reason);
    else `reference_row`, recorded in the table's provenance."""
    ref = table.reference
    if ref is not None:
        if not job.reference:
            raise PipelineError(f"table '{job.table_path}' was measured against a reference row; drop --no-reference, "
                                "or pass --force to remeasure it without one")
        try:
            return str(ref["block"]), LayerShape(*(int(ref[k]) for k in ("in_ch", "out_ch", "stride", "height", "width")))
        except (KeyError, TypeError, ValueError):
            raise PipelineError(f"table '{job.table_path}': its reference row is malformed; the file is damaged: "
                                "remeasure it with 'pipeline benchmark --force'") from None
    if not job.reference:
        return None
    if any(r.status == "ok" for r in table.rows.values()):
        log.info("%s was measured without a reference row, so new rows are too (--force remeasures it against one)",
                 job.table_path)
        return None
    block, shape = reference_row(job.space)
    table.provenance["reference"] = {"row": row_key(block, shape), "block": block, **asdict(shape), "median_ms": None}
    return block, shape


def _missing(job: BenchmarkJob, table: LatencyTable) -> list[tuple[str, LayerShape]]:
    return [(b, s) for b, s in rows_to_measure(job.space, job.exporter) if row_key(b, s) not in table.rows
            or table.rows[row_key(b, s)].status == "failed"]


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def benchmark_space(job: BenchmarkJob, progress: bool = True) -> tuple[LatencyTable, int]:
    """Measure every row `job.space` needs that the table lacks. Returns (table, rows measured)."""
    stamp = _stamp(job.table_path)
    table = _start_table(job)
    ref = _reference_for(job, table)
    layers_of: dict[str, list[int]] = {}
    for i, shape in enumerate(job.space.layers):
        for b in job.space.candidates(i):
            layers_of.setdefault(row_key(b, shape), []).append(i)
    todo = _missing(job, table)
    # Export first (in parallel), then time one artifact at a time: timings taken while
    # converters load the other cores would be noise.
    artifacts = export_rows(job, todo, progress)
    timing = bool(todo) or bool(_suspects(table))  # rows to measure, or rows a resumed table has to re-time
    if job.remote is not None and timing:  # the agent queues its device's timings: nothing here to keep quiet
        bar = tqdm(todo, desc=f"measure {job.provenance.get('target')} on {job.remote.device.id}", unit="block",
                   disable=not progress or not todo)
        measure = RemoteRows(job, _reference_artifact(job, ref) if ref else None)
        _measure_rows(job, table, bar, artifacts, layers_of, measure)
        table.provenance["affinity"] = job.remote.provenance.get("affinity")
    elif job.remote is None:
        with timing_alone() if timing else contextlib.nullcontext():
            if todo and not job.force and _stamp(job.table_path) != stamp:
                # Another run wrote this table while we exported or waited for it to finish timing:
                # start from what it left, or our first save would drop the rows it measured.
                table = _start_table(job)
                ref = _reference_for(job, table)
                todo = _missing(job, table)
                artifacts.update(export_rows(job, [r for r in todo if row_key(*r) not in artifacts], progress))
                log.warning("another run measured this table meanwhile; %d row(s) are left to measure", len(todo))
            _time_here(job, table, todo, artifacts, layers_of, ref, progress, timing)
    for key, row in table.rows.items():  # keep layer lists current for rows measured earlier
        row.layers = layers_of.get(key, row.layers)
    table.apply_reference()
    flag_implausible(table)
    table.save(job.table_path)
    return table, len(todo)


def _time_here(job: BenchmarkJob, table: LatencyTable, todo: list[tuple[str, LayerShape]], artifacts: dict,
               layers_of: dict, ref: tuple[str, LayerShape] | None, progress: bool, timing: bool) -> None:
    timer = partial(RowTimer, job, _reference_artifact(job, ref) if ref and timing else None)
    bar = tqdm(todo, desc=f"measure {job.provenance.get('target')}", unit="block", disable=not progress or not todo)
    isolated = job.protocol.row_timeout_s > 0 and timing
    with pinned(job.protocol.threads, job.protocol.pin) as cores:  # a worker inherits the pinning
        table.provenance["affinity"] = cores
        if isolated:
            with RowWorker(timer, job.protocol.row_timeout_s) as worker:
                _measure_rows(job, table, bar, artifacts, layers_of, worker.measure)
    if not isolated and timing:  # not inside `pinned`: `measure` pins after each artifact's first run
        _measure_rows(job, table, bar, artifacts, layers_of, timer())


class RemoteRows:
    """`measure_row` on an agent's device (`job.remote`): each row sent once and timed there
    against the reference row; checked against PyTorch with the outputs the device computed, or
    here where its tool returns none and this machine has the runtime, else by the converter."""

    def __init__(self, job: BenchmarkJob, reference: tuple[str, LayerShape, Artifact] | None) -> None:
        assert job.remote is not None
        self.job, self.timer = job, job.remote
        self.against = None
        if reference is not None:
            b, s, a = reference
            self.against = self.timer.load(a, [row_module(b, s)[1].numpy()])

    def __call__(self, block: str, shape: LayerShape, artifact: Artifact) -> Row:
        index = self.timer.load(artifact, [row_module(block, shape)[1].numpy()])

        def outputs() -> Run | None:
            outs = self.timer.outputs(index)
            if outs is not None:
                return lambda inputs: outs
            return _load(self.job, block, shape, artifact) if self.job.runner is not None else None

        return timed_row(self.job, block, shape, artifact, lambda: self.timer.stats(index, self.against), outputs)


def _reference_artifact(job: BenchmarkJob, ref: tuple[str, LayerShape]) -> tuple[str, LayerShape, Artifact]:
    artifact = export_rows(job, [ref], progress=False)[row_key(*ref)]
    if isinstance(artifact, str):
        raise PipelineError(f"the reference row {row_key(*ref)} cannot be exported ({artifact}); "
                            "pass --no-reference to time rows without one")
    return (*ref, artifact)


def _measure_rows(job: BenchmarkJob, table: LatencyTable, bar: Any, artifacts: dict, layers_of: dict,
                  measure: Callable[[str, LayerShape, Artifact], Row]) -> None:
    for block, shape in bar:
        bar.set_postfix_str(row_key(block, shape))
        artifact = artifacts[row_key(block, shape)]
        if isinstance(artifact, str):
            row = Row(block, shape, status="unavailable", reason=artifact)
        else:
            row = measure(block, shape, artifact)
            if row.status == "failed":
                log.warning("%s failed: %s", row.key, row.reason)
        row.layers = layers_of.get(row.key, [])
        table.add(row)
        table.apply_reference()
        table.save(job.table_path)  # after every row: an interruption loses at most one
    _more_rounds(job, table, artifacts, measure, disable=bar.disable)
    retime_implausible(job, table, artifacts, measure, disable=bar.disable)


def _more_rounds(job: BenchmarkJob, table: LatencyTable, artifacts: dict,
                 measure: Callable[[str, LayerShape, Artifact], Row], disable: bool) -> None:
    """Rounds 2..`job.rounds` over the rows just measured."""
    keys = [k for k, a in artifacts.items() if not isinstance(a, str) and k in table.rows and table.rows[k].status == "ok"]
    _rounds(job, table, keys, artifacts, measure, job.rounds - 1,
            tqdm(total=(job.rounds - 1) * len(keys), desc=f"more rounds {job.provenance.get('target')}", unit="block",
                 disable=disable or job.rounds < 2 or not keys))


def _rounds(job: BenchmarkJob, table: LatencyTable, keys: list[str], artifacts: dict,
            measure: Callable[[str, LayerShape, Artifact], Row], rounds: int, bar: Any) -> None:
    """`rounds` more rounds over the rows `keys` (odd rounds backwards, so no row is always timed
    first or last); after each measurement the row becomes its median round so far, so the table
    on disk is whole and valid at every moment."""
    timed = {k: [table.rows[k]] for k in keys}
    with bar:
        for r in range(1, rounds + 1):
            for k in keys if r % 2 == 0 else keys[::-1]:
                first = timed[k][0]
                row = measure(first.block, first.shape, artifacts[k])
                if row.status == "ok":  # a round that failed (a hang) leaves the others standing
                    timed[k].append(row)
                table.add(median_round(timed[k]))
                table.apply_reference()
                table.save(job.table_path)
                bar.update(1)


# A row that contradicts the table is timed this many more times, interleaved with the rows it
# contradicts, and each keeps its median round (the first measurement one of them): one slow
# spell then outvotes nothing. docs/measurement.md, "Rows that contradict the table".
RETIME_ROUNDS = 3


def _suspects(table: LatencyTable) -> dict[str, Implausible]:
    """The implausible rows not re-timed yet: a row already flagged was, and stays as it is."""
    return {k: v for k, v in implausible_rows(table).items() if "implausible" not in table.rows[k].stats}


def retime_implausible(job: BenchmarkJob, table: LatencyTable, artifacts: dict,
                       measure: Callable[[str, LayerShape, Artifact], Row], disable: bool) -> None:
    """Re-time every row that contradicts the table, with the rows it contradicts, in
    `RETIME_ROUNDS` interleaved rounds; a re-timed row records why (`retimed`), and
    `table.retimed` lists them. The rows that stay implausible are flagged afterwards
    (`flag_implausible`)."""
    suspects = _suspects(table)
    keys = list(dict.fromkeys(k for item in suspects.values() for k in (item.key, *item.partners)))
    if not keys:
        return
    rows = [(table.rows[k].block, table.rows[k].shape) for k in keys if k not in artifacts]
    artifacts = {**artifacts, **(export_rows(job, rows, progress=False) if rows else {})}  # cached: a resumed table's
    keys = [k for k in keys if not isinstance(artifacts[k], str)]
    why = {k: item.reason for item in suspects.values() for k in (item.key, *item.partners)}
    _rounds(job, table, keys, artifacts, measure, RETIME_ROUNDS,
            tqdm(total=RETIME_ROUNDS * len(keys), desc="re-time rows that contradict the table", unit="block",
                 disable=disable))
    for k in keys:
        table.rows[k].stats["retimed"] = why[k] if k in suspects else f"beside {', '.join(_contradicted_by(suspects, k))}"
    table.retimed.extend(k for k in keys if k not in table.retimed)
    table.save(job.table_path)


def _contradicted_by(suspects: dict[str, Implausible], key: str) -> list[str]:
    return [s.key for s in suspects.values() if key in s.partners]


def flag_implausible(table: LatencyTable) -> None:
    """Flag each row that contradicts the table (`implausible`: why), and clear the flag of a
    row that no longer does (another row it was judged against re-timed or remeasured)."""
    found = implausible_rows(table)
    for key, row in table.rows.items():
        if key in found:
            row.stats["implausible"] = found[key].reason
        else:
            row.stats.pop("implausible", None)


def median_round(rounds: list[Row]) -> Row:
    """The round whose median is the median of all rounds (the lower one of an even count),
    whole, so its samples still give its median; the other rounds' medians go in its stats.
    Rows timed against the reference are ranked by their ratio to it."""
    pick = sorted(rounds, key=lambda r: r.stats.get("ratio", r.median_ms or 0.0))[(len(rounds) - 1) // 2]
    stats = {**pick.stats, "rounds": len(rounds), "round_medians_ms": [r.median_ms for r in rounds]}
    return Row(pick.block, pick.shape, pick.status, pick.median_ms, stats, pick.reason, rounds[0].layers)
