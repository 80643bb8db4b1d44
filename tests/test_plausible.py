"""Rows that contradict the table: the check on constructed tables, re-timing through the real
harness and CLI, the flag in the grid, and `-q`'s one line."""

import json
import os
import subprocess
import sys

import pytest

from benchmarks.plausible import (CONTRADICTION_TOLERANCE, TREND_FACTOR, block_config, implausible_rows,
                                  multiply_adds, strictly_larger)
from benchmarks.table import LatencyTable, Row, load_table
from blocks.space import LayerShape
from tests.conftest import make_table

SHAPE = LayerShape(16, 16, 1, 28, 28)
FBNET = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


def _table(ms: dict[str, float], shape: LayerShape = SHAPE) -> LatencyTable:
    table = LatencyTable({"target": "desktop", "device": "host"})
    for block, value in ms.items():
        table.add(Row(block, shape, "ok", value, {"count": 3}))
    return table


def _on_trend(blocks=FBNET, shape: LayerShape = SHAPE) -> dict[str, float]:
    """Each block's time on a smooth trend of its multiply-adds (grouped blocks 40% above it, as
    XNNPACK and ONNX Runtime time them); an identity a fixed small time."""
    return {b: 0.05 if not multiply_adds(b, shape) else
            (multiply_adds(b, shape) / 1e6) ** 0.7 * (1.4 if b.endswith("_g2") else 1.0) for b in blocks}


def test_larger_comes_from_the_blocks_own_config():
    k3e1, k3e6, k5e1 = (block_config(b, SHAPE) for b in ("k3_e1", "k3_e6", "k5_e1"))
    assert k3e1 == {"type": "fbnet", "in_ch": 16, "out_ch": 16, "stride": 1, "kernel": 3, "expansion": 1, "groups": 1}
    assert strictly_larger(k3e1, k3e6) and strictly_larger(k3e1, k5e1) and not strictly_larger(k3e6, k3e1)
    assert not strictly_larger(k3e6, k5e1) and not strictly_larger(k5e1, k3e6)  # one larger, the other smaller
    assert not strictly_larger(block_config("k3_e1_g2", SHAPE), k3e6)  # grouped and ungrouped: never compared
    assert block_config("skip", SHAPE) == {"type": "skip", "in_ch": 16, "out_ch": 16, "stride": 1}
    assert not strictly_larger(block_config("skip", SHAPE), k3e1) and block_config("noop_1", SHAPE) is None
    # the proxyless space's MBConv blocks: squeeze-excite or not is another block, not a larger one
    mb = LayerShape(16, 24, 2, 56, 56)
    assert strictly_larger(block_config("mb_k3_e3", mb), block_config("mb_k7_e3", mb))
    assert multiply_adds("k3_e6", SHAPE) > 5 * multiply_adds("k3_e1", SHAPE) > 0 == multiply_adds("skip", SHAPE)


def test_an_honest_table_has_no_implausible_row():
    assert implausible_rows(_table(_on_trend())) == {}


def test_a_smaller_block_slower_than_a_larger_one_beyond_the_tolerance_contradicts_it():
    ms = _on_trend()
    just_within = {**ms, "k3_e6": ms["k5_e6"] * (1 + CONTRADICTION_TOLERANCE) * 0.98}
    assert implausible_rows(_table(just_within)) == {}  # noise between two close blocks is no contradiction
    # the row: k3_e6 at 32.97 ms beside k5_e6 at 14.73 ms
    found = implausible_rows(_table({**ms, "k3_e6": ms["k5_e6"] * 32.97 / 14.73}))
    assert list(found) == [f"k3_e6/{SHAPE.key}"]
    assert found[f"k3_e6/{SHAPE.key}"].partners == (f"k5_e6/{SHAPE.key}",)
    assert found[f"k3_e6/{SHAPE.key}"].reason == "2.24x slower than the larger k5_e6"


