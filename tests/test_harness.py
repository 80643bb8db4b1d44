"""Real exports and real ONNX Runtime timings on a micro space."""

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from benchmarks.protocol import Protocol, measure
from benchmarks.table import load_table, required_rows
from pipeline.stages import benchmark as benchmark_stage
from benchmarks.targets import TARGETS
from core.workspace import Workspace
from benchmarks.runners.onnxruntime import OnnxRuntimeRunner

FAST = Protocol(warmup_runs=2, warmup_ms=1.0, repeats=5, min_repeat_ms=0.5, threads=1)


@pytest.fixture
def benchmarked(tmp_path, micro_space):
    ws = Workspace(tmp_path / "ws")
    report = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, FAST, progress=False)
    return ws, report


def test_benchmark_measures_every_row_once_with_provenance(benchmarked, micro_space):
    ws, report = benchmarked
    # ONNX keeps NCHW at its edges: no no-op rows to price identities with (test_boundary.py)
    assert report.measured == len(required_rows(micro_space)) == len(report.table.rows)
    table = load_table(report.path)
    table.check_fits(micro_space)
    p = table.provenance
    assert p["target"] == "desktop" and p["device"] == "host" and p["runtime"] == "onnxruntime"
    assert p["runtime_version"] == ort.__version__ and p["threads"] == 1 and p["host"]["cores"] >= 1
    assert p["space"] == "micro" and p["block_set"] == ["k3_e1", "k3_e6", "k5_e3", "skip"]
    for row in table.rows.values():
        s = row.stats
        assert row.status == "ok" and row.median_ms > 0
        assert s["p10_ms"] <= row.median_ms <= s["p90_ms"] and s["count"] == 5 and s["number"] >= 1
        assert s["max_abs_err"] < 1e-3


def test_heavier_blocks_measure_slower_where_compute_dominates(tmp_path):
    # At the micro space's 8x8x8 shapes a call costs ~20 µs of runtime overhead either way, so
    # the ordering is noise there (it flipped once in CI). At 32 channels and 28x28, k3_e6
    # does ~6x the multiply-adds of k3_e1 and must time slower by a wide margin.
    from benchmarks.harness import export_row, measure_row, BenchmarkJob
    from blocks.space import LayerShape
    target = TARGETS.get("desktop")
    shape = LayerShape(32, 32, 1, 28, 28)
    exporter = target.make_exporter()
    job = BenchmarkJob(space=None, exporter=exporter, runner=target.make_runner(1),
                       tolerance=target.tolerance_for(exporter), protocol=FAST, table_path=tmp_path / "t.json",
                       cache_dir=tmp_path / "cache")
    ms = {b: measure_row(job, b, shape, export_row(job.exporter, b, shape, job.cache_dir)).median_ms
          for b in ("k3_e1", "k3_e6")}
    assert ms["k3_e6"] > 2 * ms["k3_e1"], ms


def test_second_run_measures_only_what_is_missing(benchmarked, micro_space):
    ws, first = benchmarked
    again = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, FAST, progress=False)
    assert again.measured == 0
    data = json.loads(first.path.read_text())
    data["rows"] = data["rows"][1:]
    first.path.write_text(json.dumps(data))
    assert benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, FAST, progress=False).measured == 1
    forced = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, FAST, force=True, progress=False)
    assert forced.measured == len(first.table.rows)


def test_cached_artifacts_run_in_an_independent_session_and_match_torch(benchmarked):
    ws, _ = benchmarked
    files = sorted((ws.cache / "onnx").glob("*.onnx"))
    assert len(files) >= 10
    for f in files[:4]:
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        shape = sess.get_inputs()[0].shape
        out = sess.run(None, {"input": np.random.randn(*shape).astype(np.float32)})[0]
        assert np.isfinite(out).all()


def test_other_setup_is_refused_without_force(benchmarked, micro_space):
    ws, _ = benchmarked
    from core.errors import PipelineError
    with pytest.raises(PipelineError, match="threads=1.*uses 2; pass --force"):
        benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, Protocol(threads=2), progress=False)


