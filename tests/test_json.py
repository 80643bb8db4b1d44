"""`--json` on every command: stdout is one JSON object with the keys docs/json.md's `## Top-level
keys` table documents, and its figures are the ones the text output of the same command prints."""

from __future__ import annotations

import json
import shutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from tests.conftest import MICRO_SPACE, as_if_timed_faster

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]
SEARCH = ["--epochs", "2", "--warmup-epochs", "1"]


def documented_keys() -> dict[str, set[str]]:
    """docs/json.md's `## Top-level keys` table: per row, the first `COMMAND` of its first cell and
    the `key`s of its second."""
    doc = (ROOT / "docs" / "json.md").read_text()
    section = doc.split("\n## Top-level keys\n", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        command = re.match(r"`([^`]+)`", cells[0]).group(1)
        keys[command] = set(re.findall(r"`([a-z0-9_]+)`", cells[1]))
    return keys


DOCUMENTED = documented_keys()


def run(*args: object) -> tuple[str, str]:
    """The command's stdout and stderr, kept apart; it must succeed."""
    r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.stdout + r.stderr
    return r.stdout, r.stderr


def one_object(stdout: str, command: str) -> dict:
    """stdout holds exactly one JSON document, an object with the keys documented for `command`."""
    data, end = json.JSONDecoder().raw_decode(stdout)
    assert stdout[end:].strip() == "", f"more than one JSON document: {stdout[end:][:200]!r}"
    assert isinstance(data, dict)
    assert set(data) == DOCUMENTED[command], f"{command}: keys {sorted(data)}, documented {sorted(DOCUMENTED[command])}"
    return data


def laptop_table(out: Path, dest: Path) -> Path:
    """The host's table, as if it had been measured on a device called laptop."""
    from benchmarks.table import load_table

    table = load_table(out / "tables/micro/desktop/host.json")
    table.provenance["device"] = "laptop"
    dest.parent.mkdir(parents=True, exist_ok=True)
    table.save(dest)
    return dest


def figure(text: str, pattern: str) -> str:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return found.group(1)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> tuple[Path, Path]:
    """A workspace with the micro space's table (measured here) and a searched architecture."""
    tmp = tmp_path_factory.mktemp("json")
    space = tmp / "micro.yaml"
    space.write_text(MICRO_SPACE)
    out = tmp / "ws"
    run("benchmark", "--space", space, "--out", out, "-q", *FAST)
    run("search", "--space", space, "--out", out, "-q", *SEARCH)
    return out, space


def test_every_command_is_documented():
    assert set(DOCUMENTED) == {"benchmark", "benchmark --device NAME", "search", "search --sweep", "train", "export",
                               "validate", "compare", "run", "targets", "spaces", "blocks"}


def test_benchmark_as_a_real_process_prints_only_json(ws):
    """Its export workers are processes of their own: nothing of theirs reaches stdout either."""
    out, space = ws
    text, _ = run("benchmark", "--space", space, "--out", out, *FAST)
    p = subprocess.run([sys.executable, "-m", "pipeline.cli", "benchmark", "--space", str(space), "--out", str(out),
                        "--json", *FAST], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr
    data = one_object(p.stdout, "benchmark")
    assert (data["rows"], data["measured"], data["reused"]) == (15, 0, 15)
    assert figure(text, r"(\d+) row\(s\) measured now, (?:\d+) reused") == "0"
    cell = figure(text, r"\n0\s+8x8x8-8-s1\s+(\S+)")  # layer 0's first column: k3_e1
    assert f"{data['latency_ms']['k3_e1/8x8x8-8-s1']:.4f}" == cell


def test_benchmark_import(ws, tmp_path):
    out, space = ws
    host = out / "tables/micro/desktop/host.json"
    text, _ = run("benchmark", "import", host, "--target", "desktop", "--device", "laptop", "--space", space,
                  "--out", tmp_path)
    stdout, _ = run("benchmark", "import", host, "--target", "desktop", "--device", "laptop", "--space", space,
                    "--out", tmp_path, "--force", "--json")
    data = one_object(stdout, "benchmark")
    assert (data["device"], data["measured"]) == ("laptop", 0)
    assert figure(text, r"imported (\d+) rows") == str(data["rows"])


def test_bundles_of_benchmark_and_validate(ws, tmp_path):
    out, space = ws
    text, _ = run("benchmark", "--space", space, "--out", tmp_path, "--device", "laptop")
    data = one_object(run("benchmark", "--space", space, "--out", tmp_path, "--device", "laptop", "-q", "--json")[0],
                      "benchmark --device NAME")
    assert (data["kind"], data["device"], data["script"]) == ("benchmark", "laptop", None)
    assert figure(text, r"(\d+) blocks of 'micro'") == str(data["networks"])
    assert f"then: {data['then']}" in text

    laptop_table(out, tmp_path / "tables/micro/desktop/laptop.json")
    args = ["validate", "--space", space, "--out", tmp_path, "--device", "laptop", "--samples", 4]
    text, _ = run(*args)
    data = one_object(run(*args, "--json")[0], "benchmark --device NAME")
    assert (data["kind"], data["networks"]) == ("validate", 4)
    assert figure(text, r"(\d+) networks for desktop") == "4"


def test_validate_of_a_device_s_times(ws, tmp_path):
    """Times brought back from a device: the same figures in the text and the JSON, no timing here."""
    out, space = ws
    laptop_table(out, tmp_path / "tables/micro/desktop/laptop.json")
    args = ["validate", "--space", space, "--out", tmp_path, "--device", "laptop", "--samples", 4, "--no-fit"]
    run(*args)
    csv = next((tmp_path / "validate").rglob("measurements.csv"))
    times = {"net-00": (0.08, 0.09), "net-01": (0.12, 0.1), "net-02": (0.07, 0.075), "net-03": (0.2, 0.19)}
    csv.write_text("network,ms\n" + "".join(f"{n},{ms}\n" for n, t in times.items() for ms in t))
    text, _ = run(*args, "--measurements", csv)
    data = one_object(run(*args, "--measurements", csv, "--json")[0], "validate")
    assert (data["samples"], data["predictor"], data["fitted_now"], data["drift"]) == (4, "table sum", False, None)
    row = figure(text, r"\ntable sum\s+(\S+)")
    assert f"{data['median_abs_err_pct']:.1f}" == row
    assert figure(text, r"(\d+) networks timed") == "4"


def test_search_and_its_resume(ws):
    """`--resume` of a finished search derives it again from its checkpoint: the same figures."""
    out, space = ws
    text, _ = run("search", "--space", space, "--out", out, *SEARCH, "--resume")
    data = one_object(run("search", "--space", space, "--out", out, "-q", *SEARCH, "--resume", "--json")[0], "search")
    assert f"{data['predicted_ms']:.4f}" == figure(text, r"predicted latency (\S+) ms")
    assert f"{data['derived_test_accuracy']:.3f}" == figure(text, r"inherited weights (\S+)")
    assert len(data["blocks"]) == len(data["alpha"]) == 3


def test_search_sweep(ws):
    """A sweep keeps its finished points: the second run reads them back."""
    out, space = ws
    args = ["search", "--space", space, "--out", out, "--epochs", 2, "--warmup-epochs", 1, "--loss", "add",
            "--sweep", "lam=0,5", "--sweep-random", 0, "--sweep-train-epochs", 1]
    text, _ = run(*args)
    data = one_object(run(*args, "--json")[0], "search --sweep")
    assert [p["label"] for p in data["points"] if p["kind"] == "search"] == ["lam=0", "lam=5"]
    lam5 = next(p for p in data["points"] if p["label"] == "lam=5")
    assert f"{lam5['predicted_ms']:.4f}" == figure(text, r"\nlam=5\s+(\S+)")


def test_train_and_export(ws):
    out, space = ws
    text, _ = run("train", "--space", space, "--out", out, "--train-epochs", 1)
    data = one_object(run("train", "--space", space, "--out", out, "--train-epochs", 1, "-q", "--json")[0], "train")
    assert f"{data['test_accuracy']:.3f}" == figure(text, r"held-out test accuracy: (\S+)")

    text, _ = run("export", "--space", space, "--out", out, *FAST)
    data = one_object(run("export", "--space", space, "--out", out, *FAST, "--json")[0], "export")
    assert (data["weights"], data["check"]["ok"], data["predictor"]) == ("trained", True, "table sum")
    assert f"{data['predicted_ms']:.4f}" == figure(text, r"predicted \(table sum\): (\S+) ms")
    assert f"{data['test_accuracy']:.3f}" == figure(text, r"test accuracy (\S+)")
    m = data["measured"]
    assert m["median_ms"] > 0 and "at_calibration_speed_ms" not in m  # no calibration: judged as timed
    assert data["error_pct"] == pytest.approx(100 * (data["predicted_ms"] / m["median_ms"] - 1))
    assert data["precision"] is None and data["quantized_check"] is None


def test_run_prints_its_stages_on_stderr(ws, tmp_path):
    """Under --json the stage headers and reports go to stderr: the same figures as the object."""
    out, space = ws
    shutil.copytree(out / "tables", tmp_path / "tables")  # measured already: run reuses every row
    as_if_timed_faster(tmp_path / "tables/micro/desktop/host.json", 3)
    stdout, stderr = run("run", "--space", space, "--out", tmp_path, *SEARCH, "--no-train", *FAST, "--json")
    data = one_object(stdout, "run")
    # its rows, re-timed beside the networks, ran ~3x the table: the fit was refused, the table measured again
    assert data["train"] is None and "== benchmark again: the table's rows" in stderr
    assert stderr.count("== calibrate:") == 2 and data["benchmark"]["measured"] == data["benchmark"]["rows"]
    # the table had no calibration: run fitted one on 10 of 20 networks (or refused it, and said why)
    cal = data["calibrate"]
    assert set(cal) == DOCUMENTED["validate"] and cal["samples"] == 10
    stored = json.loads((tmp_path / "tables/micro/desktop/host.json").read_text()).get("calibration")
    if cal["calibration_refused"] is None:
        assert cal["fitted_now"] and stored and data["export"]["predictor"].startswith("calibrated table sum")
        assert data["search"]["predictor"].startswith("calibrated")
        # the fit keeps the network it was timed against; the export is timed beside it, on the fit's scale
        (fit,) = stored.values()
        assert len(fit["reference_blocks"]) == 3 and fit["reference_ms"] > 0
        m = data["export"]["measured"]
        assert m["at_calibration_speed_ms"] > 0 and m["reference_vs_calibration"] > 0
        assert data["export"]["error_pct"] == pytest.approx(100 * (data["export"]["predicted_ms"] /
                                                                   m["at_calibration_speed_ms"] - 1))
        assert "vs measured at the calibration's speed" in stderr
    else:
        assert not stored and data["export"]["predictor"] == "table sum"
    assert set(data["search"]) == DOCUMENTED["search"] and set(data["export"]) == DOCUMENTED["export"]
    assert "== search:" in stderr
    assert f"{data['search']['predicted_ms']:.4f}" == figure(stderr, r"predicted latency (\S+) ms")


def test_compare_with_labels(ws, tmp_path):
    out, space = ws
    host, arch = out / "tables/micro/desktop/host.json", out / "search/micro/desktop/host/architecture.json"
    laptop = laptop_table(out, tmp_path / "laptop.json")
    args = ["compare", f"{host}={arch}", f"{laptop}={arch}", "--label", "mine", "--label", "lab",
            "--out", tmp_path, "--no-measure"]
    text, _ = run(*args)
    data = one_object(run(*args, "--json")[0], "compare")
    assert [e["label"] for e in data["entries"]] == ["mine", "lab"] and data["measured_ms"] is None
    own = data["predicted_ms"]["mine"]["mine"]
    assert re.search(rf"\nmine\s+{own:#.4g} \(own\)", text), text


def test_listings():
    data = one_object(run("targets", "--json")[0], "targets")
    text = run("targets")[0]
    assert [t["name"] for t in data["targets"]] == [line.split()[0] for line in text.splitlines()
                                                    if line and not line.startswith(" ")]
    data = one_object(run("spaces", "--json")[0], "spaces")
    tiny = next(s for s in data["spaces"] if s["name"] == "tiny")
    assert figure(run("spaces")[0], r"(?m)^tiny\s+(\d+) layers") == str(tiny["layers"])
    data = one_object(run("blocks", "--json")[0], "blocks")
    assert f"{'skip':<10} {data['blocks']['skip']}" in run("blocks")[0]
