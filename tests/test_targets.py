"""Every registered block through every target's exporter and, where it runs here, its runtime.

Converters take seconds per call, so blocks are grouped: one module holds every block graph,
applied side by side to one input, and is exported once per target. A block the converter
mistranslates still shows up as a mismatch of its slice of the output. Blocks that differ only in
width (k3_e3 and k3_e6: the same ops on more channels) are one graph to a converter, and only the
first of them is exported: 37 graphs stand for the 93 (block, shape) pairs, and ExecuTorch's
lowering, which grows faster than linearly with the graph, takes a fraction of the time.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from benchmarks.harness import randomize_batchnorm
from benchmarks.runners import RUNNERS
from blocks import BLOCKS, LayerShape, build_part
from export import EXPORTERS
from export.verify import check_against_torch
from pipeline.cli import main
from core.errors import PipelineError, PlatformUnsupported
from benchmarks.targets import TARGETS, resolve_target, target_from_file

# Small shapes: one where every block keeps its shape (identities, residuals), one that
# changes channels and stride (skip's 1x1 conv, the 2-group blocks on even channels).
SHAPES = (LayerShape(8, 8, 1, 8, 8), LayerShape(8, 16, 2, 8, 8))
# float targets: 8-bit ones are judged by SQNR on blocks of their own (tests/test_quantize.py)
RUNNABLE = [n for n, t in TARGETS.items() if t.measurable_here() is None and t.make_exporter().quantization() is None]


def graph_key(block: str, shape: LayerShape) -> tuple:
    """What a converter sees of a block at a shape, less its widths: the traced ops in order,
    each convolution with its kernel, stride and grouping. A block that cannot be traced is its
    own key."""
    module = build_part(block, shape)
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001  (a plugin's block, say: then it is exported as it is)
        return (block, shape.key)
    modules, key = dict(module.named_modules()), []
    for node in graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            key.append(("conv", m.kernel_size, m.stride, m.padding, m.groups == m.in_channels, m.groups > 1)
                       if isinstance(m, nn.Conv2d) else type(m).__name__)
        elif node.op in ("call_function", "call_method"):
            key.append(str(node.target))
    return (shape.key, *key)


class AllBlocks(nn.Module):
    """Every block graph at every shape of SHAPES that it fits, all on the same input (the
    shapes share their input), outputs flattened side by side. `names` are the (block, shape)
    pairs exported, `covered` every pair, each standing for itself or by one of the same graph."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        pairs = [(n, s) for s in SHAPES for n in BLOCKS.names() if BLOCKS.get(n).supports(s.in_ch, s.out_ch, s.stride)]
        first = {}
        for n, s in pairs:
            first.setdefault(graph_key(n, s), (n, s))
        chosen = list(first.values())
        self.names = [f"{n}@{s.key}" for n, s in chosen]
        self.covered = [f"{n}@{s.key}" for n, s in pairs]
        self.blocks = nn.ModuleList(randomize_batchnorm(build_part(n, s), i) for i, (n, s) in enumerate(chosen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x).flatten(1) for b in self.blocks], dim=1)


def _input() -> torch.Tensor:
    s = SHAPES[0]
    assert all((t.in_ch, t.height, t.width) == (s.in_ch, s.height, s.width) for t in SHAPES)
    return torch.randn(1, s.in_ch, s.height, s.width, generator=torch.Generator().manual_seed(1))


@pytest.mark.slow
@pytest.mark.parametrize("target_name", RUNNABLE)
def test_every_block_exports_runs_and_matches_torch(target_name: str, tmp_path: Path) -> None:
    target = TARGETS.get(target_name)
    exporter, runner = target.make_exporter(), target.make_runner(threads=1)
    module, x = AllBlocks().eval(), _input()
    artifact = exporter.export(module, (x,), tmp_path / f"all{exporter.suffix}")
    result = check_against_torch(module, (x,), runner.load(artifact), target.tolerance_for(exporter), target_name)
    assert result.ok and result.max_abs_err < 1e-3
    assert {n.split("@")[0] for n in module.covered} == set(BLOCKS.names())  # every registered block is in there
    assert {"k5_e1_g2", "mb_k7_e3_se_hs", "skip", "identity"} <= {n.split("@")[0] for n in module.names}


@pytest.mark.slow
def test_coreml_converts_every_block_and_its_spec_matches(tmp_path: Path) -> None:
    exporter = TARGETS.get("ios").make_exporter()
    module, x = AllBlocks().eval(), _input()
    artifact = exporter.export(module, (x,), tmp_path / "all.mlpackage")
    assert (artifact.path / "Manifest.json").is_file()
    import coremltools as ct

    spec = ct.models.MLModel(str(artifact.path), skip_model_load=True).get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    assert [tuple(i.type.multiArrayType.shape) for i in spec.description.input] == [tuple(x.shape)]
    n_out = int(module(x).shape[1])
    assert tuple(spec.description.output[0].type.multiArrayType.shape) == (1, n_out)
    if sys.platform == "darwin":  # Core ML itself exists only here
        ok = check_against_torch(module, (x,), RUNNERS.get("coreml")().load(artifact),
                                 TARGETS.get("ios").tolerance_for(exporter), "ios")
        assert ok.ok