def test_grouped_blocks_slower_than_larger_ungrouped_ones_are_not_contradictions():
    # four blocks at the shape: too few for a trend, so only the comparison can find anything
    ms = _on_trend(("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6"))
    grouped = {**ms, "k3_e1_g2": ms["k3_e3"] * 3}  # slower than k3_e3, but grouped: real on XNNPACK
    assert implausible_rows(_table(grouped)) == {}
    ungrouped = {**ms, "k3_e1": ms["k3_e3"] * 3}  # the same slowness ungrouped contradicts both larger blocks
    found = implausible_rows(_table(ungrouped))
    assert set(found) == {f"k3_e1/{SHAPE.key}"}
    assert found[f"k3_e1/{SHAPE.key}"].partners == (f"k3_e3/{SHAPE.key}", f"k3_e6/{SHAPE.key}")


def test_a_row_far_off_its_shapes_trend_is_found_and_no_other_with_it():
    ms = _on_trend()
    # the largest block 4x too slow: no larger block to contradict, so only the trend finds it
    found = implausible_rows(_table({**ms, "k5_e6": ms["k5_e6"] * 4}))
    assert list(found) == [f"k5_e6/{SHAPE.key}"] and "its shape's trend" in found[f"k5_e6/{SHAPE.key}"].reason
    assert implausible_rows(_table({**ms, "k5_e6": ms["k5_e6"] * TREND_FACTOR * 0.9})) == {}
    too_fast = implausible_rows(_table({**ms, "k3_e3": ms["k3_e3"] / 5}))
    # too fast for its trend, and so faster than k3_e1, a smaller block: re-timed beside it
    assert "its shape's trend" in too_fast[f"k3_e3/{SHAPE.key}"].reason
    assert set(too_fast) == {f"k3_e3/{SHAPE.key}", f"k3_e1/{SHAPE.key}"}
    assert too_fast[f"k3_e1/{SHAPE.key}"].partners == (f"k3_e3/{SHAPE.key}",)
    # an identity takes no multiply-adds: it is on no trend, however long it takes
    assert implausible_rows(_table({**ms, "skip": 100.0})) == {}
    # under four other rows with multiply-adds at a shape, there is no trend to be off
    assert implausible_rows(_table({b: ms[b] for b in ("k3_e1", "k3_e3", "k5_e3")} | {"k5_e6": 100.0})) == {}


def test_a_row_that_keeps_contradicting_is_retimed_with_its_partner_then_flagged_and_shown(micro_space, tmp_path):
    """A deterministic stand-in for the runner times k3_e1 slower than k3_e6 every time: both are
    re-timed, interleaved, the table is whole on disk after every measurement, and the row is
    flagged, in the file and in the printed grid."""
    from benchmarks.harness import RETIME_ROUNDS, BenchmarkJob, flag_implausible, retime_implausible
    from benchmarks.protocol import Protocol
    from pipeline.render import benchmark_summary, benchmark_text
    from pipeline.stages.benchmark import BenchmarkReport

    shape = micro_space.layers[1]
    small, big = f"k3_e1/{shape.key}", f"k3_e6/{shape.key}"
    stand_in = {"k3_e1": 3.0, "k3_e6": 1.0}

    def row(block: str) -> Row:
        ms = stand_in[block]
        return Row(block, shape, "ok", ms, {"samples_ms": [ms * 0.9, ms, ms * 1.1], "count": 3})

    # every other row of the micro space as make_table has it: none contradicts another
    table = make_table(micro_space)
    for b in stand_in:
        table.add(row(b))
    order = []

    def measure(block: str, shape_: LayerShape, artifact: object) -> Row:
        order.append(block)
        assert set(load_table(tmp_path / "t.json").rows) == set(table.rows)  # whole on disk at every moment
        return row(block)

    job = BenchmarkJob(space=None, exporter=None, runner=None, tolerance=None, protocol=Protocol(),
                       table_path=tmp_path / "t.json", cache_dir=tmp_path)
    table.save(job.table_path)
    retime_implausible(job, table, {small: object(), big: object()}, measure, disable=True)
    assert order == ["k3_e6", "k3_e1", "k3_e1", "k3_e6", "k3_e6", "k3_e1"][:2 * RETIME_ROUNDS]
    assert table.retimed == [small, big] and table.rows[small].stats["rounds"] == RETIME_ROUNDS + 1
    assert table.rows[small].stats["retimed"] == "3.00x slower than the larger k3_e6"
    assert table.rows[big].stats["retimed"] == f"beside {small}"
    flag_implausible(table)
    table.save(job.table_path)
    again = load_table(job.table_path)  # the flag is a row statistic the file accepts
    assert again.rows[small].stats["implausible"] == "3.00x slower than the larger k3_e6"
    assert "implausible" not in again.rows[big].stats and again.latency("k3_e1", shape) == 3.0  # search uses it

    report = BenchmarkReport(table, job.table_path, 0)
    text = benchmark_text(report, micro_space)
    grid_row = next(line for line in text.splitlines() if line.startswith("1 ") and shape.key in line)
    assert "3.0000!" in grid_row and "1.0000" in grid_row and "1.0000!" not in grid_row
    assert f"! implausible: contradicts the table even re-timed ({small}: 3.00x slower" in text
    assert benchmark_summary(report) == (f"table {job.table_path}: 15 rows, 0 measured now, 2 re-timed, 1 implausible "
                                         f"(k3_e1@{shape.in_ch}x{shape.height}x{shape.width}), 0 wide")


