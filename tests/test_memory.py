"""The search's memory check: the real estimator on real super-nets, with the memory available
stated (PIPELINE_MEMORY_AVAILABLE) instead of allocated, and the estimate of a small search
against the peak resident memory a real one reaches in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import PipelineError
from pipeline.training.data import digits_folder
from pipeline.training.memory import (
    MEMORY_ENV,
    GiB,
    Setting,
    available,
    check_memory,
    parse_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
# docs/search.md, "Memory": the estimate of what a search adds to its process, over the measured
# growth of its peak RSS, was 0.97-1.17 on the searches measured alone, and 0.75 and 0.67 inside
# fresh-clone test runs, where the allocator kept more; this allows that.
ACCURACY = (0.6, 1.3)


@pytest.fixture(scope="module")
def tiny():
    from blocks import resolve_space

    return resolve_space("tiny")


def test_sizes_parse_in_binary_units_and_nonsense_is_one_line():
    assert parse_bytes("12G") == 12 * 2**30 and parse_bytes("800M") == 800 * 2**20
    assert parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes("4096") == 4096
    with pytest.raises(PipelineError, match=r"PIPELINE_MEMORY_AVAILABLE='lots' is not an amount of memory; .* 'off'"):
        parse_bytes("lots")


def test_the_memory_available_is_the_stated_one_the_machine_s_or_none(monkeypatch):
    monkeypatch.setenv(MEMORY_ENV, "3G")
    assert available() == 3 * 2**30
    monkeypatch.setenv(MEMORY_ENV, "off")
    assert available() is None
    monkeypatch.delenv(MEMORY_ENV)
    machine = available()
    meminfo = int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024
    assert machine is not None and 0 < machine <= meminfo * 1.05


def test_a_search_that_fits_passes_and_one_that_does_not_is_refused_with_settings_that_fit(tiny, monkeypatch):
    big = Setting(tiny, 10, 48, 64, "softmax")
    monkeypatch.setenv(MEMORY_ENV, "1T")
    e = check_memory(big)
    assert e is not None and e.activations > 10 * e.weights  # activations dominate at 48x48, batch 64
    sampled = check_memory(Setting(tiny, 10, 48, 64, "sampled"))
    assert sampled.added < 0.7 * e.added
    room = (sampled.added + e.added) // 2
    monkeypatch.setenv(MEMORY_ENV, str(room))
    with pytest.raises(PipelineError) as refused:
        check_memory(big)
    line = str(refused.value)
    assert "\n" not in line
    assert re.match(r"search: batch 64 at 48x48 with softmax mixing needs about [\d.]+ GiB more memory at its peak "
                    r"\(estimated\), [\d.]+ GiB is available; these would fit: ", line), line
    assert line.endswith("(PIPELINE_MEMORY_AVAILABLE=off skips this check)")
    offered = dict(re.findall(r"--(resolution|batch-size|mixing) (\w+) \(about", line))
    assert set(offered) == {"resolution", "batch-size", "mixing"}, line
    fixes = {"resolution": Setting(tiny, 10, int(offered["resolution"]), 64, "softmax"),
             "batch-size": Setting(tiny, 10, 48, int(offered["batch-size"]), "softmax"),
             "mixing": Setting(tiny, 10, 48, 64, offered["mixing"])}
    for option, setting in fixes.items():  # each one offered fits on its own...
        assert check_memory(setting) is not None, option
    # ...and is the largest that does: one step further would not.
    for over in (Setting(tiny, 10, 48, int(offered["batch-size"]) + 1, "softmax"),):
        with pytest.raises(PipelineError, match="more memory at its peak"):
            check_memory(over)


def test_two_processes_need_twice_the_room(tiny, monkeypatch):
    one = Setting(tiny, 10, 32, 32, "softmax")
    monkeypatch.setenv(MEMORY_ENV, "1T")
    added = check_memory(one).added
    monkeypatch.setenv(MEMORY_ENV, str(int(added * 1.5)))
    assert check_memory(one) is not None
    with pytest.raises(PipelineError, match=r"needs about [\d.]+ GiB more"):
        check_memory(Setting(tiny, 10, 32, 32, "softmax", processes=2))


def test_the_cli_refuses_a_search_too_big_before_it_trains(tmp_path, micro_space_file, micro_table, monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import main

    table = tmp_path / "table.json"
    micro_table.save(table)
    monkeypatch.setenv(MEMORY_ENV, "20M")
    r = CliRunner().invoke(main, ["search", "--space", str(micro_space_file), "--table", str(table), "--out",
                                  str(tmp_path / "ws"), "--resolution", "64", "--epochs", "1", "-q"])
    assert r.exit_code != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: search: batch 64 at 64x64 with gumbel mixing"), r.stderr
    assert not list((tmp_path / "ws").rglob("*.pt"))  # refused before the first epoch's checkpoint


@pytest.mark.slow
def test_the_estimate_of_a_small_search_is_within_its_documented_accuracy_of_the_real_peak(tmp_path, tiny):
    from tests.conftest import make_table

    table = tmp_path / "table.json"
    make_table(tiny).save(table)
    data = digits_folder(tmp_path / "data", 8)
    env = {**os.environ, MEMORY_ENV: "1T"}  # estimate and log it, never refuse
    cmd = [sys.executable, "-m", "pipeline.cli", "-v", "search", "--space", "tiny", "--resolution", "64",
           "--batch-size", "32", "--epochs", "1", "--data", str(data), "--table", str(table),
           "--out", str(tmp_path / "ws")]  # not -q, which sends the log line to OUT/pipeline.log
    with (tmp_path / "log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    text = (tmp_path / "log").read_text()
    assert status == 0, text[-2000:]
    m = re.search(r"needs about ([\d.]+) GiB at its peak \(([\d.]+) GiB now\)", text)
    assert m, text[-2000:]
    estimate, before = float(m.group(1)) * GiB, float(m.group(2)) * GiB
    peak = usage.ru_maxrss * 1024
    low, high = ACCURACY
    assert low <= (estimate - before) / (peak - before) <= high, (estimate, before, peak)
    assert low <= estimate / peak <= high
