"""The CLI as a user runs it: end to end on a micro space, and every bad input."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import main

FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def workspace(micro_workspace, micro_space_file):
    return micro_workspace, micro_space_file


def test_end_to_end_benchmark_search_export(workspace):
    out, space = workspace
    r = invoke("search", "--space", space, "--out", out, "--epochs", 3, "--warmup-epochs", 1)
    assert r.exit_code == 0, r.output
    arch_path = out / "search/micro/desktop/host/architecture.json"
    arch = json.loads(arch_path.read_text())
    assert arch["space_name"] == "micro" and len(arch["blocks"]) == 3
    assert [set(a) for a in arch["alpha"]] == [{"k3_e1", "k3_e6", "k5_e3", "skip"}] * 3
    assert all(abs(sum(a.values()) - 1) < 1e-4 for a in arch["alpha"])
    assert arch["blocks"] == [max(a, key=a.get) for a in arch["alpha"]]
    assert arch["table"]["target"] == "desktop" and arch["predicted_latency_ms"] > 0
    assert len(arch["history"]) == 3 and arch["history"][0]["theta_moved"] is False
    assert "predicted latency" in r.output and "'pipeline validate' (same --target and --space)" in r.output

    r = invoke("export", "--space", space, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "measured end to end" in r.output and "predicted (table sum)" in r.output
    assert "fits a calibration that search and export then use" in r.output  # how to get the better predictor
    model = out / "export/micro/desktop/host/model.onnx"
    # an independent ONNX Runtime session must agree with PyTorch on the same input
    from blocks.architecture import load_architecture
    from pipeline.training.weights import load_weights
    a = load_architecture(arch_path)
    net = load_weights(arch_path.with_name("architecture.supernet.pt"), a.space, a.blocks).net
    x = torch.randn(2, 1, 16, 16)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x[:1].numpy()})[0]
    np.testing.assert_allclose(got, net(x[:1]).detach().numpy(), atol=1e-4, rtol=1e-3)


def test_train_then_export_uses_trained_weights(workspace):
    out, space = workspace
    assert invoke("search", "--space", space, "--out", out, "-q", "--epochs", 2, "--warmup-epochs", 1).exit_code == 0
    r = invoke("export", "--space", space, "--out", out, "--train", "--train-epochs", 3, *FAST)
    assert r.exit_code == 0, r.output
    assert "weights: trained" in r.output
    acc = float(r.output.split("trained from scratch: test accuracy ")[1].split()[0])
    assert acc > 0.5  # 10 classes: chance is 0.1


def test_raising_lambda_lowers_predicted_latency(tmp_path, micro_space):
    """On a table whose entries differ, a large λ must derive a faster architecture."""
    from pipeline.stages import search as search_stage
    from pipeline.training.data import load_data
    from pipeline.training.search import SearchConfig
    from benchmarks.targets import TARGETS
    from core.workspace import Workspace
    from tests.conftest import make_table

    make_table(micro_space).save(tmp_path / "table.json")
    splits = load_data("digits", 16, 1)
    predicted = []
    for lam in (0.0, 5.0):
        # softmax: α follows the loss without Gumbel noise, so 2 Θ epochs reach the fastest network
        cfg = SearchConfig(epochs=3, warmup_epochs=1, loss="add", lam=lam, theta_lr=0.1, mixing="softmax")
        r = search_stage.search(micro_space, TARGETS.get("desktop"), Workspace(tmp_path), cfg, splits,
                            table_path=tmp_path / "table.json", out=tmp_path / f"arch{lam}.json", progress=False)
        predicted.append(r.predicted_ms)
    assert predicted[1] < predicted[0]
    assert predicted[1] == pytest.approx(1.5 + 0.3)  # all skip: the fastest the table allows


def _error(r):
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_unknown_names(micro_space_file, tmp_path):
    assert "unknown target 'iphone'; valid names: ios, ios-executorch, android, android-executorch, desktop" in _error(invoke("benchmark", "--target", "iphone"))
    assert "unknown search space 'mnasnet'" in _error(invoke("search", "--space", "mnasnet"))
    bad = tmp_path / "s.yaml"
    bad.write_text(micro_space_file.read_text().replace("k5_e3", "k9_e9"))
    assert "unknown block 'k9_e9'; valid names: k3_e1" in _error(invoke("benchmark", "--space", bad))
    assert "unknown latency loss 'exp'" in _error(invoke("search", "--loss", "exp"))


def test_table_problems(workspace, tmp_path):
    out, space = workspace
    table = out / "tables/micro/desktop/host.json"
    # a table for another space
    assert "does not fit space 'tiny'" in _error(invoke("search", "--out", out, "--table", table))
    # missing table
    assert "run 'pipeline benchmark" in _error(invoke("search", "--out", tmp_path / "empty"))
    # a table for another device
    assert "was measured for desktop/host, not desktop/pixel" in _error(
        invoke("search", "--space", space, "--out", out, "--table", table, "--device", "pixel"))
    # NaN latency
    data = json.loads(table.read_text())
    data["rows"][4]["median_ms"] = float("nan")
    nan = tmp_path / "nan.json"
    nan.write_text(json.dumps(data))
    assert "rows.4.median_ms = nan: expected a latency in ms" in _error(invoke("search", "--space", space, "--table", nan))
    # truncated
    cut = tmp_path / "cut.json"
    cut.write_text(table.read_text()[:300])
    assert "corrupt or truncated" in _error(invoke("search", "--space", space, "--table", cut))


def test_architecture_for_another_space_is_refused(workspace, tmp_path):
    out, space = workspace
    assert invoke("search", "--space", space, "--out", out, "-q", "--epochs", 2, "--warmup-epochs", 1).exit_code == 0
    arch = out / "search/micro/desktop/host/architecture.json"
    msg = _error(invoke("export", "--space", "tiny", "--arch", arch, "--out", out))
    assert "is for space 'micro'" in msg and "not 'tiny'" in msg
    arch.write_text(arch.read_text()[:50])
    assert "corrupt or truncated" in _error(invoke("export", "--arch", arch, "--out", out))


def test_empty_image_folder(tmp_path, workspace):
    out, space = workspace
    (tmp_path / "imgs").mkdir()
    assert "needs at least 2 sub-folders" in _error(invoke("search", "--space", space, "--out", out, "--data", tmp_path / "imgs"))


def test_bad_search_config_file(tmp_path, workspace):
    out, space = workspace
    cfg = tmp_path / "search.toml"
    cfg.write_text("epochs = 2\nwarmup_epochs = 1\nlearning_rate = 3\n")
    assert "unknown key 'learning_rate'" in _error(invoke("search", "--space", space, "--out", out, "--config", cfg))
    cfg.write_text("epochs = 2\nwarmup_epochs = 2\n")
    assert "warmup_epochs < epochs" in _error(invoke("search", "--space", space, "--out", out, "--config", cfg))


def test_real_process_exit_code_and_no_traceback():
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", "search", "--target", "nowhere"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == ("error: unknown target 'nowhere'; valid names: ios, ios-executorch, android, "
                                "android-executorch, desktop, ios-w8, ios-int8, android-int8, android-executorch-int8, "
                                "desktop-int8")


@pytest.mark.parametrize("command, module, name, says", [
    ("benchmark", "pipeline.stages.benchmark", "benchmark", "everything finished so far is saved; run the same command to go on"),
    ("validate", "pipeline.stages.validate", "validate", "the networks exported so far are cached; the same command exports "
                                                  "only the rest, then times them all again"),
])
def test_ctrl_c_says_what_the_command_keeps(workspace, monkeypatch, command, module, name, says):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out, space = workspace
    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    r = invoke(command, "--space", space, "--out", out)
    assert r.exit_code == 130
    assert r.stderr.strip() == f"interrupted: {says}"
