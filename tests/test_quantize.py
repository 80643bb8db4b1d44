"""Precisions: each ecosystem's own quantizer per format, int8 tables that say how they were
quantized, and an 8-bit derived network that is written only when it keeps the float model's
answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.harness import row_module
from benchmarks.targets import resolve_target
from blocks.space import LayerShape
from core.errors import PipelineError
from export.litert import LiteRTExporter
from export.onnx import OnnxExporter
from export.verify import INT8, MISTRANSLATED, QuantGoal, check_against_torch, compare_outputs, quantized_quality, sqnr_db
from tests.test_cli_targets import FAST, SEARCH, _error, invoke

SHAPE = LayerShape(64, 64, 1, 8, 8)
INT8_TARGETS = ["desktop-int8", "android-int8", "android-executorch-int8"]


def test_a_precision_names_a_target_of_its_own() -> None:
    assert resolve_target("desktop", {"precision": "int8"}).name == "desktop-int8"
    assert resolve_target("android-executorch", {"precision": "int8"}).name == "android-executorch-int8"
    assert resolve_target("android-int8", {"precision": "fp32"}).name == "android"
    assert resolve_target("ios", {"precision": "fp32"}).name == "ios-fp32"
    assert resolve_target("ios", {"precision": "fp16"}).name == "ios"
    for name in INT8_TARGETS:
        assert resolve_target(name).make_exporter().precision == "int8"


@pytest.mark.parametrize("target, options, message", [
    ("desktop", {"precision": "fp16"}, "the onnx exporter has no precision 'fp16'; it has fp32, int8"),
    ("android", {"precision": "int4"}, "has no precision 'int4' (precisions: fp32, fp16, int8, w8); it has fp32, int8"),
    ("ios-executorch", {"precision": "int8"}, "delegating to coreml has no precision 'int8'; it has fp16, fp32"),
    ("ios", {"precision": "int8"}, "the coreml exporter for iOS16 has no precision 'int8'; it has fp16, fp32, w8"),
    ("ios", {"precision": "w8", "minimum_deployment_target": "iOS15"}, "for iOS15 has no precision 'w8'"),
])
def test_a_precision_a_format_lacks_lists_those_it_has(target: str, options: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_target(target, options)


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML quantizes activations on macOS")
def test_core_ml_int8_activations_say_they_need_macos(tmp_path: Path, micro_space_file: Path) -> None:
    reason = resolve_target("ios-int8").exportable_here()
    assert reason is not None and "needs macOS" in reason and "precision=w8" in reason
    msg = _error(invoke("benchmark", "--target", "ios-int8", "--space", micro_space_file, "--out", tmp_path))
    assert "needs macOS" in msg and "precision=w8" in msg


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size


@pytest.mark.slow
@pytest.mark.parametrize("target", INT8_TARGETS)
def test_an_int8_block_is_int8_runs_in_its_runtime_and_matches_pytorch(target: str, tmp_path: Path) -> None:
    quantized, float_ = resolve_target(target), resolve_target(target, {"precision": "fp32"})
    module, x = row_module("k3_e6", SHAPE)
    q = quantized.make_exporter().export(module, (x,), tmp_path / f"q{quantized.make_exporter().suffix}")
    f = float_.make_exporter().export(module, (x,), tmp_path / f"f{float_.make_exporter().suffix}")
    # 8-bit weights: the artifact is a fraction of the float one (k3_e6 at 64 channels holds ~53k weights)
    assert _size(q.path) < 0.5 * _size(f.path)
    with torch.no_grad():
        ref = module(x).numpy()
    out = np.asarray(quantized.make_runner(1).load(q)([x.numpy()])[0])
    check = compare_outputs(ref, out, INT8)
    assert check.ok, check
    assert check.max_abs_err > 1e-6  # really rounded, not the float graph under an int8 name
    assert 15 < sqnr_db(ref, out) < 60


def test_int8_tensors_are_counted_where_the_runtime_reads_them(tmp_path: Path) -> None:
    from export.onnx import int8_initializers

    module, x = row_module("k3_e1", SHAPE)
    f = resolve_target("desktop").make_exporter().export(module, (x,), tmp_path / "f.onnx")
    q = resolve_target("desktop-int8").make_exporter().export(module, (x,), tmp_path / "q.onnx")
    assert int8_initializers(f.path) == 0 and int8_initializers(q.path) >= 2



@pytest.mark.parametrize("arch, flags, saturates", [
    ("X86_64", ["avx", "avx2", "fma", "sse4_2"], True),  # AVX2 alone (an AMD EPYC VM's flags)
    ("X86_64", ["avx2", "avx512f", "avx512_vnni"], False),  # /proc/cpuinfo's spelling
    ("X86_64", ["avx2", "avx512vnni"], False),  # CPUID's, as py-cpuinfo reports it on macOS
    ("X86_64", ["avx2", "avxvnni"], False),  # AVX-VNNI without AVX-512
    ("X86_32", ["sse2"], True),
    ("ARM_8", ["asimd", "asimddp"], False),
])
def test_seven_bit_weights_only_where_8_bit_ones_saturate(arch: str, flags: list[str], saturates: bool) -> None:
    from export.onnx import saturates_8bit_weights

    assert saturates_8bit_weights(arch, flags) is saturates


def test_the_weights_bits_follow_this_cpu_unless_set_and_key_the_cache() -> None:
    from export.onnx import SEVEN_BIT, this_cpu_saturates

    auto, eight, seven = (OnnxExporter(precision="int8", **o) for o in ({}, {"reduce_range": False},
                                                                        {"reduce_range": True}))
    assert auto.reduce_range is this_cpu_saturates()
    assert (eight.reduce_range, seven.reduce_range) == (False, True)
    assert [SEVEN_BIT in e.quantization().scheme for e in (auto, eight, seven)] == [this_cpu_saturates(), False, True]
    # the cache keys the weights' bits as exported, so an 8-bit artifact is never reused as a 7-bit one
    assert auto.fingerprint() == (seven if this_cpu_saturates() else eight).fingerprint()
    assert eight.fingerprint() != seven.fingerprint()
    assert OnnxExporter().fingerprint()["reduce_range"] is False  # fp32 has no weight bits to choose


def test_a_1x1_conv_in_int8_keeps_its_output_on_this_cpu_and_8_bit_weights_would_not_where_they_saturate(
        tmp_path: Path) -> None:
    """The head's 1x1 conv (16 to 32 channels at 4x4): on an x86 CPU without VNNI, 8-bit weights
    overflow ONNX Runtime's int16 pair sums and the output is 16 dB from the float one."""
    from export.onnx import this_cpu_saturates

    module, x = row_module("head_conv", LayerShape(16, 32, 1, 4, 4))
    with torch.no_grad():
        ref = module(x).numpy()
    runner = resolve_target("desktop-int8").make_runner(1)

    def sqnr(**options: bool) -> float:
        exporter = OnnxExporter(precision="int8", **options)
        art = exporter.export(module, (x,), tmp_path / f"{len(list(tmp_path.iterdir()))}.onnx")
        run = runner.load(art)
        if options:  # forced 8-bit weights: a refusal names them and the option that avoids them
            with pytest.raises(PipelineError, match=r"on this CPU \(x86 without VNNI.*pass -o reduce_range=true"):
                check_against_torch(module, (x,), run, INT8, "head_conv", exporter.mismatch_cause())
        return sqnr_db(ref, np.asarray(run([x.numpy()])[0]))

    assert sqnr() >= 30
    if this_cpu_saturates():
        assert sqnr(reduce_range=False) < INT8.min_sqnr_db


