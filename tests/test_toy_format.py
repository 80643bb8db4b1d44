"""A format is one place: an exporter class, a runner class and their registry lines (all in
this file) are enough to build, time, check and bundle a latency table. Everything else that
depends on the format (the bundle's device script or README, `pipeline targets`, the perf
scripts' opener) is read from those classes.

The classes live at module level, registered only by the fixture: the timing child process
gets the runner by pickle, so it imports this module by name, and must not register anything
by doing so.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from benchmarks import bundle
from benchmarks.protocol import Protocol
from benchmarks.runners import RUNNERS, Call, DeviceTool, Run, Runner
from benchmarks.targets import TARGETS, Target, resolve_target
from blocks.space import SearchSpace
from core.fileio import atomic_path
from core.workspace import Workspace
from export import EXPORTERS, Artifact, Exporter
from export.base import quiet_converters
from pipeline.render import targets_text
from pipeline.stages import benchmark as benchmark_stage

FAST = Protocol(warmup_runs=2, warmup_ms=1.0, repeats=5, min_repeat_ms=0.5, threads=1)
SHAPES = "input_shapes.json"  # TorchScript keeps no input shapes, so the file carries them


@dataclass(frozen=True)
class NoOptions:
    """The toy format has no options."""


class TorchScriptExporter(Exporter):
    """A traced TorchScript module, with its input shapes inside the file."""

    name = "toy-torchscript"
    format = "toyscript"
    suffix = ".toyscript"
    Options = NoOptions

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def export(self, module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path,
               calibration: object = None, app: object = None) -> Artifact:
        with atomic_path(path) as tmp, quiet_converters(fds=False):  # torch.jit warns it is deprecated
            traced = torch.jit.trace(module.eval(), example_inputs)
            torch.jit.save(traced, str(tmp), _extra_files={SHAPES: json.dumps([list(x.shape) for x in example_inputs])})
        return self.artifact(path, example_inputs)


class TorchScriptRunner(Runner):
    """TorchScript run by torch itself; the process's pinning bounds its threads."""

    name = "toy-torch"
    formats = ("toyscript",)
    runtime = "torch"
    Options = NoOptions

    def version(self) -> str:
        return torch.__version__

    def load(self, artifact: Artifact) -> Run:
        with quiet_converters(fds=False):
            module = torch.jit.load(str(artifact.path)).eval()

        def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                return [module(*(torch.from_numpy(x) for x in inputs)).numpy()]

        return run

    @classmethod
    def open_plain(cls, path: str, threads: int) -> Call:
        extra = {SHAPES: ""}
        with quiet_converters(fds=False):
            module = torch.jit.load(path, _extra_files=extra).eval()
        g = torch.Generator().manual_seed(0)
        inputs = [torch.randn(*shape, generator=g) for shape in json.loads(extra[SHAPES])]
        return lambda: module(*inputs)


def parse_toy_timer(text: str) -> float:
    m = re.search(r"^median: ([0-9.]+) us$", text, re.MULTILINE)
    if m is None:
        raise ValueError("it has no 'median: N us' line")
    return float(m.group(1)) / 1000.0


class TorchScriptPhoneRunner(TorchScriptRunner):
    """The same runtime with a command-line timer on the phone."""

    name = "toy-torch-phone"
    device_tool = DeviceTool("toy_timer (build it from the toy runtime)", "TOY_TIMER", "/data/local/tmp/toy_timer",
                             "'$TOOL' --model='$MODEL' --threads=$THREADS", parse_toy_timer,
                             "each run: the toy timer's median of 50 runs")


TOY = Target("toy", "TorchScript, timed by torch", TorchScriptExporter.name, TorchScriptRunner.name)
TOY_PHONE = Target("toy-phone", "TorchScript, timed by toy_timer on a phone", TorchScriptExporter.name,
                   TorchScriptPhoneRunner.name)


@pytest.fixture
def toy_format() -> Iterator[None]:
    """The toy format registered for one test: its registry lines, then their removal."""
    EXPORTERS.add(TorchScriptExporter.name, TorchScriptExporter)
    RUNNERS.add(TorchScriptRunner.name, TorchScriptRunner)
    RUNNERS.add(TorchScriptPhoneRunner.name, TorchScriptPhoneRunner)
    TARGETS.add(TOY.name, TOY)
    TARGETS.add(TOY_PHONE.name, TOY_PHONE)
    try:
        yield
    finally:
        del EXPORTERS._entries[TorchScriptExporter.name]
        del RUNNERS._entries[TorchScriptRunner.name], RUNNERS._entries[TorchScriptPhoneRunner.name]
        del TARGETS._entries[TOY.name], TARGETS._entries[TOY_PHONE.name]


