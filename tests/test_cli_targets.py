"""The CLI across targets: import a phone's table, search against it, export per target,
compare, and the bad inputs of each."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.training.data import digits_folder

DATA = Path(__file__).resolve().parents[1] / "benchmarks/data/device-tables"
FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]
SEARCH = ["--epochs", "2", "--warmup-epochs", "1", "-q"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _error(r) -> str:
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_import_pixel1_and_search_against_it(tmp_path: Path) -> None:
    out = tmp_path / "ws"
    r = invoke("benchmark", "import", DATA / "pixel1_proxylessnas_lut.yaml", "--target", "android",
               "--device", "pixel1", "--space", "proxyless", "--out", out)
    assert r.exit_code == 0, r.output
    assert "75 rows imported" in r.output
    table = json.loads((out / "tables/proxyless/android/pixel1.json").read_text())
    assert table["provenance"]["device"] == "pixel1" and table["provenance"]["host"] is None
    # again without --force: refused, the first table untouched
    assert "pass --force" in _error(invoke("benchmark", "import", DATA / "pixel1_proxylessnas_lut.yaml", "--target",
                                           "android", "--device", "pixel1", "--space", "proxyless", "--out", out))
    # a few images: what is checked is that the search reads the phone's table, not what it learns
    data = digits_folder(tmp_path / "data", 4)
    r = invoke("search", "--target", "android", "--device", "pixel1", "--space", "proxyless", "--out", out,
               "--resolution", "16", "--epochs", "1", "--warmup-epochs", "0", "--data", data, "--batch-size", "16", "-q")
    assert r.exit_code == 0, r.output
    arch = json.loads((out / "search/proxyless/android/pixel1/architecture.json").read_text())
    assert arch["blocks"][0] == "mb_k3_e1" and len(arch["blocks"]) == 22
    assert arch["table"]["device"] == "pixel1" and 29.6 < arch["predicted_latency_ms"] < 191.1


def test_import_bad_inputs(tmp_path: Path) -> None:
    lut = DATA / "pixel1_proxylessnas_lut.yaml"
    common = ["--target", "android", "--space", "proxyless", "--out", tmp_path]
    assert "not 'host'" in _error(invoke("benchmark", "import", lut, "--device", "host", *common))
    assert "does not fit space 'tiny'" in _error(invoke("benchmark", "import", lut, "--target", "android",
                                                        "--device", "p1", "--space", "tiny", "--out", tmp_path))
    cut = tmp_path / "cut.yaml"
    cut.write_text(lut.read_text()[:2000].rsplit("\n", 3)[0] + "\n")
    assert _error(invoke("benchmark", "import", cut, "--device", "p1", *common))
    assert not (tmp_path / "tables/proxyless/android/p1.json").exists()  # nothing half-written


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android", "android-executorch"])
def test_benchmark_search_export_on_a_mobile_target(target: str, tmp_path: Path, micro_space_file: Path) -> None:
    out = tmp_path / "ws"
    r = invoke("benchmark", "--target", target, "--space", micro_space_file, "--out", out, "-q", "--jobs", 2, *FAST)
    assert r.exit_code == 0, r.output
    table = json.loads((out / f"tables/micro/{target}/host.json").read_text())
    assert table["provenance"]["runtime"] in ("ai-edge-litert", "executorch")
    assert all(row["status"] == "ok" and row["median_ms"] > 0 for row in table["rows"])
    again = invoke("benchmark", "--target", target, "--space", micro_space_file, "--out", out, *FAST)
    assert "0 row(s) measured now" in again.output  # everything cached and kept
    r = invoke("search", "--target", target, "--space", micro_space_file, "--out", out, "--epochs", 1,
               "--warmup-epochs", 0, "-q")
    assert r.exit_code == 0, r.output
    # one export (each is a whole lowering): its human report is render's, tested on desktop
    layout = ["--layout", "nhwc"] if target == "android" else []
    r = invoke("export", "--target", target, "--space", micro_space_file, "--out", out, "--json", *layout, *FAST)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["check"]["ok"] and d["measured"]["median_ms"] > 0
    suffix = {"android": ".tflite", "android-executorch": ".pte"}[target]
    model = out / f"export/micro/{target}/host/model{suffix}"
    assert d["model"] == str(model) and d["sidecar"] == str(model.with_suffix(".json"))
    assert d["labels"] == [str(i) for i in range(10)]
    # as an app runs it: the runtime's own API, inputs prepared by what the sidecar JSON states
    from tests.test_app import held_out_accuracy, official_runtime

    assert held_out_accuracy(model, official_runtime(model)) == pytest.approx(d["test_accuracy"], abs=1.5 / 360)


WIDE_SPACE = """\
name: wide
resolution: 224
in_channels: 3
num_classes: 10
stem_channels: 16
stem_stride: 2
stages:
  - [16, 1, 1]