def test_a_mismatch_blames_8_bit_weights_only_where_this_cpu_saturates_with_them(monkeypatch) -> None:
    import export.onnx

    for saturates in (True, False):
        monkeypatch.setattr(export.onnx, "this_cpu_saturates", lambda: saturates)
        for options, blamed in [({"reduce_range": False}, saturates), ({"reduce_range": True}, False),
                                ({}, False), ({"precision": "fp32", "reduce_range": False}, False)]:
            cause = OnnxExporter(**{"precision": "int8", **options}).mismatch_cause()
            assert ("reduce_range=true" in cause) == blamed and (cause == MISTRANSLATED) != blamed, (saturates, options)


@pytest.mark.slow
def test_litert_int8_flatbuffer_holds_int8_tensors(tmp_path: Path) -> None:
    from export.litert import int8_tensors

    module, x = row_module("k3_e1", SHAPE)
    f = resolve_target("android").make_exporter().export(module, (x,), tmp_path / "f.tflite")
    q = resolve_target("android-int8").make_exporter().export(module, (x,), tmp_path / "q.tflite")
    assert int8_tensors(f.path) == 0 and int8_tensors(q.path) >= 4
    # without a residual add litert-torch makes even the input and output int8: the runner
    # quantizes and dequantizes them with their tensors' own parameters, as an app would
    from ai_edge_litert.interpreter import Interpreter

    strided, y = row_module("k3_e6", LayerShape(16, 24, 2, 16, 16))
    q = resolve_target("android-int8").make_exporter().export(strided, (y,), tmp_path / "s.tflite")
    assert Interpreter(model_path=str(q.path)).get_input_details()[0]["dtype"] == np.int8
    with torch.no_grad():
        ref = strided(y).numpy()
    out = resolve_target("android-int8").make_runner(1).load(q)([y.numpy()])[0]
    assert out.dtype == np.float32 and sqnr_db(ref, out) > 20


