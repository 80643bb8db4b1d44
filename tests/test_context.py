"""In-context block timing (`benchmark --timing in-context`): real ONNX exports on the micro space,
timed by ONNX Runtime, and by a deterministic stand-in where exact values are asserted."""

import json
import statistics
from typing import ClassVar

import onnx
import pytest
from click.testing import CliRunner

from benchmarks import context
from benchmarks.harness import BenchmarkJob
from benchmarks.predict import LatencyModel
from benchmarks.protocol import Protocol, Samples
from benchmarks.table import load_table, required_rows, row_key
from benchmarks.targets import TARGETS
from tests.conftest import MICRO_SPACE, make_table
from pipeline.cli import main

FAST = Protocol(warmup_runs=2, warmup_ms=1.0, repeats=5, min_repeat_ms=0.5, threads=1, row_timeout_s=0)
FAST_FLAGS = ["--repeats", "5", "--min-repeat-ms", "0.5", "--row-timeout", "0", "--jobs", "1"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The micro space's in-context table for desktop, through the command line, timed for real."""
    root = tmp_path_factory.mktemp("ctx")
    space_file = root / "micro.yaml"
    space_file.write_text(MICRO_SPACE)
    r = cli("benchmark", "--space", space_file, "--target", "desktop", "--out", root / "ws", "--timing", "in-context",
            "--json", "-q", *FAST_FLAGS)
    assert r.exit_code == 0, r.output
    return root, space_file, json.loads(r.stdout)


def test_in_context_table_is_complete_positive_and_sums_to_the_base(measured, micro_space):
    root, _, report = measured
    path = root / "ws" / "tables" / "micro" / "desktop" / "host.in-context.json"
    assert report["table"] == str(path) and report["timing"] == "in-context"
    table = load_table(path)
    table.check_fits(micro_space)
    assert len(table.rows) == len(required_rows(micro_space)) and table.provenance["timing"] == "in-context"
    assert all(r.status == "ok" and r.median_ms > 0 for r in table.rows.values())
    ctx = table.provenance["context"]
    isolated = load_table(root / "ws" / "tables" / "micro" / "desktop" / "host.json")  # measured first, beside it
    assert tuple(ctx["base"]) == context.base_architecture(micro_space, isolated)
    # the base's median over every repeat of it the table holds...
    pool = ctx["base_samples_ms"] + [v for r in table.rows.values() for v in r.stats.get("base_samples_ms", [])]
    assert ctx["base_median_ms"] == pytest.approx(statistics.median(pool))
    # ...is what the table says the base network takes, by construction
    plain = LatencyModel.from_table(table, micro_space, calibrated=False)
    assert plain.predict(micro_space, tuple(ctx["base"])) == pytest.approx(ctx["base_median_ms"], rel=1e-9)
    assert report["measured"] == len(context.context_rows(micro_space, tuple(ctx["base"])))
    assert report["at_or_below_base"] == context.at_or_below_base(table)


def test_isolated_and_in_context_tables_do_not_mix_without_force(measured):
    root, space_file, _ = measured
    tables = root / "ws" / "tables" / "micro" / "desktop"
    common = ["--space", space_file, "--target", "desktop", "--out", root / "ws", *FAST_FLAGS]
    r = cli("benchmark", *common, "--table", tables / "host.in-context.json")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1 and "Traceback" not in r.output
    assert "timing='in-context', this run uses 'isolated'; pass --force" in r.stderr
    r = cli("benchmark", *common, "--timing", "in-context", "--table", tables / "host.json")
    assert r.exit_code != 0 and r.stderr.count("\n") == 1
    assert "timing='isolated', this run uses 'in-context'; pass --force" in r.stderr
    r = cli("benchmark", *common, "--timing", "in-context", "--rounds", "3")
    assert r.exit_code != 0 and "drop --rounds" in r.stderr and r.stderr.count("\n") == 1


class StandIn:
    """`NetworkTimer` with a deterministic clock: a network takes 0.01 ms per ONNX node, every
    repeat alike. `stop_after` raises KeyboardInterrupt at that many rows timed (all processes)."""

    loads: ClassVar[list[int]] = []
    rows_timed: ClassVar[int] = 0
    stop_after: ClassVar[int | None] = None

    def __init__(self, runner, protocol):
        self.protocol, self.ms = protocol, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def load(self, artifact, inputs):
        self.ms.append(0.01 * len(onnx.load(str(artifact.path)).graph.node))
        StandIn.loads.append(len(self.ms) - 1)
        return len(self.ms) - 1

    def stats(self, index, against=None):
        if against is not None:
            if StandIn.stop_after is not None and StandIn.rows_timed >= StandIn.stop_after:
                raise KeyboardInterrupt
            StandIn.rows_timed += 1
        n, ms = self.protocol.repeats, self.ms[index]
        ref = (self.ms[against],) * n if against is not None else ()
        return Samples((ms,) * n, 1, 0.0, ms, ref).stats()


@pytest.fixture
def stand_in(monkeypatch, tmp_path, micro_space, measured):
    """A job for the micro space whose isolated table calls k3_e6 the cheapest everywhere: a base
    that is not the cheapest in context, so lighter blocks come out below it. (Its networks are
    exported into the real run's cache: `measured` exported some of them already.)"""
    monkeypatch.setattr(context, "NetworkTimer", StandIn)
    StandIn.loads, StandIn.rows_timed, StandIn.stop_after = [], 0, None
    isolated = make_table(micro_space, lambda b, s: {"k3_e6": 0.5}.get(b, 1.0))
    target = TARGETS.get("desktop")
    exporter = target.make_exporter()
    job = BenchmarkJob(micro_space, exporter, target.make_runner(1), target.tolerance_for(exporter), FAST,
                       tmp_path / "ctx.json", measured[0] / "ws" / "cache", {"target": "desktop", "device": "host",
                                                                  "timing": "in-context"})
    return job, target, isolated


def test_rows_at_or_below_the_base_are_stored_equal_to_it(stand_in, micro_space, tmp_path):
    job, target, isolated = stand_in
    table, measured = context.benchmark_in_context(job, target, isolated, tmp_path / "iso.json", progress=False)
    ctx = table.provenance["context"]
    base, t = tuple(ctx["base"]), ctx["base_median_ms"]
    assert base == ("k3_e6",) * 3
    below = [r for r in table.rows.values() if r.stats.get("context_ratio", 2) <= 1]
    assert any(r.stats["context_ratio"] < 1 for r in below)  # skip and k3_e1 have fewer nodes than k3_e6
    assert context.at_or_below_base(table) == len(below)
    for r in table.rows.values():
        share = ctx["shares"][row_key(base[r.stats.get("layer", 0)], r.shape)] if "context_ratio" in r.stats else None
        if r in below:  # stored as equal to the base's part at its layer, the raw difference kept
            assert r.median_ms == pytest.approx(t * share) and r.stats["delta_ms"] <= 0 and r.stats["at_or_below_base"]
            assert r.median_ms == pytest.approx(table.rows[row_key("k3_e6", r.shape)].median_ms)
        elif share is not None:
            assert r.median_ms == pytest.approx(t * (share + r.stats["context_ratio"] - 1))
            assert r.median_ms > table.rows[row_key("k3_e6", r.shape)].median_ms
        assert r.median_ms > 0
    saved = load_table(job.table_path)
    assert saved.rows.keys() == table.rows.keys() and measured == len(context.context_rows(micro_space, base))
    from pipeline.render import _counts
    from pipeline.stages.benchmark import BenchmarkReport
    assert f"{len(below)} row(s) came out at or below the cheapest candidate: stored as equal to it" in \
        _counts(BenchmarkReport(saved, job.table_path, measured))


def test_an_interrupted_in_context_benchmark_measures_only_the_missing_rows(stand_in, micro_space, tmp_path):
    job, target, isolated = stand_in
    StandIn.stop_after = 2
    with pytest.raises(KeyboardInterrupt):
        context.benchmark_in_context(job, target, isolated, tmp_path / "iso.json", progress=False)
    kept = load_table(job.table_path)  # whole and valid: the base's parts and the two rows timed
    timed = [k for k, r in kept.rows.items() if "context_ratio" in r.stats]
    assert len(timed) == 2
    StandIn.stop_after, StandIn.loads, StandIn.rows_timed = None, [], 0
    table, measured = context.benchmark_in_context(job, target, isolated, tmp_path / "iso.json", progress=False)
    rows = context.context_rows(micro_space, tuple(table.provenance["context"]["base"]))
    assert measured == StandIn.rows_timed == len(rows) - 2
    assert len(StandIn.loads) == 1 + measured  # the base network and each missing row's, nothing else
    assert all(table.rows[k].stats["context_ratio"] == kept.rows[k].stats["context_ratio"] for k in timed)
    table.check_fits(micro_space)
