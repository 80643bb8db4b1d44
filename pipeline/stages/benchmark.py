"""The benchmark stage: a latency table measured here, imported from elsewhere, or a bundle of
blocks to time on a device this machine is not."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import bundle, importers
from benchmarks.context import IN_CONTEXT, at_or_below_base, benchmark_in_context, check_job, context_table_path
from benchmarks.agent.client import Remote, RemoteTimer, connect
from benchmarks.device import HOST_DEVICE, host_info
from benchmarks.harness import BenchmarkJob, benchmark_space, inspect_rows
from benchmarks.protocol import Protocol
from benchmarks.table import LatencyTable
from benchmarks.targets import Target, require_exporter
from blocks.space import SearchSpace
from core.errors import PipelineError, PlatformUnsupported
from core.workspace import Workspace


@dataclass(frozen=True)
class BenchmarkReport:
    table: LatencyTable
    path: Path
    measured: int
    agent: dict[str, Any] | None = None  # timed through an agent: its url, its device, artifacts sent to it

    @property
    def unavailable(self) -> list[str]:
        return [k for k, r in self.table.rows.items() if r.status != "ok"]

    def _flagged(self, flag: str) -> dict[str, Any]:
        """The measured rows carrying `flag` in their statistics, with its value."""
        return {k: r.stats[flag] for k, r in self.table.rows.items() if r.status == "ok" and r.stats.get(flag)}

    def to_dict(self) -> dict[str, Any]:
        """`benchmark --json`: where the table is, how its rows came to be, and each row's ms."""
        p = self.table.provenance
        imported = p.get("imported_from")
        return {"table": str(self.path), "target": self.table.target, "device": self.table.device,
                "space": p.get("space"), "rows": len(self.table.rows), "measured": self.measured,
                "reused": 0 if imported else len(self.table.rows) - self.measured,
                "imported_from": imported, "agent": self.agent, "reference": self.table.reference,
                "unavailable": self.unavailable, "timing": p.get("timing", "isolated"),
                "at_or_below_base": at_or_below_base(self.table) if p.get("timing") == IN_CONTEXT else None,
                "retimed": list(self.table.retimed), "implausible": self._flagged("implausible"),
                "wide": sorted(self._flagged("wide")),
                "latency_ms": {k: r.median_ms if r.status == "ok" else None for k, r in self.table.rows.items()}}


def benchmark(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol,
              device: str = HOST_DEVICE, table_path: Path | None = None, force: bool = False,
              progress: bool = True, jobs: int = 1, rounds: int = 1, reference: bool = True,
              remote: Remote | None = None, timing: str = "isolated") -> BenchmarkReport:
    """Measure every (layer, block) of `space` for `target` on this host, or on the device of the
    agent `remote` names, and write the table (each row in `rounds` rounds, keeping its median
    round; timed against a reference row unless `reference` is False). With `timing`
    "in-context", each row is timed inside a whole network instead (`benchmarks.context`), in a
    table beside the isolated one, which is measured first where it is missing or incomplete.

    Where the target's runtime does not exist here (Core ML off macOS) and no agent is named,
    every block is still exported and checked, then PlatformUnsupported says how to obtain the
    table instead.
    """
    if device != HOST_DEVICE and remote is None:  # a table belongs to where it was timed
        raise PipelineError(f"benchmark times blocks on this machine ('{HOST_DEVICE}'); for '{device}', "
                            f"'pipeline benchmark --target {target.name} --device {device}' writes them to a bundle to "
                            "time there, 'pipeline benchmark --remote URL' times them through an agent there, or "
                            "'pipeline benchmark import' brings in a table measured there")
    require_exporter(target)
    timer = connect(remote, target.runner, target.runner_options, protocol) if remote is not None else None
    try:
        return _benchmark(space, target, ws, protocol, table_path, force, progress, jobs, rounds, reference, timer,
                          timing)
    finally:
        if timer is not None:
            timer.close()