@pytest.mark.slow
def test_core_ml_8_bit_weights_are_in_the_spec(tmp_path: Path) -> None:
    from export.coreml import int8_weights
    import coremltools as ct

    module, x = row_module("k3_e6", SHAPE)
    artifact = resolve_target("ios-w8").make_exporter().export(module, (x,), tmp_path / "w8.mlpackage")
    spec = ct.models.MLModel(str(artifact.path), skip_model_load=True).get_spec()
    assert int8_weights(spec) >= 3  # the block's three convolutions
    plain = resolve_target("ios").make_exporter().export(module, (x,), tmp_path / "fp16.mlpackage")
    assert int8_weights(ct.models.MLModel(str(plain.path), skip_model_load=True).get_spec()) == 0


def test_quality_measures() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 10))
    labels = logits.argmax(1)
    labels[:20] = (labels[:20] + 1) % 10  # the float model is 90% right
    same = quantized_quality(logits, logits + 1e-6, labels)
    assert same.agreement == 1.0 and same.float_accuracy == pytest.approx(0.9) and same.sqnr_db > 100
    assert same.failures(QuantGoal()) == []
    shuffled = quantized_quality(logits, rng.permutation(logits), labels)
    assert shuffled.agreement < 0.3 and shuffled.accuracy_change < -0.5
    failed = shuffled.failures(QuantGoal())
    assert len(failed) == 2 and "top-1 agreement" in failed[0] and "accuracy fell" in failed[1]
    assert sqnr_db(np.ones(4), np.ones(4) * 1.1) == pytest.approx(20.0)


