"""Build a latency table: export every (block, shape) a space needs, check it, time it.

Rows are written to disk as they are measured, so an interrupted run keeps its work and the
next run measures only what is missing. Exported artifacts are cached by content key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from benchmarks.protocol import Protocol
from benchmarks.runners.base import Runner
from benchmarks.table import LatencyTable, Row, load_table, required_rows, row_key
from blocks.space import LayerShape, SearchSpace, build_part
from export.base import Artifact, Exporter
from export.verify import Tolerance, check_against_torch
from pipeline.errors import PipelineError, first_line

log = logging.getLogger(__name__)

# Provenance fields that must agree before rows of an existing table are reused.
_SAME_SETUP = ("target", "device", "runtime", "runtime_version", "exporter", "threads")


@dataclass(frozen=True)
class BenchmarkJob:
    space: SearchSpace
    exporter: Exporter
    runner: Runner
    tolerance: Tolerance
    protocol: Protocol
    table_path: Path
    cache_dir: Path
    provenance: dict[str, Any] = field(default_factory=dict)  # target, device, host, ...
    force: bool = False


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


def cached_export(
    exporter: Exporter, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], cache_dir: Path, ident: dict
) -> Artifact:
    """Export once per (module identity, input shape, exporter and its versions)."""
    key = hashlib.sha256(json.dumps({**ident, **exporter.fingerprint()}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / exporter.format / f"{key}{exporter.suffix}"
    if path.exists():
        return Artifact(path, exporter.format, exporter.name, tuple(tuple(x.shape) for x in inputs))
    return exporter.export(module, inputs, path)


def measure_row(job: BenchmarkJob, block: str, shape: LayerShape) -> Row:
    """Export, verify and time one (block, shape); an export failure marks the row unavailable."""
    seed = zlib.crc32(row_key(block, shape).encode())
    torch.manual_seed(seed)
    module = randomize_batchnorm(build_part(block, shape), seed)
    x = example_input(shape, seed)
    ident = {"block": block, "shape": shape.key}
    try:
        artifact = cached_export(job.exporter, module, (x,), job.cache_dir, ident)
    except PipelineError as e:
        log.warning("block %s at %s cannot be exported to %s: %s", block, shape.key, job.exporter.format, e)
        return Row(block, shape, status="unavailable", reason=str(e))
    what = f"block '{block}' at {shape.key} ({job.exporter.format})"
    check = check_against_torch(module, (x,), job.runner.load(artifact), job.tolerance, what)
    samples = job.runner.time(artifact, [x.numpy()], job.protocol)
    stats = samples.stats()
    median = stats.pop("median_ms")
    stats["max_abs_err"] = check.max_abs_err
    return Row(block, shape, "ok", median, stats)


def _start_table(job: BenchmarkJob) -> LatencyTable:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    fresh = LatencyTable({**job.provenance, "created": now, "updated": now})
    if job.force or not job.table_path.exists():
        return fresh
    old = load_table(job.table_path)
    for k in _SAME_SETUP:
        if old.provenance.get(k) != job.provenance.get(k):
            raise PipelineError(
                f"table '{job.table_path}' was measured with {k}={old.provenance.get(k)!r}, this run uses "
                f"{job.provenance.get(k)!r}; pass --force to remeasure it or --device NAME for a new table"
            )
    old.provenance.update(job.provenance, created=old.provenance.get("created", now), updated=now)
    return old


def benchmark_space(job: BenchmarkJob, progress: bool = True) -> tuple[LatencyTable, int]:
    """Measure every row `job.space` needs that the table lacks. Returns (table, rows measured)."""
    table = _start_table(job)
    layers_of: dict[str, list[int]] = {}
    for i, shape in enumerate(job.space.layers):
        for b in job.space.candidates(i):
            layers_of.setdefault(row_key(b, shape), []).append(i)
    todo = [(b, s) for b, s in required_rows(job.space) if row_key(b, s) not in table.rows
            or table.rows[row_key(b, s)].status == "failed"]
    bar = tqdm(todo, desc=f"benchmark {job.provenance.get('target')}", unit="block", disable=not progress)
    for block, shape in bar:
        bar.set_postfix_str(row_key(block, shape))
        row = measure_row(job, block, shape)
        row.layers = layers_of.get(row.key, [])
        table.add(row)
        table.save(job.table_path)  # after every row: an interruption loses at most one
    for key, row in table.rows.items():  # keep layer lists current for rows measured earlier
        row.layers = layers_of.get(key, row.layers)
    table.save(job.table_path)
    return table, len(todo)
