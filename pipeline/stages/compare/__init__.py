"""The compare stage: architectures searched for different devices, side by side. `report`
computes the comparison; `render` turns it into text, Markdown, JSON and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.device import HOST_DEVICE
from benchmarks.networks import measure_architecture
from benchmarks.protocol import Protocol
from benchmarks.targets import resolve_target
from blocks import resolve_space
from blocks.architecture import Architecture
from core.errors import PipelineError
from core.workspace import Workspace
from pipeline.stages.compare.render import write_outputs
from pipeline.stages.compare.report import Comparison, Entry, load_entry
from pipeline.stages.compare.report import compare as run_compare

Spec = tuple[Path, Path, str | None]  # (table, architecture, label or None for the table's target/device)


def compare(specs: list[Spec], ws: Workspace, protocol: Protocol, measure: bool = True,
            out_dir: Path | None = None) -> tuple[Comparison, dict[str, Path]]:
    """Compare (table, architecture, label) pairs; time each architecture on every entry that is
    this host's table of a target that runs here. Writes compare.md/.json/.png."""
    entries = [load_entry(t, a, label) for t, a, label in specs]

    def timer(on: Entry, arch: Architecture) -> float | None:
        if on.table.device != HOST_DEVICE:
            return None  # a phone's column: this machine's timing would say nothing about it
        return measure_architecture(arch, resolve_target(on.table.target), protocol, ws.cache)

    comparison = run_compare(entries, timer if measure else None)
    return comparison, write_outputs(comparison, out_dir or ws.root / "compare")


def to_dict(comparison: Comparison, files: dict[str, Path]) -> dict[str, Any]:
    """`compare --json`: what compare.json holds, and the files written."""
    return {**comparison.to_dict(), "files": {k: str(v) for k, v in files.items()}}


def parse_entries(entries: tuple[str, ...], labels: tuple[str, ...], ws: Workspace, default_space: str) -> list[Spec]:
    """The command line's entries, each with its --label (given for all of them, in order, or for none)."""
    if labels and len(labels) != len(entries):
        raise PipelineError(f"--label given {len(labels)} time(s) for {len(entries)} entries; give one per entry, "
                            "in the order of the entries, or none")
    specs = [parse_entry(e, ws, default_space) for e in entries]
    return [(table, arch, label) for (table, arch, _), label in zip(specs, labels or [None] * len(specs))]


def parse_entry(spec: str, ws: Workspace, default_space: str) -> Spec:
    """`TARGET/DEVICE[@SPACE]` (the workspace's table and architecture) or `TABLE.json=ARCH.json`."""
    if "=" in spec:
        table, _, arch = spec.partition("=")
        return Path(table), Path(arch), None
    where, _, space_name = spec.partition("@")
    target, slash, device = where.partition("/")
    if not slash or not target or not device:
        raise PipelineError(
            f"compare entry '{spec}' must be TARGET/DEVICE[@SPACE] (e.g. android/pixel1@proxyless) or TABLE=ARCH files"
        )
    space = resolve_space(space_name or default_space)
    table, arch = ws.table(space.name, target, device), ws.architecture(space.name, target, device)
    dev = f" --device {device}" if device != HOST_DEVICE else ""
    if not table.exists():
        raise PipelineError(f"compare entry '{spec}': no table at '{table}'; run 'pipeline benchmark --target {target}"
                            f"{dev} --space {space.name}' (or 'pipeline benchmark import') first")
    if not arch.exists():
        raise PipelineError(f"compare entry '{spec}': no architecture at '{arch}'; run 'pipeline search --target {target}"
                            f"{dev} --space {space.name}' first")
    return table, arch, None