@pytest.fixture(scope="module")
def int8_workspace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An int8 desktop table of the micro space and an architecture searched against it."""
    from tests.conftest import MICRO_SPACE

    root = tmp_path_factory.mktemp("int8")
    space = root / "micro.yaml"
    space.write_text(MICRO_SPACE)
    out = root / "ws"
    r = invoke("benchmark", "--target", "desktop", "-o", "precision=int8", "--space", space, "--out", out, "-q", *FAST)
    assert r.exit_code == 0, r.output
    r = invoke("search", "--target", "desktop-int8", "--space", space, "--out", out, *SEARCH)
    assert r.exit_code == 0, r.output
    r = invoke("train", "--target", "desktop-int8", "--space", space, "--out", out, "--train-epochs", 3, "-q")
    assert r.exit_code == 0, r.output
    return space, out


@pytest.mark.slow
def test_an_int8_table_records_its_precision_and_quantizer(int8_workspace: tuple[Path, Path], tmp_path: Path) -> None:
    space, out = int8_workspace
    table = json.loads((out / "tables/micro/desktop-int8/host.json").read_text())
    p = table["provenance"]
    assert p["target"] == "desktop-int8" and p["precision"] == "int8"
    assert p["quantization"]["quantizer"] == "onnxruntime.quantization.quantize_static"
    assert "per output channel" in p["quantization"]["scheme"] and "random-normal" in p["quantization"]["calibration"]
    assert all(row["status"] == "ok" for row in table["rows"])
    # a target file whose precision changed keeps its name: its table is refused, not mixed
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: desktop\nexporter_options: {precision: int8}\n")
    assert invoke("benchmark", "--target", mine, "--space", space, "--out", tmp_path, "-q", *FAST).exit_code == 0
    mine.write_text("base: desktop\n")
    msg = _error(invoke("benchmark", "--target", mine, "--space", space, "--out", tmp_path, *FAST))
    assert "was measured with precision='int8', this run uses 'fp32'; pass --force" in msg


@pytest.mark.slow
def test_the_int8_derived_network_is_checked_against_the_float_one(int8_workspace: tuple[Path, Path]) -> None:
    space, out = int8_workspace
    r = invoke("export", "--target", "desktop-int8", "--space", space, "--out", out, "--json", *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["precision"] == "int8" and "64 images of the training split of 'digits'" in d["quantization"]["calibration"]
    c = d["quantized_check"]
    assert c["samples"] == 360 and c["agreement"] >= 0.98 and c["accuracy_change"] >= -0.01 and c["sqnr_db"] > 10
    model = out / "export/micro/desktop-int8/host/model.onnx"
    from tests.test_app import held_out_accuracy, official_runtime

    # ONNX Runtime's own session on inputs made as the sidecar says: the accuracy the check reported
    assert held_out_accuracy(model, official_runtime(model)) == pytest.approx(c["quantized_accuracy"], abs=1.5 / 360)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android-int8", "android-executorch-int8"])
def test_the_int8_mobile_models_score_in_their_own_runtimes(int8_workspace: tuple[Path, Path], target: str,
                                                            tmp_path: Path) -> None:
    from tests.test_app import held_out_accuracy, official_runtime

    space, out = int8_workspace
    arch = out / "search/micro/desktop-int8/host/architecture.json"
    suffix = ".tflite" if target == "android-int8" else ".pte"
    model = tmp_path / f"model{suffix}"
    r = invoke("export", "--target", target, "--arch", arch, "--out", out, "--output", model, "--json", *FAST)
    assert r.exit_code == 0, r.output
    c = json.loads(r.stdout)["quantized_check"]
    assert c["agreement"] >= 0.98
    # LiteRT's interpreter and ExecuTorch's runtime, called directly, on inputs made from the sidecar
    assert held_out_accuracy(model, official_runtime(model)) == pytest.approx(c["quantized_accuracy"], abs=1.5 / 360)


@pytest.mark.slow
def test_a_broken_calibration_is_refused_and_nothing_is_written(int8_workspace: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    from benchmarks.protocol import Protocol
    from blocks import resolve_space
    from core.workspace import Workspace
    from pipeline.stages.export import export

    space_file, out = int8_workspace
    space = resolve_space(str(space_file))
    arch = out / "search/micro/desktop-int8/host/architecture.json"
    model = tmp_path / "model.onnx"
    x = torch.zeros(1, 1, 16, 16)
    protocol = Protocol(repeats=3, min_repeat_ms=0.5)
    # calibrated on blank images: every activation's range is near zero, so real images saturate
    with pytest.raises(PipelineError, match="the int8 model is not written: top-1 agreement .*--calibration-samples"):
        export(arch, resolve_target("desktop-int8"), Workspace(out), protocol, space=space, out=model,
               calibration=[(x,)] * 8)
    assert list(tmp_path.iterdir()) == []
    # too few images, or images of another size: refused before anything is exported
    with pytest.raises(PipelineError, match="gives 4 calibration image.s.; an 8-bit model needs at least 8"):
        export(arch, resolve_target("desktop-int8"), Workspace(out), protocol, space=space, out=model,
               calibration=[(x,)] * 4)
    with pytest.raises(PipelineError, match=r"calibration input 0 has shape.s. \[\(1, 3, 32, 32\)\]; the network "
                                            r"takes one input of shape \(1, 1, 16, 16\)"):
        export(arch, resolve_target("desktop-int8"), Workspace(out), protocol, space=space, out=model,
               calibration=[(torch.zeros(1, 3, 32, 32),)] * 8)
    small = tmp_path.parent / "one-a-class"  # an image folder whose training split has 6 images
    from pipeline.training.data import digits_folder

    digits_folder(small, 1)
    msg = _error(invoke("export", "--target", "desktop-int8", "--space", space_file, "--out", out, "--output",
                        tmp_path / "m.onnx", "--data", small, *FAST))
    assert "the training split of" in msg and "calibration image(s); an 8-bit model needs at least 8" in msg
    assert "range 8<=x<=100000" in invoke("export", "--calibration-samples", 2).output
    # LiteRT's app options, asked of another format: the values this one has
    common = ["export", "--target", "desktop-int8", "--space", space_file, "--out", out, "--output", tmp_path / "m.onnx"]
    assert _error(invoke(*common, "--layout", "nhwc")).endswith(
        "the onnx exporter at int8 has no input layout 'NHWC'; it has NCHW: pass --layout nchw")
    assert _error(invoke(*common, "--io", "int8")).endswith(
        "the onnx exporter at int8 has no input and output type 'int8'; it has float: pass --io float")
    assert list(tmp_path.iterdir()) == []


def test_compare_shows_each_blocks_speedup_across_precisions(micro_space, tmp_path: Path) -> None:
    from blocks.architecture import Architecture
    from pipeline.stages.compare.render import to_markdown, to_text
    from pipeline.stages.compare.report import Entry, compare
    from tests.conftest import make_table

    fp32 = make_table(micro_space, target="desktop")  # skip 0.1, k3_e1 1, k5_e3 2, k3_e6 3 ms
    int8 = make_table(micro_space, lambda b, s: {"skip": 0.1, "k3_e1": 0.8, "k5_e3": 1.0, "k3_e6": 1.0}.get(b, 0.5),
                      target="desktop-int8")
    fp32.provenance["precision"], int8.provenance["precision"] = "fp32", "int8"
    n = len(micro_space.layers)
    plain = Architecture(micro_space, tuple(micro_space.candidates(i)[0] for i in range(n)))
    other = Architecture(micro_space, ("k3_e6",) + plain.blocks[1:])
    c = compare([Entry("desktop/host", fp32, tmp_path / "a.json", plain, tmp_path / "a/architecture.json"),
                 Entry("desktop-int8/host", int8, tmp_path / "b.json", other, tmp_path / "b/architecture.json")])
    assert len(c.gains) == 1 and (c.gains[0].wide, c.gains[0].narrow) == (0, 1)
    gains = {b: (x, shapes) for b, x, shapes in c.gains[0].by_block}
    assert gains["k3_e6"] == (pytest.approx(3.0), n) and gains["k5_e3"][0] == pytest.approx(2.0)
    assert gains["k3_e1"][0] == pytest.approx(1.25) and gains["skip"][0] == pytest.approx(1.0)
    text = to_text(c)
    assert "speed-up per block, desktop-int8/host (int8) over desktop/host (fp32)" in text
    assert "int8 over fp32 on host (desktop/host -> desktop-int8/host): blocks run 1.00x to 3.00x as fast " \
           f"(k3_e6 gains most, skip least); the architectures searched for them differ in 1 of {n} layer(s)" in text
    assert "| k3_e6 | 3.00x |" in to_markdown(c)
    assert c.to_dict()["precision_gains"][0]["by_block"][0] == {"block": "k3_e6", "speedup": pytest.approx(3.0),
                                                               "shapes": n}
    # both precisions chose the same architecture: no claim either way, whatever the numbers say
    twins = compare([Entry("desktop/host", fp32, tmp_path / "a.json", plain, tmp_path / "a/architecture.json"),
                     Entry("desktop-int8/host", int8, tmp_path / "b.json", plain, tmp_path / "b/architecture.json")])
    summary = twins.summary()
    assert not any("NOT the fastest" in line or "the fastest under it" in line for line in summary)
    assert "predicted: on desktop/host, the architecture searched for it is the one searched for desktop-int8/host: " \
           "nothing to choose between" in summary


class _QuantizerFailsOn16Channels(OnnxExporter):
    """ONNX Runtime's static quantizer, failing as a quantizer does on a graph it cannot handle,
    on the 16-channel blocks only."""

    def _quantize(self, model, out, calibration):
        if calibration[0][0].shape[1] == 16:
            raise ValueError("quantize_static: no quantization parameters for tensor 'x'")
        return super()._quantize(model, out, calibration)


@pytest.mark.slow
def test_a_quantizer_that_fails_on_one_block_costs_only_its_rows(micro_space, tmp_path: Path) -> None:
    from benchmarks.harness import BenchmarkJob, benchmark_space
    from benchmarks.protocol import Protocol
    from benchmarks.table import load_table

    target = resolve_target("desktop-int8")
    exporter = _QuantizerFailsOn16Channels(precision="int8")
    job = BenchmarkJob(micro_space, exporter, target.make_runner(1), target.tolerance_for(exporter),
                       Protocol(repeats=3, min_repeat_ms=0.5), tmp_path / "t.json", tmp_path / "cache",
                       {"target": "desktop-int8", "device": "host"})
    benchmark_space(job, progress=False)
    rows = load_table(tmp_path / "t.json").rows.values()
    # recorded as a converter's failure is: the row cannot be had in this format, and why
    failed = [r for r in rows if r.status == "unavailable"]
    ok = [r for r in rows if r.status == "ok"]
    assert failed and all(r.shape.in_ch == 16 for r in failed)
    assert all(r.reason == "ONNX export failed: ValueError: quantize_static: no quantization parameters for tensor "
               "'x'" for r in failed)
    assert ok and all(r.shape.in_ch != 16 for r in ok)  # the rest went on


class _PT2EFails(LiteRTExporter):
    """litert-torch's PT2E path failing as it does on a graph its annotators do not know."""

    def _quantized(self, module, example_inputs, calibration):
        raise RuntimeError("prepare_pt2e: no annotation for aten.convolution")


@pytest.mark.slow
def test_litert_falls_back_to_ai_edge_quantizer_where_pt2e_fails(tmp_path: Path, caplog) -> None:
    from export.litert import int8_tensors

    module, x = row_module("k3_e6", LayerShape(16, 24, 2, 16, 16))
    with caplog.at_level("WARNING", logger="export.litert"):
        q = _PT2EFails(precision="int8").export(module, (x,), tmp_path / "q.tflite")
    assert "q.tflite: litert-torch's PT2E quantizer failed (RuntimeError: prepare_pt2e: no annotation for " \
           "aten.convolution); quantized with ai-edge-quantizer instead" in caplog.text
    assert int8_tensors(q.path) >= 4
    with torch.no_grad():
        ref = module(x).numpy()
    out = resolve_target("android-int8").make_runner(1).load(q)([x.numpy()])[0]
    assert out.dtype == np.float32 and sqnr_db(ref, out) > 20  # the same block, now int8
