"""The compare stage: architectures searched for different devices, side by side. `report`
computes the comparison; `render` turns it into text, Markdown, JSON and a plot."""

from __future__ import annotations

from pathlib import Path

from benchmarks.device import HOST_DEVICE
from benchmarks.networks import measure_architecture
from benchmarks.protocol import Protocol
from benchmarks.targets import resolve_target
from blocks.architecture import Architecture
from core.workspace import Workspace
from pipeline.stages.compare.render import write_outputs
from pipeline.stages.compare.report import Comparison, Entry, load_entry
from pipeline.stages.compare.report import compare as run_compare


def compare(specs: list[tuple[Path, Path, str | None]], ws: Workspace, protocol: Protocol, measure: bool = True,
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