def _pipeline(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PIPELINE_TIMING_LOCK": str(cwd / "lock")})


@pytest.mark.slow
def test_quiet_benchmark_is_one_line_and_a_resumed_row_30x_off_is_retimed_back(micro_space_file, tmp_path):
    """`benchmark -q` prints one line (stdout and stderr together, export workers included),
    fresh and resumed; a row of the resumed table edited to 30x its value (its samples too, so
    that the file still checks) contradicts the table, is re-timed beside the row it
    contradicts, and comes back."""
    args = ["benchmark", "--space", micro_space_file, "--out", tmp_path / "ws", "-q", "--repeats", "5",
            "--min-repeat-ms", "0.5", "--row-timeout", "0"]
    fresh = _pipeline(*args, cwd=tmp_path)
    assert fresh.returncode == 0 and fresh.stderr == "", fresh.stderr
    path = tmp_path / "ws/tables/micro/desktop/host.json"
    assert fresh.stdout.splitlines() == [fresh.stdout.strip()] and fresh.stdout.startswith(f"table {path}: 15 rows, "
                                                                                           "15 measured now, ")
    data = json.loads(path.read_text())
    shape = LayerShape(8, 16, 2, 8, 8)
    small = f"k3_e1/{shape.key}"
    before = {d["key"]: d["ratio"] for d in data["rows"]}
    for d in data["rows"]:
        if d["key"] == small:
            d.update(samples_ms=[v * 30 for v in d["samples_ms"]], ratio=d["ratio"] * 30, median_ms=d["median_ms"] * 30)
    path.write_text(json.dumps(data))
    assert small in implausible_rows(load_table(path))

    resumed = _pipeline(*args, cwd=tmp_path)
    assert resumed.returncode == 0 and resumed.stderr == "", resumed.stderr
    assert resumed.stdout.splitlines() == [f"table {path}: 15 rows, 0 measured now, 2 re-timed, 0 implausible, "
                                           + resumed.stdout.split(", 0 implausible, ")[1].strip()]
    table = load_table(path)
    row = table.rows[small]
    assert row.stats["retimed"].endswith("slower than the larger k3_e6") and row.stats["rounds"] == 4
    assert row.stats["ratio"] < before[small] * 3  # back near what it was measured at, not 30x
    assert "retimed" in table.rows[f"k3_e6/{shape.key}"].stats and not implausible_rows(table)
