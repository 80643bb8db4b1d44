"""Whole-network validation of a table and the calibration fitted from it."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.predict import LatencyModel, fit_calibration
from benchmarks.table import load_table
from pipeline.cli import main
from blocks.architecture import random_architectures
from pipeline.stages.validate import median_se_pct, metrics
from tests.conftest import as_if_timed_faster, make_table, run_script

FAST = ["--repeats", "3", "--min-repeat-ms", "0.5"]


def _ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _truth(model: LatencyModel, space, blocks) -> float:
    """A made-up 'real' device: overhead paid once, blocks run faster together, skip is free."""
    return 0.3 + 0.7 * model.predict(space, blocks) - 0.05 * blocks.count("skip")


def test_calibration_recovers_a_linear_device_on_networks_it_did_not_see(micro_space) -> None:
    plain = LatencyModel.from_table(make_table(micro_space), micro_space, calibrated=False)
    archs = random_architectures(micro_space, 64, seed=1, exclude=set())  # all of them
    fit, held = archs[:44], archs[44:]  # 10 networks per block term and more: per-block terms are tried
    cal = fit_calibration(plain, micro_space, fit, [_truth(plain, micro_space, a) for a in fit])
    table = make_table(micro_space)
    table.calibration[micro_space.fingerprint] = cal.to_dict()
    calibrated = LatencyModel.from_table(table, micro_space)
    pred = [calibrated.predict(micro_space, a) for a in held]
    truth = [_truth(plain, micro_space, a) for a in held]
    m = metrics(pred, truth)
    assert m["max_abs_err_pct"] < 1.0 and m["within_5_pct"] == 100.0
    plain_m = metrics([plain.predict(micro_space, a) for a in held], truth)
    assert plain_m["median_abs_err_pct"] > 20  # the plain sum really was off
    assert calibrated.name.startswith("calibrated")


def test_calibrated_expected_latency_is_the_prediction_for_one_hot_alphas(micro_space) -> None:
    table = make_table(micro_space)
    plain = LatencyModel.from_table(table, micro_space, calibrated=False)
    archs = random_architectures(micro_space, 10, seed=2, exclude=set())
    cal = fit_calibration(plain, micro_space, archs, [_truth(plain, micro_space, a) for a in archs])
    table.calibration[micro_space.fingerprint] = cal.to_dict()
    model = LatencyModel.from_table(table, micro_space)
    blocks = archs[0]
    alphas = [torch.nn.functional.one_hot(torch.tensor(micro_space.candidates(i).index(b)),
                                          len(micro_space.candidates(i))).float() for i, b in enumerate(blocks)]
    assert float(model.expected(alphas)) == pytest.approx(model.predict(micro_space, blocks), rel=1e-6)


def test_calibration_round_trips_through_the_table_file(micro_space, tmp_path: Path) -> None:
    table = make_table(micro_space)
    plain = LatencyModel.from_table(table, micro_space, calibrated=False)
    archs = random_architectures(micro_space, 8, seed=3, exclude=set())
    cal = fit_calibration(plain, micro_space, archs, [_truth(plain, micro_space, a) for a in archs])
    table.calibration[micro_space.fingerprint] = cal.to_dict()
    table.save(tmp_path / "t.json")
    again = LatencyModel.from_table(load_table(tmp_path / "t.json"), micro_space)
    assert again.predict(micro_space, archs[0]) == pytest.approx(LatencyModel.from_table(table, micro_space).predict(micro_space, archs[0]))


def test_random_architectures_are_distinct_and_exclude_fitted(micro_space) -> None:
    first = random_architectures(micro_space, 10, seed=0, exclude=set())
    assert len(set(first)) == 10
    again = random_architectures(micro_space, 10, seed=0, exclude={",".join(a) for a in first})
    assert not set(first) & set(again)
    with pytest.raises(Exception, match="only .* architectures left"):
        random_architectures(micro_space, 10**4, seed=0, exclude=set())


def test_metrics_by_hand() -> None:
    m = metrics([1.0, 2.16, 2.9, 4.8], [1.0, 2.0, 3.0, 4.0])  # errors 0, 8, 3.33, 20 %
    assert m["median_abs_err_pct"] == pytest.approx((3.333333 + 8) / 2, rel=1e-4)
    assert (m["within_5_pct"], m["within_10_pct"], m["max_abs_err_pct"]) == (50.0, 75.0, pytest.approx(20.0))
    assert m["spearman"] == pytest.approx(1.0) and m["samples"] == 4


@pytest.mark.slow
def test_validate_fit_then_search_uses_the_calibration(micro_space_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert invoke("benchmark", "--space", micro_space_file, "--out", out, "-q", *FAST).exit_code == 0
    # no --fit: the table has no calibration yet, so validate fits one (the predictor search will use)
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 16, "--json", *FAST)
    assert r.exit_code == 0, r.output
    head = json.loads(r.output)
    for _ in range(2):
        if head["calibration_refused"] is None:
            break
        # The refusal is validate at work: on a 2-core AMD EPYC VM the micro networks' fitted scale
        # lies near the 0.5 that validate accepts (docs/validate.md), and their noise now and then
        # puts it below. The same networks measured once more, as a user would.
        assert head["fitted_now"] is False and head["predictor"] == "table sum"
        r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 16, "--fit", "--json", *FAST)
        assert r.exit_code == 0, r.output
        head = json.loads(r.output)
    refused = head["calibration_refused"]
    if refused is not None and refused["reason"].startswith("its scale "):
        # Measured on this VM: the micro fit's scale 0.48-0.50 in 2 of 3 runs, where validate
        # accepts 0.5-2.0. What follows needs a stored fit; a machine where none is credible
        # cannot show it, and says so rather than failing or passing.
        pytest.skip(f"validate refused the micro networks' fit on this machine: {refused['reason']}")
    assert set(head) >= {"median_abs_err_pct", "within_10_pct", "within_5_pct", "max_abs_err_pct", "spearman", "samples"}
    assert head["samples"] == 8 and head["predictor"] == "calibrated" and head["fitted_now"] is True
    assert Path(head["plot"]).read_bytes()[:4] == b"\x89PNG"
    table = json.loads((out / "tables/micro/desktop/host.json").read_text())
    (cal,) = table["calibration"].values()
    assert cal["fitted_on"] == 8 and cal["heldout"]["samples"] == 8
    rounds_effect = Path(__file__).parents[1] / "perf/rounds_effect.py"
    effect = _ok(run_script(rounds_effect, out / "validate/micro/desktop/host/validate.json", "--space",
                            micro_space_file, "--splits", "3")).stdout.splitlines()
    # first 1, 3, 5 and 7 rounds, then all of them; each judged for the table sum and the calibration,
    # relative to the reference network (validate's default), then as timed
    assert effect[1].startswith("each as its ratio to the reference network")
    measures = [line.split("  ")[0] for line in effect[3:]]
    assert effect[0].startswith("8 held-out networks;") and measures == [
        kind + m for kind in ("", "as timed: ")
        for m in ("median of first 1 round", "median of first 3 rounds", "median of first 5 rounds",
                  "median of first 7 rounds", "median of all rounds") for _ in range(2)]
    # the same networks timed the three ways in one run: as timed, before/after, repeat by repeat
    ways = subprocess.run([sys.executable, Path(__file__).parents[1] / "perf/reference_effect.py",
                           out / "validate/micro/desktop/host/validate.json", "--space", micro_space_file, "--rounds",
                           "2", "--splits", "2"], capture_output=True, text=True, check=True).stdout.splitlines()
    assert ways[0] == "16 networks of desktop, 2 rounds, 2 random half/half refits"
    assert [w[:18].strip() for w in ways[2:]] == ["as timed", "before/after", "repeat by repeat"]
    assert all(float(w.split()[-3].rstrip("%")) >= 0 and w.endswith("%") for w in ways[2:])
    report = json.loads((out / "validate/micro/desktop/host/validate.json").read_text())
    for s in report["samples"]:  # the rounds as timed and the reference beside each are kept
        assert len(s["raw_rounds_ms"]) == len(s["reference_ms"]) == len(s["rounds_ms"]) >= 7
    assert "raw_median_pct" in report["noise"]
    *_, median_pct, miss_pct = effect[-1].split()  # refit on 3 random splits of the 16: a mean error, a share
    assert float(median_pct) >= 0 and miss_pct.endswith("%") and 0 <= float(miss_pct[:-1]) <= 100
    bad = run_script(rounds_effect, out / "tables/micro/desktop/host.json")
    assert bad.returncode == 1 and "not a validate.json" in bad.stderr and "Traceback" not in bad.stderr
    # --table: the same measurements judged against another table (here a copy, as slow as twice the first)
    doubled = json.loads((out / "tables/micro/desktop/host.json").read_text())
    for row in doubled["rows"]:
        if row["status"] == "ok":
            row["samples_ms"] = [2 * v for v in row["samples_ms"]]
            row["median_ms"], row["ratio"] = 2 * row["median_ms"], 2 * row["ratio"]  # as timed against the reference
    (tmp_path / "doubled.json").write_text(json.dumps(doubled))
    other = _ok(run_script(rounds_effect, out / "validate/micro/desktop/host/validate.json", "--space",
                           micro_space_file, "--splits", "0", "--table", tmp_path / "doubled.json")).stdout.splitlines()
    same = _ok(run_script(rounds_effect, out / "validate/micro/desktop/host/validate.json", "--space",
                          micro_space_file, "--splits", "0")).stdout.splitlines()
    sums = [(a.split(), b.split()) for a, b in zip(same[3:], other[3:]) if "table sum" in a]
    assert sums and all(a[-1] == b[-1] and a[-4] != b[-4] for a, b in sums)  # the same Spearman, other errors
    spread = Path(__file__).parents[1] / "perf/table_spread.py"
    lines = _ok(run_script(spread, out / "tables/micro/desktop/host.json", tmp_path / "doubled.json")).stdout.splitlines()
    assert lines[0].endswith("rows in common; each table's scale: 0.667 / 1.333")  # each over the median of both
    assert lines[1] == "a row's spread over the tables, scale removed: median 0.0%, 90th percentile 0.0%"
    one = run_script(spread, out / "tables/micro/desktop/host.json")
    assert one.returncode == 1 and "give at least two tables" in one.stderr
    terms = Path(__file__).parents[1] / "perf/calibration_terms.py"
    rows = _ok(run_script(terms, out / "validate/micro/desktop/host/validate.json", "--space",
                          micro_space_file, "--splits", "3")).stdout.splitlines()
    assert [r.split()[:3] for r in rows[1:]] == [["desktop", "scale", "1"], ["desktop", "any", "n"], ["desktop", "shipped", "1"]]
    assert rows[1].split()[-1] == "0%"  # intercept and scale only: never per-block terms
    # --edges re-prices identities with a table's no-op rows (here: 0.5 ms above each skip row)
    from benchmarks.boundary import identity_shapes
    from benchmarks.table import Row
    from blocks.space import resolve_space
    priced = load_table(out / "tables/micro/desktop/host.json")
    for shape in identity_shapes(resolve_space(str(micro_space_file))):
        skip_ms = priced.latency("skip", shape)
        priced.add(Row("noop_1", shape, "ok", skip_ms + 1.0, {"count": 3}))
        priced.add(Row("noop_2", shape, "ok", skip_ms + 1.5, {"count": 3}))
    priced.save(tmp_path / "priced.json")
    edged = _ok(run_script(terms, out / "validate/micro/desktop/host/validate.json", "--space",
                           micro_space_file, "--splits", "3", "--edges", tmp_path / "priced.json")).stdout.splitlines()
    assert len(edged) == len(rows) and edged[1].split()[:3] == rows[1].split()[:3] and edged[1] != rows[1]
    bad = run_script(terms, out / "tables/micro/desktop/host.json")
    assert bad.returncode == 1 and "not a validate.json" in bad.stderr and "Traceback" not in bad.stderr
    # perf/sample_size.py: random subsets of 8 and of all 12 networks, half fit, half judge
    sizes = Path(__file__).parents[1] / "perf/sample_size.py"
    run = out / "validate/micro/desktop/host/validate.json"
    rows = _ok(run_script(sizes, run, "--space", micro_space_file, "--splits", "3", "--sizes", "8", "12")).stdout.splitlines()
    assert [r.split()[:4] for r in rows[1:]] == [["desktop", "1", "8", "4"], ["desktop", "1", "12", "6"]]
    assert all(0 <= float(r.split()[5][:-1]) <= 100 for r in rows[1:])  # how often the goal was missed
    bad = run_script(sizes, run, "--space", micro_space_file, "--sizes", "17")
    assert bad.returncode == 1 and "give sizes from 6 to 16" in bad.stderr and "Traceback" not in bad.stderr
    r = invoke("search", "--space", micro_space_file, "--out", out, "--epochs", 2, "--warmup-epochs", 1, "-q")
    assert "(calibrated table sum (fitted on 8 whole networks))" in r.output and "'pipeline validate' (same" not in r.output
    # every network was timed in 7 rounds; the measurement is their median, their spread the noise
    saved = json.loads((out / "validate/micro/desktop/host/validate.json").read_text())
    for s in saved["samples"]:  # 7 rounds, and up to 2 more where the first 7 were over 10% apart
        first = s["rounds_ms"][:7]
        wide = (max(first) - min(first)) / statistics.median(first) > 0.10
        assert len(s["rounds_ms"]) == (9 if wide else 7), s["rounds_ms"]
        assert s["measured_ms"] == pytest.approx(statistics.median(s["rounds_ms"]))
    spreads = sorted((max(r) - min(r)) / statistics.median(r) * 100 for r in (s["rounds_ms"][:7] for s in saved["samples"]))
    assert head["noise"]["rounds"] == 7 and head["noise"]["max_pct"] == pytest.approx(spreads[-1])
    assert head["noise"]["retimed"] == sum(len(s["rounds_ms"]) > 7 for s in saved["samples"])
    assert head["noise"]["median_se_pct"] == pytest.approx(statistics.median(
        median_se_pct(s["rounds_ms"]) for s in saved["samples"]))
    # validating again judges the stored fit on networks it was not fitted on
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 5, "--rounds", 2, "--seed", 7, *FAST)
    assert "held out from any fit" in r.output and "noise: the same network's 2 rounds differ by a median of" in r.output
    assert "(stored in the table " in r.output and "fitted on 8 networks); search and predictions use it" in r.output
    saved = json.loads((out / "validate/micro/desktop/host/validate.json").read_text())
    assert all(len(s["rounds_ms"]) in (2, 4) for s in saved["samples"]) and saved["metrics"]["calibrated"]["samples"] == 5
    for s in saved["samples"]:
        assert s["measured_ms"] == pytest.approx(statistics.median(s["rounds_ms"]))
    # every timed file is named, so it can be re-timed with the runtime's own tools
    assert saved["target"] == "desktop" and saved["protocol"]["threads"] == 1
    assert all(Path(s["artifact"]).suffix == ".onnx" and Path(s["artifact"]).is_file() for s in saved["samples"])
    script = Path(__file__).parents[1] / "perf/independent_timing.py"
    run = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--rounds", "1",
                          "--min-runs", "3", "--min-s", "0"], capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "5 networks of desktop, 1 thread(s), 1 rounds" and "independent / validate: median" in run.stdout
    assert sum(1 for line in lines if line.rstrip().endswith(" yes")) == 5  # one row per network, all held out
    assert "calibrated: median" in run.stdout
    alone = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--rounds", "1",
                            "--min-runs", "3", "--min-s", "0", "--alone", "--limit", "2"],
                           capture_output=True, text=True, check=True)
    lines = alone.stdout.splitlines()
    assert lines[0] == "2 networks of desktop, 1 thread(s), 1 rounds, each alone in a fresh process"
    assert sum(1 for line in lines if line.rstrip().endswith(" yes")) == 2
    ratios = [float(line.split()[3]) for line in lines[2:4]]
    assert all(0.2 < r < 5 for r in ratios)  # the same networks, timed in another process
    paired = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--rounds", "2",
                             "--min-runs", "3", "--min-s", "0", "--paired", "--limit", "3"],
                            capture_output=True, text=True, check=True).stdout
    assert paired.splitlines()[0] == "3 networks of desktop, 1 thread(s), 2 rounds, loaded here and alone, paired"
    ratio = paired.split("timed back to back: median ")[1].splitlines()[0]
    assert 0.2 < float(ratio.split(",")[0]) < 5 and ratio.endswith("(6 pairs)")  # 3 networks x 2 rounds
    assert "prediction vs each alone in a fresh process:" in paired
    # the same judgement with the re-timing's first k rounds: with all of them, it is the one above
    sweep = paired.split("calibrated vs the independent median of its first k rounds:\n")[1].splitlines()
    assert [line.split()[0] for line in sweep] == ["k=1", "k=2"]
    whole = paired.split("prediction vs independent timing:\n")[1].split("calibrated: ")[1].splitlines()[0]
    assert sweep[1].split(None, 1)[1] == whole
    both = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--alone", "--paired"],
                          capture_output=True, text=True)
    assert both.returncode == 1 and "--alone and --paired: pick one" in both.stderr
    # without --rounds, as many rounds as validate gave every network (2 here)
    same = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--limit", "1",
                           "--min-runs", "3", "--min-s", "0"], capture_output=True, text=True, check=True).stdout
    assert same.splitlines()[0] == "1 networks of desktop, 1 thread(s), 2 rounds"
    none = subprocess.run([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--rounds", "0"],
                          capture_output=True, text=True)
    assert none.returncode == 1 and none.stderr.strip() == "--rounds 0: give a number of rounds, at least 1"
    # piped into a reader that has gone (`| head`): no traceback
    gone = subprocess.Popen([sys.executable, script, out / "validate/micro/desktop/host/validate.json", "--limit", "1",
                             "--rounds", "1", "--min-runs", "3", "--min-s", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    gone.stdout.close()  # type: ignore[union-attr]
    assert gone.wait() == 141 and "Traceback" not in gone.stderr.read()  # type: ignore[union-attr]


def test_validate_rechecks_table_rows_and_says_when_the_table_is_stale(micro_space_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "ws"
    assert invoke("benchmark", "--space", micro_space_file, "--out", out, "-q", *FAST).exit_code == 0
    path = out / "tables/micro/desktop/host.json"
    # 10x: micro's rows take 10-20 us, all per-call overhead, and on a 2-core VM one benchmark
    # timed them 2.3x slower than validate's recheck a minute later; a 3x table then read 1.3x.
    as_if_timed_faster(path, 10)
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 3, "--json", *FAST)
    drift = json.loads(r.output)["drift"]
    # rechecked before, between and after the 7 rounds
    assert drift["passes"] == 8 and drift["rows"] == 8 and drift["median"] > 3.0 and drift["verdict"] == "stale"
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 3, *FAST)
    assert "the table no longer describes this machine's speed; re-measure it with 'pipeline benchmark --force'" in r.output
    assert "calibration: none fitted: --samples 3 would fit a calibration on 2 networks; a calibration needs 8 " \
           "(--samples 16 or more); predictions are the plain table sum" in r.output
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 8, "--no-fit", "--rounds", 1,
               "--no-recheck", "--json", *FAST)
    head = json.loads(r.output)
    assert (head["predictor"], head["fitted_now"], head["samples"]) == ("table sum", False, 8)
    assert "calibration" not in json.loads(path.read_text())  # --no-fit stored nothing
    r = invoke("validate", "--space", micro_space_file, "--out", out, "--samples", 3, "--no-recheck", "--json", *FAST)
    assert json.loads(r.output)["drift"] is None


@pytest.mark.parametrize("passes, verdict", [
    ([1.0, 1.02, 0.99], "fits"),
    ([1.02, 1.36, 1.35, 1.02], "spell"),  # some passes agree with the table
    ([0.99, 0.91, 0.92, 0.93], "spell"),  # faster for a while
    ([3.0, 3.1, 2.9], "stale"),
])
def test_drift_verdicts(passes, verdict) -> None:
    from pipeline.stages.validate import ValidateReport

    from pipeline.render import validate_text

    r = ValidateReport([], Path("t.json"), {}, None, rechecks=[[p, p] for p in passes])
    assert r.drift["verdict"] == verdict and r.drift["passes"] == len(passes)
    if verdict == "spell":
        way = "slower" if r.drift["median"] > 1 else "faster"
        assert f"so the machine ran {way} for a while; validate again later" in validate_text(r)


def test_validate_bad_inputs(micro_space_file: Path, tmp_path: Path) -> None:
    r = invoke("validate", "--space", micro_space_file, "--out", tmp_path)
    assert r.exit_code == 2 and "validate needs a complete table" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", tmp_path, "--device", "pixel1")
    assert r.exit_code == 2 and "validate needs a complete table: no latency table for space 'micro' on desktop/pixel1" in r.stderr
    r = invoke("validate", "--space", micro_space_file, "--out", tmp_path, "--fit", "--samples", 5)
    assert r.exit_code == 2 and "--samples 5 would fit a calibration on 3 networks; a calibration needs 8; use --samples 16 or more, or --no-fit" in r.stderr


def test_a_fit_that_would_not_beat_the_plain_sum_keeps_it(micro_space) -> None:
    """When the table sum already predicts the device, the calibration is the identity."""
    plain = LatencyModel.from_table(make_table(micro_space), micro_space, calibrated=False)
    archs = random_architectures(micro_space, 8, seed=4, exclude=set())
    measured = [plain.predict(micro_space, a) for a in archs]
    measured[3] *= 1.5  # one disturbed measurement: any fit bends toward it, the plain sum does not
    cal = fit_calibration(plain, micro_space, archs, measured)
    assert (cal.intercept_ms, cal.scale, cal.per_block_ms) == (0.0, 1.0, {})


def test_noise_alone_does_not_buy_per_block_terms(micro_space) -> None:
    """A device that is the table scaled, measured with 3% noise: per-block terms can only fit
    the noise, so the one-standard-error rule keeps intercept and scale alone (choosing the best
    leave-one-out error outright took per-block terms for 7 of these 10 draws)."""
    import numpy as np

    from benchmarks.predict import calibration_design, fit_coefficients

    plain = LatencyModel.from_table(make_table(micro_space), micro_space, calibrated=False)
    with_terms = 0
    for seed in range(10):
        archs = random_architectures(micro_space, 20, seed=seed, exclude=set())
        noise = np.random.default_rng(seed).normal(1.0, 0.03, len(archs))
        x, _ = calibration_design(plain, micro_space, archs)
        coef = fit_coefficients(x, np.array([(0.2 + 0.8 * plain.predict(micro_space, a)) * n for a, n in zip(archs, noise)]),
                                min_networks_per_term=0)  # per-block terms allowed: the rule alone decides
        assert coef[1] == pytest.approx(0.8, rel=0.1)
        with_terms += bool(np.any(coef[2:]))
    assert with_terms <= 1


def test_per_block_terms_need_ten_networks_per_term(micro_space) -> None:
    """A device where skip costs nothing in a whole network: 20 networks fit intercept and
    scale only (4 block terms would need 40); 44 find the skip term."""
    plain = LatencyModel.from_table(make_table(micro_space), micro_space, calibrated=False)
    archs = random_architectures(micro_space, 64, seed=5, exclude=set())
    few = fit_calibration(plain, micro_space, archs[:20], [_truth(plain, micro_space, a) for a in archs[:20]])
    assert few.per_block_ms == {} and few.scale == pytest.approx(0.7, rel=0.1)
    many = fit_calibration(plain, micro_space, archs[:44], [_truth(plain, micro_space, a) for a in archs[:44]])
    assert min(many.per_block_ms, key=many.per_block_ms.get) == "skip"  # ridge-shrunk, but the cheapest
    held, truth = archs[44:], [_truth(plain, micro_space, a) for a in archs[44:]]
    table = make_table(micro_space)
    err = {}
    for name, cal in (("few", few), ("many", many)):
        table.calibration[micro_space.fingerprint] = cal.to_dict()
        model = LatencyModel.from_table(table, micro_space)
        err[name] = metrics([model.predict(micro_space, a) for a in held], truth)["max_abs_err_pct"]
    assert err["many"] < err["few"]


def test_an_identity_calibration_predicts_as_the_plain_sum(micro_space) -> None:
    from benchmarks.predict import Calibration

    table = make_table(micro_space)
    table.calibration[micro_space.fingerprint] = Calibration(micro_space.fingerprint, 0.0, 1.0, {}, 8).to_dict()
    model = LatencyModel.from_table(table, micro_space)
    assert model.calibration is None and model.name == "table sum"


def test_a_measurement_s_uncertainty_is_the_standard_error_of_its_median() -> None:
    # sigma from the MAD (1.4826 x 1 ms), times sqrt(pi/2) / sqrt(7): 0.702 ms of 10 ms
    assert median_se_pct([9, 10, 11, 10, 10, 9, 11]) == pytest.approx(7.02, abs=0.01)
    assert median_se_pct([10, 10, 10, 10, 10, 10, 20]) == 0.0  # one slow spell does not make it uncertain
    assert median_se_pct([10, 10, 10, 10, 10, 10, 10]) == 0.0


def test_networks_whose_rounds_disagree_are_timed_again() -> None:
    from tqdm import tqdm

    from pipeline.stages.validate import Timing, ValidateConfig, in_rounds

    # network 0 is steady; network 1 hits a slow spell in round 2 and again in its first extra
    # round; network 2 is slow in round 3 and in its last extra round
    times = {0: iter([10.0] * 9), 1: iter([10.0, 13.0, 10.0, 12.5, 10.1]), 2: iter([20.0, 20.0, 25.0, 20.1, 99.0])}
    calls: list[str] = []
    out = in_rounds(3, lambda i: (calls.append(str(i)), Timing(next(times[i])))[1], ValidateConfig(rounds=3),
                    lambda: calls.append("|"), tqdm(disable=True))
    # rounds alternate direction; the table rows are rechecked before, between and after them;
    # the two wide networks get two more rounds each, going on alternating direction
    assert "".join(calls) == "|012|210|012|" + "2112"
    assert out.rounds == [[10.0] * 3, [10.0, 13.0, 10.0, 12.5, 10.1], [20.0, 20.0, 25.0, 20.1, 99.0]]
    assert out.raw is None and out.reference is None  # no reference: the rounds are as timed
    assert [statistics.median(r) for r in out.rounds] == [10.0, 10.1, 20.1]  # two slow rounds outvoted
    # one round has no spread to judge; extra_rounds 0 turns retiming off
    assert in_rounds(2, lambda i: Timing(float(i + 1)), ValidateConfig(rounds=1), lambda: None,
                     tqdm(disable=True)).rounds == [[1.0], [2.0]]
    noisy = iter([1.0, 2.0, 1.0])
    assert in_rounds(1, lambda i: Timing(next(noisy)), ValidateConfig(rounds=3, extra_rounds=0), lambda: None,
                     tqdm(disable=True)).rounds == [[1.0, 2.0, 1.0]]


def test_networks_timed_against_a_reference_are_its_ratio_times_its_median_over_the_run() -> None:
    from tqdm import tqdm

    from pipeline.stages.validate import Sample, Timing, ValidateConfig, ValidateReport, in_rounds

    # The machine's speed wanders (x0.75 to x1.25, as on a shared VM) under two steady networks
    # of 10 and 20 ms and a 4 ms reference timed repeat by repeat beside them (so their ratios
    # hold still, but for 1% of noise of their own).
    speed = iter([1.0, 1.25, 0.8, 1.2, 0.75, 1.1])  # one per measurement: 0, 1 | 1, 0 | 0, 1
    own = iter([1.0, 1.01, 0.99] * 2)

    def time_one(i: int) -> Timing:
        s, ms = next(speed), (10.0, 20.0)[i]
        return Timing(ms * s, ms / 4.0 * next(own), 4.0 * s)

    out = in_rounds(2, time_one, ValidateConfig(rounds=3), lambda: None, tqdm(disable=True))
    # As timed, the rounds wander with the machine (more than wide_pct apart, which would have
    # bought extra rounds); as ratios they do not, and no network is timed again.
    spread = [(max(r) - min(r)) / statistics.median(r) * 100 for r in out.raw]
    assert min(spread) > 20
    assert len(out.rounds[0]) == len(out.rounds[1]) == 3 and len(out.reference[0]) == 3
    scale = statistics.median([x for ref in out.reference for x in ref])  # the reference's median over the run
    for ms, want in zip(out.rounds, (10.0, 20.0)):
        assert max(ms) / min(ms) < 1.03 and statistics.median(ms) == pytest.approx(want / 4.0 * scale, rel=0.011)
    # the report says what the reference took away
    samples = [Sample(("a",), "random", statistics.median(r), 1.0, rounds_ms=tuple(r), raw_rounds_ms=tuple(raw),
                      reference_ms=tuple(ref)) for r, raw, ref in zip(out.rounds, out.raw, out.reference)]
    noise = ValidateReport(samples, Path("t.json"), {}, None, rounds=3).noise
    assert noise["raw_median_pct"] > 20 > 5 > noise["median_pct"]


def test_timing_of_a_measurement_against_a_reference_keeps_both_medians() -> None:
    from benchmarks.protocol import Samples
    from pipeline.stages.validate import Timing

    stats = Samples((10.0, 12.0, 11.0), 1, 0.0, 0.0, (5.0, 6.0, 5.0)).stats()
    t = Timing.of(stats)
    assert (t.ms, t.ratio, t.reference_ms) == (11.0, 2.0, 5.0)  # ratios 2, 2, 2.2
    assert Timing.of(Samples((10.0, 12.0, 11.0), 1, 0.0, 0.0).stats()) == Timing(11.0)


def test_noise_is_judged_on_the_regular_rounds_even_when_every_network_was_retimed() -> None:
    from pipeline.stages.validate import Sample, ValidateReport

    # 3 regular rounds, 2 extra for both networks: the spread is of the first 3 (20% and 10%)
    samples = [Sample(("a",), "random", 10.0, 10.0, rounds_ms=(10.0, 12.0, 10.0, 10.0, 10.0)),
               Sample(("b",), "random", 20.0, 20.0, rounds_ms=(20.0, 20.0, 22.0, 20.0, 20.0))]
    noise = ValidateReport(samples, Path("t.json"), {}, None, rounds=3).noise
    assert noise["rounds"] == 3 and noise["retimed"] == 2
    assert noise["median_pct"] == pytest.approx(15.0) and noise["max_pct"] == pytest.approx(20.0)
    # a report built without the regular count: the fewest rounds any network got stand in
    assert ValidateReport(samples, Path("t.json"), {}, None).noise["rounds"] == 5


def test_the_report_names_per_block_terms_only_when_the_fit_has_them() -> None:
    from benchmarks.predict import Calibration
    from pipeline.render import validate_text
    from pipeline.stages.validate import ValidateReport

    m = {"table sum": metrics([1.0, 2.0, 3.0], [1.1, 2.0, 2.9])}
    scaled = validate_text(ValidateReport([], Path("t.json"), m, Calibration("f", -0.5, 0.9, {}, 20), fitted_now=True))
    assert "calibration: -0.5000 ms + 0.900 x table sum (fitted now on 20 networks)" in scaled
    terms = validate_text(ValidateReport([], Path("t.json"), m, Calibration("f", -0.5, 0.9, {"skip": -0.1}, 20,
                                                                            created="2026-11-29T10:00:00+00:00")))
    assert "0.900 x table sum + per-block terms (stored in the table 2026-11-29T10:00:00+00:00, fitted on 20 networks)" \
        in terms


def _fit_on(micro_space, measure, n: int = 16, seed: int = 5):
    plain = LatencyModel.from_table(make_table(micro_space), micro_space, calibrated=False)
    archs = random_architectures(micro_space, n, seed=seed, exclude=set())
    ms = [measure(plain, a) for a in archs]
    return plain, archs, ms


def test_a_credible_fit_passes_and_each_rule_refuses_what_it_names(micro_space) -> None:
    from benchmarks.predict import Calibration, refusal, scale_standard_error

    plain, archs, ms = _fit_on(micro_space, lambda m, a: 0.3 + 0.7 * m.predict(micro_space, a))
    cal = fit_calibration(plain, micro_space, archs[:8], ms[:8])
    se = scale_standard_error(plain, micro_space, archs[:8], ms[:8])
    assert se < 1e-6 and refusal(cal, plain, ms[:8], (30.0, 0.5), se) is None  # a linear device: pinned exactly

    def made(intercept: float, scale: float, n: int = 8) -> Calibration:
        return Calibration(micro_space.fingerprint, intercept, scale, {}, n)

    few = refusal(made(0.1, 0.9, n=5), plain, ms[:5], None, se)
    assert "fitted on 5 networks, fewer than the 8 a fit needs" in few.reason and few.networks_needed == 8
    low = refusal(made(0.3, 0.127), plain, ms[:8], None, 0.2)  # the scale once stored from 5 networks
    assert "scale 0.127 (± 0.200) is outside 0.5-2.0" in low.reason
    assert low.networks_needed == 8 * 16  # (0.2 / 0.05)^2 times as many would pin it to ±0.05
    assert "pipeline validate --fit --samples 256" in low.advice
    lo = plain.bounds()[0]
    negative = refusal(made(-1.1 * lo, 1.0), plain, ms[:8], None, se)
    assert "for the space's fastest network" in negative.reason
    big = refusal(made(min(ms[:8]), 1.0), plain, ms[:8], None, se)
    assert "is more than the fastest network it was fitted on takes in all" in big.reason
    worse = refusal(made(0.01, 1.1), plain, ms[:8], (2.0, 3.5), se)
    assert "further off (median 3.5%) than the plain table sum (2.0%)" in worse.reason
    assert worse.networks_needed is None and "plain table sum, which did better" in worse.advice
    pinned = refusal(made(0.3, 0.127), plain, ms[:8], None, 0.01)  # well pinned, yet absurd: more won't help
    assert pinned.networks_needed is None and "measure the table again" in pinned.advice


def test_a_noisy_fit_on_few_networks_has_a_wide_scale(micro_space) -> None:
    """The standard error grows with the noise and shrinks with the networks, as 1/sqrt(n)."""
    from benchmarks.predict import scale_standard_error

    rng = np.random.default_rng(0)
    noise = rng.normal(1.0, 0.1, 64)
    plain, archs, ms = _fit_on(micro_space, lambda m, a: _truth(m, micro_space, a), n=64, seed=6)
    noisy = [m * e for m, e in zip(ms, noise)]
    few, many = (scale_standard_error(plain, micro_space, archs[:k], noisy[:k]) for k in (8, 64))
    assert few > 2 * many > 0


@pytest.mark.parametrize("field, value", [("intercept_ms", float("nan")), ("scale", float("inf")),
                                          ("per_block_ms", {"skip": float("-inf")})])
def test_a_stored_calibration_that_is_not_finite_is_refused_in_one_line(micro_space, field, value) -> None:
    from core.errors import PipelineError

    table = make_table(micro_space)
    table.calibration[micro_space.fingerprint] = {"space_fingerprint": micro_space.fingerprint, "intercept_ms": 0.1,
                                                  "scale": 0.9, "per_block_ms": {}, "fitted_on": 8, field: value}
    with pytest.raises(PipelineError, match="calibration is malformed .a coefficient is not a finite number.; refit"):
        LatencyModel.from_table(table, micro_space)
