"""`pipeline benchmark` stopped from outside, as a user or a machine stops it: Ctrl-C to the whole
process group, as a terminal sends it, or SIGKILL to the command alone. Real processes, real
exports and timings; what is checked is what is left behind (the table, the cache, processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.table import load_table

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the kernel's parent-death signal")

ROOT = Path(__file__).resolve().parents[1]
# A SIGINT that is ignored stays ignored across exec, and a default one stays default: so reset it,
# then exec the CLI (a preexec_fn would do the same, but makes a threaded parent fork).
_DEFAULT_CTRL_C = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'pipeline.cli', *sys.argv[1:]])")


def _start(args: list[str], log: Path) -> subprocess.Popen:
    """`pipeline ARGS` as its own process group, with Ctrl-C at its default even where the suite
    runs as a background job (which ignores SIGINT)."""
    return subprocess.Popen([sys.executable, "-c", _DEFAULT_CTRL_C, *args], cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, what: str, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def _alive_in_group(pgid: int) -> list[str]:
    """The processes of group `pgid` still running (zombies, already dead, are not)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state != "Z":
            alive.append(text[:text.rindex(")") + 1])
    return alive


def _rows_on_disk(table: Path) -> int:
    try:
        return len(json.loads(table.read_text())["rows"])
    except (OSError, ValueError, KeyError):
        return 0


def test_a_killed_benchmark_keeps_its_rows_leaves_no_process_behind_and_resumes(micro_space_file, micro_space, tmp_path):
    from benchmarks.table import required_rows

    table = tmp_path / "table.json"
    args = ["benchmark", "--space", str(micro_space_file), "--out", str(tmp_path / "ws"), "--table", str(table),
            "--repeats", "5", "--min-repeat-ms", "20", "-q"]
    proc = _start(args, tmp_path / "first.log")
    _wait_for(lambda: _rows_on_disk(table) >= 2 or proc.poll() is not None, "the first rows on disk")
    proc.kill()  # SIGKILL: no handler, no finally; the timing child is left to the kernel
    proc.wait()
    _wait_for(lambda: not _alive_in_group(proc.pid), "the timing child to leave with its parent", 20.0)
    kept = len(load_table(table).rows)  # whole and valid, whatever moment the kill hit
    total = len(required_rows(micro_space))
    assert 2 <= kept < total, (kept, total)

    again = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f": {total} rows, {total - kept} measured now, " in again.stdout  # the rest: only what the kill left
    assert len(load_table(table).rows) == total


@pytest.mark.slow
def test_a_benchmark_killed_while_exporting_takes_its_export_workers_with_it(tmp_path):
    cache = tmp_path / "ws" / "cache" / "onnx"
    proc = _start(["benchmark", "--space", "fbnet", "--out", str(tmp_path / "ws"), "--jobs", "2", "-q"], tmp_path / "log")
    _wait_for(lambda: any(cache.glob("*.onnx")) or proc.poll() is not None, "the first export")
    proc.kill()
    proc.wait()
    # Orphaned workers would export the whole queue (FBNet: 100+ rows, a minute on 2 cores),
    # competing with whatever runs next, then wait forever for work.
    _wait_for(lambda: not _alive_in_group(proc.pid), "the export workers to leave with their parent", 20.0)
    assert len(list(cache.glob("*.onnx"))) < 20


@pytest.mark.slow
def test_ctrl_c_while_exporting_stops_at_once_without_a_traceback(tmp_path):
    ws = tmp_path / "ws"
    cache = ws / "cache" / "onnx"
    log = tmp_path / "log"
    proc = _start(["benchmark", "--space", "fbnet", "--out", str(ws), "--jobs", "2", "-q"], log)
    _wait_for(lambda: any(cache.glob("*.onnx")) or proc.poll() is not None, "the first export")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    out = log.read_text()
    assert "interrupted: everything finished so far is saved; run the same command to go on" in out
    assert "Traceback" not in out and "Warning" not in out, out
    # The queue was dropped: only the exports in flight were finished (FBNet has 100+ rows).
    # Leaving the pool's `with` block would finish every one of them first.
    assert len(list(cache.glob("*.onnx"))) < 20
    assert not list(cache.glob(".*.tmp*"))  # no half-written export left behind
    _wait_for(lambda: not _alive_in_group(proc.pid), "the export workers to leave", 20.0)


def test_ctrl_c_while_timing_saves_the_rows_so_far_without_a_traceback(micro_space_file, tmp_path):
    table = tmp_path / "table.json"
    log = tmp_path / "log"
    proc = _start(["benchmark", "--space", str(micro_space_file), "--out", str(tmp_path / "ws"), "--table", str(table),
                   "--repeats", "5", "--min-repeat-ms", "20", "-q"], log)
    _wait_for(lambda: _rows_on_disk(table) >= 1 or proc.poll() is not None, "the first row on disk")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(60) == 130
    out = log.read_text()
    assert "interrupted: everything finished so far is saved" in out
    assert "Traceback" not in out, out  # the timing child leaves Ctrl-C to its parent
    assert len(load_table(table).rows) >= 1
    _wait_for(lambda: not _alive_in_group(proc.pid), "the timing child to leave", 20.0)


def test_temporaries_a_killed_writer_left_are_swept_once_old(tmp_path):
    from core.fileio import sweep_temporaries

    # named as atomic_path and atomic_dir name them
    old_file = tmp_path / ".a.onnx.k2j3xq.tmp"
    old_file.write_text("half")
    old_dir = tmp_path / ".b.mlpackage.x8a1.tmp.mlpackage"
    (old_dir / "Data").mkdir(parents=True)
    (tmp_path / "a.onnx").write_text("whole")
    (tmp_path / ".c.onnx.abc.tmp").write_text("")  # another run's write in progress
    hour_ago = time.time() - 3601
    for p in (old_file, old_dir):
        os.utime(p, (hour_ago, hour_ago))
    assert sweep_temporaries(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.onnx.abc.tmp", "a.onnx"]
    assert sweep_temporaries(tmp_path / "missing") == 0
