"""perf/search_vs_random.py, the proof against random search, in its CI (smoke) version: the
whole experiment on a few of the easy digits with tiny budgets, then a rerun that computes nothing."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from blocks import resolve_space
from pipeline.training.data import digits_folder
from tests.conftest import make_table

SCRIPT = Path(__file__).resolve().parent.parent / "perf" / "search_vs_random.py"


def _script():
    spec = importlib.util.spec_from_file_location("search_vs_random", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cost(block: str, shape) -> float:
    """A table where wider and larger blocks cost more, as on a device."""
    if block == "skip":
        return 0.01
    if "_e" not in block:  # the stem, head and classifier
        return 0.05
    k, e = int(block[1]), int(block.split("_e")[1][0])
    return 1e-5 * shape.height * shape.width * shape.out_ch * (k * k + 4 * e) / (2 if block.endswith("_g2") else 1)


@pytest.mark.slow
def test_smoke_run_reports_every_figure_and_a_rerun_computes_nothing(tmp_path, capsys):
    table = tmp_path / "tiny.json"
    make_table(resolve_space("tiny"), _cost).save(table)
    # 30 digits a class (300 images) rather than all 1797: what is checked is every figure and the
    # cache, not what the networks learn
    data = digits_folder(tmp_path / "data", 30)
    argv = ["--smoke", "--out", str(tmp_path / "out"), "--table", str(table), "--data", str(data)]
    # The first run as a user starts it, its searches and trainings in two worker processes.
    done = subprocess.run([sys.executable, str(SCRIPT), *argv, "--jobs", "2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "searches and trainings computed" in done.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (tmp_path / "out" / "search_vs_random.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert [r["seed"] for r in report["seeds"]] == [0, 1] and report["changed"] == {}  # the default recipe
    for r in report["seeds"]:
        assert len(r["random"]) == 3 and r["blocks"] not in [a["blocks"] for a in r["random"]]
        for a in r["random"]:  # every rival is predicted within 0.9-1.0x of the searched one
            assert 0.9 * r["predicted_ms"] - 1e-12 <= a["predicted_ms"] <= r["predicted_ms"] + 1e-12
        for a in [r, *r["random"]]:  # every accuracy compared is the mean of its two trainings
            assert len(a["trainings"]) == 2 and a["accuracy"] == pytest.approx(sum(a["trainings"]) / 2)
        accs = [a["accuracy"] for a in r["random"]]
        below = sum(a < r["accuracy"] for a in accs) + 0.5 * sum(a == r["accuracy"] for a in accs)
        assert r["percentile"] == pytest.approx(below / 3)
        assert r["decided_layers"] == sum(m >= 1.5 for m in r["alpha_margins"])
        assert len(r["fine_tune"]) == 1 and 0 <= r["inherited_accuracy"] <= 1
    s = report["summary"]
    assert s["beats_median"] == sum(r["beats_median"] for r in report["seeds"])
    assert s["sign_test_p"] == {0: 1.0, 1: 0.75, 2: 0.25}[s["beats_median"]]
    spread = report["spread"]
    assert len(spread["architectures"]) == 3 and len(spread["noise_accuracies"]) == 2
    if spread["seed_sd"] > 0:  # two 1-epoch trainings on 60 test images can score alike
        assert spread["sd_ratio"] == pytest.approx(spread["random_sd"] / spread["seed_sd"])
    else:
        assert spread["sd_ratio"] is None
    assert len(report["sweep"]) == 2 and any(p["pareto"] for p in report["sweep"])
    computed = report["cache"]["computed"]
    pairs = {tuple(a["blocks"]): a["trainings"] for r in report["seeds"] for a in [r, *r["random"]]}
    pooled = (sum((x - y) ** 2 / 2 for x, y in pairs.values()) / len(pairs)) ** 0.5  # two trainings: var = d²/2
    assert s["train_seeds"] == 2 and s["seed_sd_pooled"] == pytest.approx(pooled)
    assert s["noise_of_a_score"] == pytest.approx(pooled / 2**0.5)
    assert computed >= 4 + 3 + 1  # 2 seed and 2 sweep searches, the scatter, the noise seed

    # A rerun in one process computes nothing and reports the same figures; one more rival per
    # seed costs only its own trainings.
    script = _script()
    again = script.main(argv)
    assert again["cache"] == {"computed": 0, "reused": report["cache"]["computed"] + report["cache"]["reused"]}
    assert again["seeds"] == report["seeds"] and again["summary"] == report["summary"]
    assert "0 searches and trainings computed" in capsys.readouterr().out
    more = script.main(argv + ["--random", "4"])
    assert 1 <= more["cache"]["computed"] <= 2 * 2  # each seed's fourth rival, its two trainings at most
    for r, before in zip(more["seeds"], report["seeds"]):  # the stream is shared: the first three stay
        assert r["blocks"] == before["blocks"] and r["random"][:3] == before["random"] and len(r["random"]) == 4