def _independent_timing() -> object:
    path = Path(__file__).resolve().parents[1] / "perf/independent_timing.py"
    spec = importlib.util.spec_from_file_location("independent_timing", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_format_registered_here_builds_times_and_bundles_a_table(toy_format: None, micro_space: SearchSpace,
                                                                   tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    target = resolve_target("toy")
    report = benchmark_stage.benchmark(micro_space, target, ws, FAST, progress=False)
    rows = list(report.table.rows.values())
    assert rows and all(r.status == "ok" and r.median_ms > 0 for r in rows), [r.reason for r in rows]
    # each timed row was run against PyTorch on the same input, within the target's tolerance
    assert all(0 <= r.stats["max_abs_err"] <= 1e-4 for r in rows)
    p = report.table.provenance
    assert (p["format"], p["exporter"], p["runtime"]) == ("toyscript", "toy-torchscript", "torch")
    assert all(f.suffix == ".toyscript" for f in (ws.cache / "toyscript").iterdir())

    # a phone this machine is not: a bundle of the same rows, to time there by hand
    b = benchmark_stage.bundle_blocks(micro_space, "pipeline benchmark --target toy --device phone", target, ws,
                                      "phone", threads=1)
    files = sorted((b.folder / "blocks").iterdir())
    assert len(files) == len(b.networks) == len(rows)
    assert {f.suffix for f in files} == {".toyscript"}
    assert not (b.folder / bundle.SCRIPT).exists()  # the toy runner has no device tool
    readme = (b.folder / "README.txt").read_text()
    assert "Write one row per block" in readme and "with 1 thread(s)" in readme and bundle.SCRIPT not in readme
    assert bundle.summary(b)["script"] is None


def test_a_device_tool_on_the_runner_gives_the_bundle_its_script_and_reads_its_logs(
        toy_format: None, micro_space: SearchSpace, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    target = resolve_target("toy-phone")
    b = benchmark_stage.bundle_blocks(micro_space, "pipeline benchmark --target toy-phone --device phone", target, ws,
                                      "phone", threads=1)
    script = (b.folder / bundle.SCRIPT).read_text()
    assert "TOOL=${TOY_TIMER:-/data/local/tmp/toy_timer}" in script
    assert "'$TOOL' --model='$DIR/$n.toyscript' --threads=$THREADS" in script
    assert 'push "blocks/$n.toyscript"' in script
    assert "toy_timer (build it from the toy runtime)" in (b.folder / "README.txt").read_text()
    logs = b.folder / bundle.LOGS
    logs.mkdir()
    for i, n in enumerate(b.networks):  # what the script leaves after one round
        (logs / f"{n.name}.r0.log").write_text(f"toy timer\nmedian: {1000 + i} us\n")
    table = benchmark_stage.import_table(logs, micro_space, target, ws, "phone").table
    assert sorted(r.median_ms for r in table.rows.values()) == pytest.approx([1 + i / 1000 for i in range(len(b.networks))])
    assert table.provenance["source"] == "timed on phone with toy_timer"


def test_targets_and_perf_scripts_read_the_format_from_its_classes(toy_format: None, micro_space: SearchSpace,
                                                                   tmp_path: Path) -> None:
    text = targets_text([TOY, TOY_PHONE])
    assert "exporter toy-torchscript (toyscript, .toyscript), runner toy-torch (torch)" in text
    assert "export here: yes; measure here: yes" in text
    assert "on a device: a bundle to time by hand" in text
    assert "on a device: a bundle's script times it with toy_timer over adb" in text

    module = torch.nn.Conv2d(1, 4, 3)
    x = torch.randn(1, 1, 8, 8)
    artifact = TorchScriptExporter().export(module, (x,), tmp_path / "conv.toyscript")
    it = _independent_timing()
    assert it.opener_for(str(artifact.path)) == TorchScriptRunner.open_plain  # by suffix, through the registries
    assert it.time_loop(it.open_artifact(str(artifact.path), 1), min_runs=3, min_s=0.0) > 0