def _benchmark(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol, table_path: Path | None,
               force: bool, progress: bool, jobs: int, rounds: int, reference: bool,
               timer: RemoteTimer | None, timing: str = "isolated") -> BenchmarkReport:
    exporter = target.make_exporter()
    unavailable = target.measurable_here()
    runner = None if unavailable else target.make_runner(protocol.threads)  # times here, or checks a device's rows
    device = timer.table_device if timer else HOST_DEVICE
    isolated_path = ws.table(space.name, target.name, device)
    path = table_path or (context_table_path(isolated_path) if timing == IN_CONTEXT else isolated_path)
    runtime = target.runner_class().runtime
    provenance = {
        "target": target.name, "device": device, "host": timer.describe() if timer else host_info(),
        "format": exporter.format, "exporter": exporter.name, "exporter_versions": exporter.versions(),
        "exporter_options": exporter.fingerprint(), "precision": exporter.precision, "runtime": runtime,
        "runtime_version": timer.device.runtimes.get(runtime) if timer else runner.version() if runner else None,
        "runner_options": dict(target.runner_options),
        "threads": protocol.threads, "protocol": protocol.to_dict(), "rounds": rounds,
        "space": space.name, "space_fingerprint": space.fingerprint, "block_set": list(space.blocks),
        "unit": "ms",
    }
    quantization = exporter.quantization()
    if quantization is not None:  # each block calibrated on inputs of its own shape
        provenance["quantization"] = quantization.to_dict()
    job = BenchmarkJob(space, exporter, runner, target.tolerance_for(exporter), protocol, path, ws.cache,
                       provenance, force, jobs, rounds, reference, timer)
    if runner is None and timer is None:
        checked, bad = inspect_rows(job, progress)
        skipped = f"; {len(bad)} cannot be expressed: {bad[0]}" if bad else ""
        raise PlatformUnsupported(
            f"exported and checked {checked} {exporter.format} artifacts for '{space.name}'{skipped}; no latency "
            f"table written: {unavailable}; or time them on a device through an agent there (--remote URL)"
        )
    if timing == IN_CONTEXT:
        table, measured = _in_context(job, target, isolated_path, progress)
    else:
        table, measured = benchmark_space(job, progress)
    agent = {"url": timer.client.remote.url, "device": timer.device.id, "artifacts_sent": timer.client.sent} if timer else None
    return BenchmarkReport(table, path, measured, agent)


def _in_context(job: BenchmarkJob, target: Target, isolated_path: Path, progress: bool) -> tuple[LatencyTable, int]:
    """The in-context table, from the isolated one at `isolated_path` (measured first as far as it
    lacks rows: it picks the base network and splits its time)."""
    check_job(job)
    isolated, _ = benchmark_space(replace(job, table_path=isolated_path, force=False), progress)
    return benchmark_in_context(replace(job, provenance={**job.provenance, "timing": IN_CONTEXT}), target, isolated,
                                isolated_path, progress)


def import_table(file: Path, space: SearchSpace, target: Target, ws: Workspace, device: str,
                 table_path: Path | None = None, force: bool = False) -> BenchmarkReport:
    """Bind a table measured elsewhere (this tool's format, or ProxylessNAS/OFA lookup YAML) to a
    target, a device name and a space, and write it where search and export look for it."""
    if device == HOST_DEVICE:
        raise PipelineError(
            f"an imported table needs the name of the device it was measured on, not '{HOST_DEVICE}'; "
            "pass --device NAME (e.g. --device pixel1)"
        )
    path = table_path or ws.table(space.name, target.name, device)
    if path.exists() and not force:
        raise PipelineError(f"a table already exists at '{path}'; pass --force to replace it or --device NAME for another")
    if bundle.is_bundle_measurements(file):  # the times of a `benchmark --device` bundle
        table = bundle.table_from_measurements(file, space, target, device)
    else:
        table = importers.import_table(file, target.name, device, space)
    table.save(path)
    return BenchmarkReport(table, path, 0)



def bundle_blocks(space: SearchSpace, command: str, target: Target, ws: Workspace, device: str, threads: int,
                  rounds: int | None = None, jobs: int = 1, progress: bool = True) -> bundle.Bundle:
    """`benchmark --device NAME` for a device this machine is not: every row the table needs,
    exported and checked here, in a bundle with the script that times them there."""
    return bundle.prepare_blocks(space, command, target, ws, device, threads, rounds or bundle.BLOCK_ROUNDS, jobs,
                                 progress)


def benchmark_or_bundle(space: SearchSpace, target: Target, ws: Workspace, protocol: Protocol, device: str,
                        command: str, table_path: Path | None = None, force: bool = False, progress: bool = True,
                        jobs: int = 1, rounds: int | None = None, reference: bool = True,
                        remote: Remote | None = None, timing: str = "isolated") -> BenchmarkReport | bundle.Bundle:
    """`pipeline benchmark`: the table measured here, or, for a device this machine is not, the
    bundle of its blocks that `command` (with the times measured there) turns into its table."""
    if device != HOST_DEVICE and remote is None:  # a table belongs to where it was timed: time it there
        if timing == IN_CONTEXT:
            raise PipelineError(f"--timing {IN_CONTEXT} times whole networks, which a device's bundle of blocks does "
                                "not; time it through an agent there (--remote URL), or drop --timing")
        return bundle_blocks(space, command, target, ws, device, protocol.threads, rounds, jobs, progress)
    return benchmark(space, target, ws, protocol, device, table_path, force, progress, jobs, rounds or 1, reference,
                     remote, timing)