def test_coreml_runner_refuses_off_macos(tmp_path: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("Core ML runs here")
    runner = TARGETS.get("ios").make_runner(1)
    with pytest.raises(PlatformUnsupported, match="only on macOS"):
        runner.load(EXPORTERS.get("onnx")().artifact(tmp_path / "x.mlpackage", (torch.zeros(1),)))


@pytest.mark.parametrize("target_name", RUNNABLE)
def test_corrupt_artifact_is_a_clear_error(target_name: str, tmp_path: Path) -> None:
    target = TARGETS.get(target_name)
    exporter, runner = target.make_exporter(), target.make_runner(1)
    bad = tmp_path / f"bad{exporter.suffix}"
    bad.write_bytes(b"\x00garbage, not a model" * 8)
    with pytest.raises(PipelineError, match="corrupt or truncated"):
        runner.load(exporter.artifact(bad, (torch.zeros(1, 8, 8, 8),)))


def test_unknown_target_lists_valid_names() -> None:
    with pytest.raises(PipelineError, match="unknown target 'iphone'; valid names:") as e:
        resolve_target("iphone")
    assert all(name in str(e.value) for name in TARGETS.names())


def test_option_the_format_lacks_is_refused() -> None:
    with pytest.raises(PipelineError, match="target 'desktop'.*has no option 'compute_units'; its options: dynamo"):
        resolve_target("desktop", {"compute_units": "CPU_ONLY"})
    with pytest.raises(PipelineError, match="compute_units='GPU' is not one of ALL"):
        resolve_target("ios", {"compute_units": "GPU"})
    with pytest.raises(PipelineError, match="Core ML delegate only"):
        resolve_target("android-executorch", {"compute_units": "ALL"})
    with pytest.raises(PipelineError, match="delegating to xnnpack has no precision 'fp16'; it has fp32, int8"):
        resolve_target("android-executorch", {"precision": "fp16"})


def test_options_route_to_exporter_and_runner() -> None:
    t = resolve_target("ios", {"compute_units": "CPU_ONLY", "precision": "fp32"})
    assert t.runner_options == {"compute_units": "CPU_ONLY"}
    assert t.exporter_options["precision"] == "fp32"
    assert t.tolerance_for(t.make_exporter()).atol < TARGETS.get("ios").tolerance_for(TARGETS.get("ios").make_exporter()).atol


def test_target_file_extends_a_builtin(tmp_path: Path) -> None:
    f = tmp_path / "iphone-cpu.yaml"
    f.write_text("base: ios\ndescription: iPhone, CPU only\nrunner_options: {compute_units: CPU_ONLY}\n")
    t = target_from_file(str(f))
    assert (t.name, t.exporter, t.runner, t.runner_options) == ("iphone-cpu", "coreml", "coreml", {"compute_units": "CPU_ONLY"})
    (tmp_path / "bad.yaml").write_text("base: ios\ncolour: red\n")
    with pytest.raises(PipelineError, match="unknown key 'colour'"):
        target_from_file(str(tmp_path / "bad.yaml"))


def test_targets_command_says_what_runs_here() -> None:
    out = CliRunner().invoke(main, ["targets"]).output
    for name in TARGETS.names():
        assert name in out
    assert "measure here: yes" in out
    if sys.platform != "darwin":
        assert "Core ML runs only on macOS" in out


@pytest.mark.slow
def test_benchmark_ios_on_linux_exports_checks_and_stops(micro_space_file: Path, tmp_path: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("Core ML measures here")
    r = CliRunner().invoke(main, ["benchmark", "--target", "ios", "--space", str(micro_space_file), "--out",
                                  str(tmp_path), "-q", "--jobs", "1"])
    assert r.exit_code == 3, r.output
    assert "exported and checked" in r.output and "Core ML runs only on macOS" in r.output
    assert "Traceback" not in r.output
    assert len(list((tmp_path / "cache" / "mlpackage").glob("*.mlpackage"))) >= 9
    assert not list((tmp_path / "tables").rglob("*.json"))  # no half-made table


def test_harness_parallel_export_matches_sequential(micro_space, tmp_path: Path) -> None:
    from benchmarks.harness import BenchmarkJob, export_rows
    from benchmarks.protocol import Protocol
    from benchmarks.table import required_rows

    target = TARGETS.get("desktop")
    exporter = target.make_exporter()
    rows = required_rows(micro_space)
    jobs = [BenchmarkJob(micro_space, exporter, None, target.tolerance_for(exporter), Protocol(),
                         tmp_path / "t.json", tmp_path / f"cache{n}", jobs=n) for n in (1, 2)]
    seq, par = (export_rows(j, rows, progress=False) for j in jobs)
    assert set(seq) == set(par) and len(seq) == len(rows)
    for key in seq:
        a, b = np.frombuffer(seq[key].path.read_bytes(), np.uint8), np.frombuffer(par[key].path.read_bytes(), np.uint8)
        assert a.tobytes() == b.tobytes(), key  # same seeded module, same bytes