head_channels: 32
blocks: [k3_e1, skip]
"""


@pytest.mark.slow
@pytest.mark.parametrize("target", ["android", "android-executorch"])
def test_rows_timed_in_this_process_agree_with_the_timing_child(target: str, tmp_path: Path) -> None:
    # An ExecuTorch program first run after its process was pinned took ~8 ms a call whatever
    # the block (0.2-0.5 ms here); blocks this size (112x112) show it, micro ones do not.
    space = tmp_path / "wide.yaml"
    space.write_text(WIDE_SPACE)
    tables = {}
    for name, timeout in (("child", 300), ("inproc", 0)):
        tables[name] = tmp_path / f"{name}.json"
        r = invoke("benchmark", "--target", target, "--space", space, "--out", tmp_path / "ws", "-q", "--force",
                   "--row-timeout", timeout, "--table", tables[name], *FAST)
        assert r.exit_code == 0, r.output
    child, inproc = ({row["key"]: row["median_ms"] for row in json.loads(p.read_text())["rows"]}
                     for p in tables.values())
    assert child.keys() == inproc.keys()
    # The bug put every row near 8 ms (20-180x the child's). The median ratio is judged, not the
    # worst: the skip row is ~0.05 ms, and on this noisy VM its own ratio has ranged 1.6-5x.
    assert statistics.median(inproc[k] / child[k] for k in child) < 3


@pytest.mark.slow
def test_export_ios_on_linux_converts_and_checks(tmp_path: Path, micro_space_file: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("Core ML runs here")
    out = tmp_path / "ws"
    # search against a desktop table, then ship that architecture to iOS
    assert invoke("benchmark", "--space", micro_space_file, "--out", out, "-q", *FAST).exit_code == 0
    assert invoke("search", "--space", micro_space_file, "--out", out, *SEARCH).exit_code == 0
    arch = out / "search/micro/desktop/host/architecture.json"
    r = invoke("export", "--target", "ios", "--arch", arch, "--out", out, "-o", "precision=fp32")
    assert r.exit_code == 0, r.output
    assert "not run or timed here: Core ML runs only on macOS" in r.output
    assert (out / "export/micro/ios-fp32/host/model.mlpackage/Manifest.json").is_file()  # fp32 is a target of its own
    import coremltools as ct

    from export.coreml import class_labels

    spec = ct.models.MLModel(str(out / "export/micro/ios-fp32/host/model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert class_labels(spec) == [str(i) for i in range(10)]
    side = json.loads((out / "export/micro/ios-fp32/host/model.json").read_text())
    assert side["inputs"][0]["image"]["color"] == "GRAYSCALE" and side["source"]["table"]["target"] == "desktop"


def test_target_option_errors(micro_space_file: Path, tmp_path: Path) -> None:
    msg = _error(invoke("benchmark", "--target", "desktop", "-o", "compute_units=CPU_ONLY", "--space",
                        micro_space_file, "--out", tmp_path))
    assert "target 'desktop'" in msg and "no option 'compute_units'" in msg
    assert "KEY=VALUE" in _error(invoke("benchmark", "-o", "compute_units", "--out", tmp_path))
    assert "does not exist" in _error(invoke("benchmark", "--target", tmp_path / "nope.yaml", "--out", tmp_path))


def test_compare_three_tables(tmp_path: Path, micro_space: object, micro_space_file: Path) -> None:
    """Three devices' hand-made tables, each searched with a strong latency term: every device's
    architecture is predicted fastest under its own table."""
    from tests.conftest import make_table

    out = tmp_path / "ws"
    costs = {
        "desktop/host": {"skip": 0.1, "k3_e1": 1.0, "k5_e3": 2.0, "k3_e6": 3.0},
        "android/host": {"skip": 5.0, "k3_e1": 4.0, "k5_e3": 0.5, "k3_e6": 3.0},
        "android/pixel1": {"skip": 5.0, "k3_e1": 4.0, "k5_e3": 3.0, "k3_e6": 0.2},
    }
    for label, cost in costs.items():
        target, device = label.split("/")
        make_table(micro_space, lambda b, s, c=cost: c.get(b, 0.5), target, device).save(
            out / f"tables/micro/{target}/{device}.json")
        r = invoke("search", "--target", target, "--device", device, "--space", micro_space_file, "--out", out,
                   "--loss", "add", "--lam", "5", "--epochs", "4", "--warmup-epochs", "1", "--theta-lr", "0.2", "-q")
        assert r.exit_code == 0, r.output
    r = invoke("compare", *costs, "--space", micro_space_file, "--out", out, "--no-measure")
    assert r.exit_code == 0, r.output
    data = json.loads((out / "compare/compare.json").read_text())
    assert (out / "compare/compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "searched for it is the fastest" in (out / "compare/compare.md").read_text()
    blocks = {e["label"]: e["blocks"] for e in data["entries"]}
    assert blocks["desktop/host"] == ["skip"] * 3
    assert blocks["android/pixel1"] == ["k3_e6"] * 3
    assert "k5_e3" in blocks["android/host"]
    assert "TARGET/DEVICE" in _error(invoke("compare", "desktop", "android/host", "--out", out))
    assert "run 'pipeline benchmark --target ios" in _error(invoke("compare", "desktop/host", "ios/host", "--space",
                                                                   micro_space_file, "--out", out))
    assert "at least two" in _error(invoke("compare", "desktop/host", "--space", micro_space_file, "--out", out,
                                           "--no-measure"))