def test_measure_grows_calls_per_repeat_until_a_repeat_lasts_min_repeat_ms():
    calls = []
    s = measure(lambda: calls.append(1), Protocol(warmup_runs=1, warmup_ms=0, repeats=4, min_repeat_ms=2.0))
    assert s.number > 1 and len(s.per_call_ms) == 4
    st = s.stats()
    assert st["count"] == 4 and st["p10_ms"] <= st["median_ms"] <= st["p90_ms"] and st["cv"] >= 0


def test_wide_rows_are_measured_again_and_flagged():
    from benchmarks.harness import steadiest

    def runs(cvs):
        it = iter(cvs)
        return lambda: {"cv": next(it), "median_ms": 1.0}

    p = Protocol(max_cv=0.1, retries=2)
    wide = steadiest(runs([0.5, 0.3, 0.2, 0.01]), p)
    assert (wide["cv"], wide["attempts"], wide.get("wide")) == (0.2, 3, True)
    settled = steadiest(runs([0.5, 0.05]), p)
    assert (settled["cv"], settled["attempts"], settled.get("wide")) == (0.05, 2, None)


def test_rows_keep_raw_samples_and_record_affinity(micro_space, tmp_path):
    ws = Workspace(tmp_path)
    report = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), ws, FAST, progress=False)
    table = report.table
    ref = table.reference  # every row is timed against it, repeat by repeat
    assert ref["row"] == "k5_e3/8x8x8-16-s2"  # the middle layer's candidate of median size (k3_e1 < k5_e3 < k3_e6)
    reference_ms = [v for row in table.rows.values() for v in row.stats["reference_ms"]]
    assert ref["median_ms"] == pytest.approx(float(np.median(reference_ms)))
    for row in table.rows.values():
        s = row.stats
        assert len(s["samples_ms"]) == len(s["reference_ms"]) == s["count"] == FAST.repeats
        ratio = float(np.median(np.array(s["samples_ms"]) / np.array(s["reference_ms"])))
        assert s["ratio"] == pytest.approx(ratio) and row.median_ms == pytest.approx(ratio * ref["median_ms"])
        assert s["p10_ms"] <= row.median_ms <= s["p90_ms"]  # summary statistics at the table's scale too
    if hasattr(os, "sched_setaffinity"):
        assert report.table.provenance["affinity"] == sorted(os.sched_getaffinity(0))[:FAST.threads]


def test_rows_in_rounds_keep_their_median_round_and_survive_on_disk_after_every_one(micro_space, tmp_path):
    """Round 1 is the usual pass; rounds 2..N go over the same rows (alternating direction) and
    each row becomes its median round, whole, so the file is valid after every measurement."""
    from benchmarks.harness import BenchmarkJob, _more_rounds, median_round
    from benchmarks.table import LatencyTable, Row
    from blocks.space import LayerShape

    shape = LayerShape(8, 8, 1, 8, 8)
    keys = {b: f"{b}/{shape.key}" for b in ("k3_e1", "k5_e3")}

    def row(block: str, ms: float) -> Row:  # a row whose raw samples give its median
        return Row(block, shape, "ok", ms, {"samples_ms": [ms * 0.9, ms, ms * 1.1], "count": 3})

    table = LatencyTable({"target": "desktop"})
    for b in keys:
        table.add(row(b, 1.0))
        table.rows[keys[b]].layers = [0]
    later = {"k3_e1": iter([5.0, 2.0, 3.0]), "k5_e3": iter([0.5, 0.7, 0.6])}  # rounds 2, 3, 4
    order: list[str] = []

    def measure(block: str, shape_: LayerShape, artifact: object) -> Row:
        order.append(block)
        if len(order) > 1:  # saved after every measurement: a whole, valid table with both rows
            assert set(load_table(tmp_path / "t.json").rows) == set(keys.values())
        return row(block, next(later[block]))

    job = BenchmarkJob(space=None, exporter=None, runner=None, tolerance=None, protocol=FAST,
                       table_path=tmp_path / "t.json", cache_dir=tmp_path, rounds=4)
    _more_rounds(job, table, {k: object() for k in keys.values()}, measure, disable=True)
    assert order == ["k5_e3", "k3_e1", "k3_e1", "k5_e3", "k5_e3", "k3_e1"]  # backwards, forwards, backwards
    slow, fast = table.rows[keys["k3_e1"]], table.rows[keys["k5_e3"]]
    # rounds 1.0, 5.0, 2.0, 3.0 -> lower median 2.0; 1.0, 0.5, 0.7, 0.6 -> 0.6
    assert (slow.median_ms, fast.median_ms) == (2.0, 0.6)
    assert slow.stats["round_medians_ms"] == [1.0, 5.0, 2.0, 3.0] and slow.stats["rounds"] == 4
    assert slow.stats["samples_ms"] == [1.8, 2.0, 2.2] and slow.layers == [0]  # the median round, whole
    on_disk = load_table(tmp_path / "t.json")
    assert on_disk.rows[keys["k3_e1"]].median_ms == 2.0 and on_disk.rows[keys["k5_e3"]].stats["rounds"] == 4
    assert median_round([row("k3_e1", 3.0)]).stats["round_medians_ms"] == [3.0]


def test_benchmark_in_rounds_records_them_per_row(micro_space, tmp_path):
    report = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), Workspace(tmp_path), FAST, progress=False, rounds=3,
                                reference=False)
    table = load_table(report.path)
    assert table.provenance["rounds"] == 3 and report.measured == len(table.rows) and table.reference is None
    for row in table.rows.values():
        medians = row.stats["round_medians_ms"]
        assert row.stats["rounds"] == len(medians) == _rounds_of(row, 3)
        assert row.median_ms == sorted(medians)[(len(medians) - 1) // 2]  # the lower median of an even count
        assert row.median_ms == pytest.approx(float(np.median(row.stats["samples_ms"])), rel=1e-3)
        assert "ratio" not in row.stats and "reference_ms" not in row.stats


def _rounds_of(row, rounds: int) -> int:
    """A row's rounds: `rounds`, or, where it contradicted the table and was timed again
    (`retime_implausible`), its median round so far and the re-timing's rounds."""
    from benchmarks.harness import RETIME_ROUNDS

    return 1 + RETIME_ROUNDS if "retimed" in row.stats else rounds


def test_rounds_against_the_reference_keep_the_round_of_median_ratio(micro_space, tmp_path):
    report = benchmark_stage.benchmark(micro_space, TARGETS.get("desktop"), Workspace(tmp_path), FAST, progress=False, rounds=3)
    table = load_table(report.path)  # the file checks: ratios, the reference's median, every row's latency
    for row in table.rows.values():
        assert row.stats["rounds"] == _rounds_of(row, 3)
        assert row.median_ms == pytest.approx(row.stats["ratio"] * table.reference["median_ms"])


def test_a_resumed_table_keeps_its_reference_and_an_old_one_stays_without(micro_space, tmp_path):
    from core.errors import PipelineError

    desktop, ws = TARGETS.get("desktop"), Workspace(tmp_path)
    first = benchmark_stage.benchmark(micro_space, desktop, ws, FAST, progress=False)
    data = json.loads(first.path.read_text())
    data["provenance"]["reference"].update(block="k3_e1", row="k3_e1/8x8x8-16-s2")  # as if chosen otherwise
    dropped = data["rows"].pop(0)["key"]
    others = {d["key"]: d["median_ms"] for d in data["rows"]}
    first.path.write_text(json.dumps(data))
    again = benchmark_stage.benchmark(micro_space, desktop, ws, FAST, progress=False)
    assert again.measured == 1 and again.table.reference["block"] == "k3_e1"  # the table's own reference
    assert "ratio" in again.table.rows[dropped].stats
    # the rows kept moved only with the reference's median over all rows, together
    moved = {k: again.table.rows[k].median_ms / ms for k, ms in others.items()}
    assert max(moved.values()) == pytest.approx(min(moved.values()))
    with pytest.raises(PipelineError, match="measured against a reference row; drop --no-reference"):
        benchmark_stage.benchmark(micro_space, desktop, ws, FAST, force=False, progress=False, reference=False)

    old = benchmark_stage.benchmark(micro_space, desktop, Workspace(tmp_path / "old"), FAST, progress=False, reference=False)
    data = json.loads(old.path.read_text())
    data["rows"].pop(0)
    old.path.write_text(json.dumps(data))
    resumed = benchmark_stage.benchmark(micro_space, desktop, Workspace(tmp_path / "old"), FAST, progress=False)
    assert resumed.measured == 1 and resumed.table.reference is None  # its rows share no reference to scale by
    assert not any("ratio" in r.stats for r in resumed.table.rows.values())


def test_rows_another_run_measured_meanwhile_are_kept_not_measured_again(micro_space, tmp_path, monkeypatch):
    """Two runs on one table: the second exports, then waits for the first to finish timing
    (`benchmarks.exclusive`). It must go on from what the first wrote, not overwrite it."""
    from benchmarks import harness

    desktop, ws = TARGETS.get("desktop"), Workspace(tmp_path)
    first = benchmark_stage.benchmark(micro_space, desktop, ws, FAST, progress=False)
    complete = json.loads(first.path.read_text())
    ratios = {d["key"]: d["ratio"] for d in complete["rows"]}

    def without(keys):
        return json.dumps({**complete, "rows": [d for d in complete["rows"] if d["key"] not in keys]})

    missing = [d["key"] for d in complete["rows"][:3]]
    first.path.write_text(without(missing))  # this run starts with three rows to measure
    export_rows = harness.export_rows

    def other_run_measures_one_meanwhile(job, rows, progress):
        first.path.write_text(without(missing[1:]))
        return export_rows(job, rows, progress)

    monkeypatch.setattr(harness, "export_rows", other_run_measures_one_meanwhile)
    again = benchmark_stage.benchmark(micro_space, desktop, ws, FAST, progress=False)
    assert again.measured == 2
    assert again.table.rows[missing[0]].stats["ratio"] == ratios[missing[0]]  # the other run's, kept
    assert len(again.table.rows) == len(complete["rows"])


def test_measure_against_a_reference_cancels_the_machine_slowing_down(monkeypatch):
    """On a virtual clock where the machine runs at half speed every other repeat, times as
    timed vary twofold; their ratios to the reference timed next to them do not move."""
    from benchmarks import protocol as proto

    clock = {"now": 0.0, "calls": 0}

    def work(ms):
        def call():
            clock["calls"] += 1
            slow = 2.0 if (clock["calls"] // 50) % 2 else 1.0  # a slow spell every 50 calls
            clock["now"] += ms * slow / 1e3
        return call

    monkeypatch.setattr(proto.time, "perf_counter", lambda: clock["now"])
    p = Protocol(warmup_runs=1, warmup_ms=0, repeats=11, min_repeat_ms=1.0, pin=False)
    ref = proto.Reference(work(0.1), 10)
    s = proto.measure(work(0.3), p, reference=ref)
    assert len(s.reference_ms) == len(s.per_call_ms) == 11 and s.number == 4
    assert max(s.per_call_ms) / min(s.per_call_ms) > 1.3  # the spells reach the row's own repeats
    st = s.stats()
    assert st["ratio"] == pytest.approx(3.0, rel=0.05)
    assert st["median_ms"] == pytest.approx(3.0 * float(np.median(st["reference_ms"])), rel=1e-6)


def _hang() -> None:
    import time as _t

    _t.sleep(600)


def _crash() -> None:
    os._exit(7)


BREAKS = {"hang": _hang, "crash": _crash}  # a runtime that hangs, one that segfaults


class _BrokenOn16Channels(OnnxRuntimeRunner):
    """Loads fine, then breaks (`BREAKS[mode]`) running the 16-channel blocks."""

    mode = ""

    def load(self, artifact):
        run = super().load(artifact)

        def broken(inputs):
            if inputs[0].shape[1] == 16:
                BREAKS[self.mode]()
            return run(inputs)

        return broken


class _HangingRunner(_BrokenOn16Channels):
    mode = "hang"


class _CrashingRunner(_BrokenOn16Channels):
    mode = "crash"


@pytest.mark.slow
@pytest.mark.parametrize("runner_cls, reason", [(_HangingRunner, "hung on this block"),
                                                (_CrashingRunner, "crashed on this block (exit code 7)")])
def test_a_runtime_that_hangs_or_crashes_costs_only_its_rows(micro_space, tmp_path, runner_cls, reason):
    from benchmarks.harness import BenchmarkJob, benchmark_space

    target = TARGETS.get("desktop")
    exporter = target.make_exporter()
    # a micro row loads and times in well under a second; each hung row waits the whole timeout
    protocol = Protocol(warmup_runs=2, warmup_ms=1.0, repeats=3, min_repeat_ms=0.5, row_timeout_s=2.0)
    job = BenchmarkJob(micro_space, exporter, runner_cls(threads=1), target.tolerance_for(exporter), protocol,
                       tmp_path / "t.json", tmp_path / "cache", {"target": "desktop", "device": "host"})
    table, measured = benchmark_space(job, progress=False)
    failed = [r for r in table.rows.values() if r.status == "failed"]
    ok = [r for r in table.rows.values() if r.status == "ok"]
    assert failed and all(r.shape.in_ch == 16 and reason in r.reason for r in failed)
    assert ok and all(r.shape.in_ch != 16 for r in ok)  # the rest went on, in a fresh worker
    assert len(load_table(tmp_path / "t.json").rows) == measured  # all on disk


class _RecordingLoads(OnnxRuntimeRunner):
    """Appends the loading process's pid to $LOADS_FILE for every load; a hang or crash on demand."""

    def load(self, artifact):
        with open(os.environ["LOADS_FILE"], "a") as f:
            f.write(f"{os.getpid()}\n")
        run = super().load(artifact)
        mode = os.environ.get("RUN_MODE", "")

        def maybe_broken(inputs):
            if mode:
                BREAKS[mode]()
            return run(inputs)

        return maybe_broken


def _two_artifacts(micro_space, tmp_path):
    from benchmarks.harness import export_row, row_module

    exporter = TARGETS.get("desktop").make_exporter()
    shapes = micro_space.layers[:2]
    return [(export_row(exporter, "k3_e1", s, tmp_path / "cache"), row_module("k3_e1", s)[1].numpy()) for s in shapes]


@pytest.mark.parametrize("in_child", [True, False])
def test_network_timer_loads_each_network_once_in_a_fresh_process(micro_space, tmp_path, monkeypatch, in_child):
    from benchmarks.isolate import NetworkTimer

    monkeypatch.setenv("LOADS_FILE", str(tmp_path / "loads"))
    protocol = Protocol(warmup_runs=2, warmup_ms=1.0, repeats=5, min_repeat_ms=0.5, row_timeout_s=60.0 if in_child else 0)
    with NetworkTimer(_RecordingLoads(threads=1), protocol) as timer:
        ids = [timer.load(a, [x]) for a, x in _two_artifacts(micro_space, tmp_path)]
        stats = [timer.stats(i) for _ in range(3) for i in ids]
    assert ids == [0, 1]
    assert all(s["median_ms"] > 0 and s["count"] == 5 for s in stats)
    pids = (tmp_path / "loads").read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 1  # loaded once each, timed three times
    assert (pids[0] != str(os.getpid())) == in_child


@pytest.mark.slow
@pytest.mark.parametrize("mode, message", [("hang", "no answer within 3 s, the runtime hung"),
                                           ("crash", "the runtime crashed (exit code 7)")])
def test_network_timer_names_the_network_a_runtime_hangs_or_crashes_on(micro_space, tmp_path, monkeypatch, mode, message):
    from benchmarks.isolate import NetworkTimer
    from core.errors import PipelineError

    monkeypatch.setenv("LOADS_FILE", str(tmp_path / "loads"))
    monkeypatch.setenv("RUN_MODE", mode)
    (artifact, x), _ = _two_artifacts(micro_space, tmp_path)
    with NetworkTimer(_RecordingLoads(threads=1), Protocol(row_timeout_s=3.0)) as timer:
        i = timer.load(artifact, [x])
        with pytest.raises(PipelineError) as e:
            timer.stats(i)
    assert str(e.value).startswith(f"timing {artifact.path}: {message}")
