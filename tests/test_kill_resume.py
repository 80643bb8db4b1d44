"""Fault injection: `pipeline benchmark` (a local table and one timed through an agent) and
`pipeline search` killed with SIGKILL again and again, at seeded random moments while they
export, time, train and save, then resumed. What is checked is what a user keeps: a table that
parses after every kill, rows that do not change once written, and a search that ends bit for
bit where an uninterrupted one does.

A kill "in a save" is exact, not left to chance: the command runs under a launcher that sends
its own process SIGKILL inside the Nth write of the file, after the new content is written
beside it and before it replaces the old one (KILL_IN_SAVE=N, KILL_SAVE_NAME=file name)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.training.data import digits_folder
from tests.conftest import MICRO_SPACE, make_table
from tests.test_search_run import _final, _same

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL; reads /proc")

ROOT = Path(__file__).resolve().parents[1]

# A block whose training draws from every global generator a plugin might use: torch's (dropout),
# numpy's and Python's. A resumed search matches an uninterrupted one only if the checkpoint
# restores all three.
NOISY_PLUGIN = '''\
import random

import numpy as np
import torch
from torch import nn

from blocks import register_block


class Noisy(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        y = self.drop(torch.relu(self.conv(x)))
        if self.training:
            y = y * (1.0 + 0.1 * float(np.random.standard_normal())) + 0.01 * random.random()
        return y


register_block("noisy_k3", Noisy, description="3x3 conv, dropout and noise from numpy and random")
'''
NOISY_SPACE = MICRO_SPACE.replace("name: micro", "name: noisy").replace(
    "blocks: [k3_e1, k3_e6, k5_e3, skip]", "blocks: [k3_e1, noisy_k3, skip]")


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """The plugin (loaded here once) and its space's file."""
    from blocks import resolve_space
    from core.plugins import load_plugin

    folder = tmp_path_factory.mktemp("noisy")
    (folder / "noisy_blocks.py").write_text(NOISY_PLUGIN)
    (folder / "noisy.yaml").write_text(NOISY_SPACE)
    load_plugin(str(folder / "noisy_blocks.py"))
    return folder / "noisy_blocks.py", folder / "noisy.yaml", resolve_space(str(folder / "noisy.yaml"))


# ---------------------------------------------------------------------------- in one process
@pytest.fixture(scope="module")
def small_splits():
    """A fifth of the digits: 4 W steps and 1 Θ step an epoch at batch 64."""
    from dataclasses import replace

    from torch.utils.data import Subset

    from pipeline.training.data import load_data

    s = load_data("digits", 16, 1)
    return replace(s, w=Subset(s.w, range(230)), theta=Subset(s.theta, range(58)), test=Subset(s.test, range(72)))


@pytest.mark.parametrize("mixing", ["softmax", "gumbel", "sampled"])
def test_a_search_whose_blocks_draw_from_global_generators_resumes_bit_for_bit(noisy, small_splits, tmp_path,
                                                                               monkeypatch, mixing):
    from benchmarks.predict import LatencyModel
    from pipeline.training import search as search_mod
    from pipeline.training.search import SearchConfig, run_search

    _, _, space = noisy
    latency = LatencyModel.from_table(make_table(space), space)
    splits = small_splits
    cfg = SearchConfig(epochs=3, warmup_epochs=1, mixing=mixing, loss="add", lam=0.5)
    whole = run_search(space, latency, splits, cfg, progress=False)

    original, steps = search_mod._Searcher.w_step, []

    def dies(self, x, y, where):  # killed mid-epoch: nothing is saved on the way out
        steps.append(where)
        if len(steps) == 6:  # epoch 2's second
            raise SystemExit(137)
        return original(self, x, y, where)

    monkeypatch.setattr(search_mod._Searcher, "w_step", dies)
    ck = tmp_path / "k.pt"
    with pytest.raises(SystemExit):
        run_search(space, latency, splits, cfg, progress=False, checkpoint=ck)
    monkeypatch.setattr(search_mod._Searcher, "w_step", original)
    assert torch.load(ck, weights_only=True)["position"]["epoch"] == 1
    # A fresh interpreter would start from other global states: so must this one.
    torch.manual_seed(12345)
    np.random.seed(12345)
    random.seed(12345)
    resumed = run_search(space, latency, splits, cfg, progress=False, checkpoint=ck, resume=True)
    _same(_final(whole), _final(resumed))
    assert resumed.history == whole.history


# ---------------------------------------------------------------------------- real processes, SIGKILL
# The CLI under a launcher that can SIGKILL its own process inside the Nth replacement of a file
# named KILL_SAVE_NAME: the new content written beside it, the old one not yet replaced.
_LAUNCH = """\
import os, runpy, signal, sys
n, name, me = int(os.environ.get("KILL_IN_SAVE", "0")), os.environ.get("KILL_SAVE_NAME", ""), os.getpid()
if n:
    real, seen = os.replace, [0]
    def replace(src, dst, *args, **kwargs):
        if os.getpid() == me and os.path.basename(os.fspath(dst)) == name:
            seen[0] += 1
            if seen[0] == n:
                os.kill(me, signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    os.replace = replace
sys.argv = ["pipeline", *sys.argv[1:]]
runpy.run_module("pipeline.cli", run_name="__main__", alter_sys=True)
"""
KILLS = 10
WAIT_S = 180.0  # for any one sign of progress, on a slow shared machine


def _start(args: list, log: Path, kill_in_save: int = 0, save_name: str = "") -> subprocess.Popen:
    env = {**os.environ, "KILL_IN_SAVE": str(kill_in_save), "KILL_SAVE_NAME": save_name}
    return subprocess.Popen([sys.executable, "-c", _LAUNCH, *map(str, args)], cwd=ROOT, env=env,
                            stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(condition, proc: subprocess.Popen, what: str, log: Path) -> bool:
    """True once `condition` holds; False if the process ended first (it finished, or killed itself)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}: {log.read_text()[-2000:]}")
        time.sleep(0.02)
    return True


def _sleep_unless(condition, seconds: float) -> None:
    """Sleep `seconds`, or less if `condition` comes true first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL to the whole process group (export workers, the timing child), then reap."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def _more(count, than: int) -> bool:
    return count() > than


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _changed(path: Path, mtime: int) -> bool:
    return _mtime(path) != mtime


def _rows(table: Path) -> dict[str, dict]:
    """The rows on disk by key; the file must parse (and check) whenever it exists."""
    from benchmarks.table import load_table

    if not table.exists():
        return {}
    load_table(table)
    return {r["key"]: r for r in json.loads(table.read_text())["rows"]}


def _kill_benchmark_repeatedly(args: list, table: Path, cache: Path, tmp: Path, seed: int) -> dict[str, dict]:
    """Run `pipeline ARGS` KILLS times, each killed at a seeded random moment once it is working:
    the first runs while they export, the rest while they time (a new row is on disk, then a
    random part of a row's time later) or inside a save of the table. Returns each row as it
    was first seen on disk after a kill."""
    rng, seen, log = random.Random(seed), {}, tmp / "killed.log"
    for i in range(KILLS):
        before, artifacts = _rows(table), len(list(cache.glob("*.onnx")))
        kind = "export" if i < 2 else rng.choice(["time", "time", "save"])
        if kind == "save":
            proc = _start(args, log, rng.randint(1, 3), table.name)
            proc.wait(WAIT_S)
        else:
            proc = _start(args, log)
            if kind == "export":
                progress = partial(_more, lambda: len(list(cache.glob("*.onnx"))), artifacts)
            else:
                progress = partial(_more, lambda: len(_rows(table)), len(before))
            if _wait_for(progress, proc, f"kill {i + 1}'s first {kind}", log):
                time.sleep(rng.uniform(0.0, 0.1))  # a row or two: ten kills must land before the last row
            _kill(proc)
        assert proc.returncode != 0, f"run {i + 1} finished before its kill ({kind}): too few rows to kill {KILLS} times"
        for key, row in _rows(table).items():
            seen.setdefault(key, row)
    return seen



# 21 rows (6 candidates in 3 layer shapes, and 3 fixed parts): more than ten kills can finish.
WIDER_SPACE = MICRO_SPACE.replace("name: micro", "name: wider").replace(
    "blocks: [k3_e1, k3_e6, k5_e3, skip]", "blocks: [k3_e1, k3_e3, k3_e6, k5_e1, k5_e3, skip]")
# Statistics the table puts on the scale of its reference row's median over every row: they
# follow that median as rows are added (benchmarks.table.LatencyTable.apply_reference).
RESCALED = ("median_ms", "p10_ms", "p90_ms", "iqr_ms", "mean_ms")
# What the table says of a row from the other rows (benchmarks.harness.flag_implausible): a
# judgement that may change as rows are added, not the row's measurement.
JUDGED = ("implausible",)


def _measured(row: dict, rescaled: tuple[str, ...]) -> str:
    return json.dumps({k: v for k, v in row.items() if k not in rescaled + JUDGED})


def _check_resumed_table(table: Path, space_file: Path, seen: dict[str, dict], rescaled: tuple[str, ...]) -> None:
    """Every row the space needs, measured ('ok'), once; every row on disk before a kill unchanged
    (in order, byte for byte) but for what the table rescales (which load_table checks against
    the row's own ratio) and its judgement of the row, unless the table re-timed it for
    contradicting other rows, which it records in the row ('retimed')."""
    from benchmarks.table import load_table, required_rows, row_key
    from blocks import resolve_space

    final = _rows(table)
    assert sorted(final) == sorted(row_key(b, s) for b, s in required_rows(resolve_space(str(space_file))))
    assert all(r.status == "ok" for r in load_table(table).rows.values())
    kept = {k: row for k, row in seen.items() if "retimed" not in final[k]}
    assert len(kept) >= 3, f"{len(seen)} rows on disk after the kills, {len(seen) - len(kept)} re-timed since"
    changed = {k: (_measured(row, rescaled), _measured(final[k], rescaled)) for k, row in kept.items()
               if _measured(row, rescaled) != _measured(final[k], rescaled)}
    assert not changed, changed


@pytest.mark.slow
def test_a_benchmark_killed_ten_times_while_exporting_timing_and_saving_keeps_every_row(tmp_path):
    space_file = tmp_path / "wider.yaml"
    space_file.write_text(WIDER_SPACE)
    table, ws = tmp_path / "table.json", tmp_path / "ws"
    args = ["benchmark", "--space", space_file, "--out", ws, "--table", table, "--repeats", "3",
            "--min-repeat-ms", "1", "--jobs", "2", "-q"]
    seen = _kill_benchmark_repeatedly(args, table, ws / "cache" / "onnx", tmp_path, seed=23)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_resumed_table(table, space_file, seen, RESCALED)


@pytest.mark.slow
def test_a_benchmark_through_an_agent_killed_ten_times_keeps_every_row_byte_for_byte(tmp_path):
    from tests.agent_server import running_agent

    space_file = tmp_path / "wider.yaml"
    space_file.write_text(WIDER_SPACE)
    table, ws = tmp_path / "table.json", tmp_path / "ws"
    with running_agent(tmp_path / "agent") as agent:
        # Without a reference row nothing is rescaled: a row once written stays byte for byte.
        args = ["benchmark", "--space", space_file, "--out", ws, "--table", table, "--remote", agent.url,
                "--token-file", agent.token_file, "--repeats", "3", "--min-repeat-ms", "1", "--no-reference",
                "--jobs", "2", "-q"]
        seen = _kill_benchmark_repeatedly(args, table, ws / "cache" / "onnx", tmp_path, seed=24)
        done = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
    _check_resumed_table(table, space_file, seen, ())  # byte for byte, but for a judgement of the row


def _search_result(out: Path) -> tuple[dict, dict]:
    arch = json.loads((out / "architecture.json").read_text())
    net = torch.load(out / "architecture.checkpoint.pt", weights_only=True)["net"]
    return arch, net


@pytest.mark.slow
def test_a_search_killed_ten_times_anywhere_resumes_to_the_uninterrupted_result_bit_for_bit(noisy, tmp_path):
    plugin, space_file, space = noisy
    table = tmp_path / "table.json"
    make_table(space).save(table)
    data = digits_folder(tmp_path / "data", 10)  # 64 W images, 16 Θ: 4 W steps and 1 Θ step an epoch
    # More than ten kills can finish: a run is killed within 3 saves of its start (within 1 if in a save)
    epochs = 36
    # The kills are timed by epochs, and a W-only epoch takes a fraction of one with Θ's pass: the
    # warm-up is fixed here, not left to the default recipe, so that most epochs have both.
    warmup = 9

    def args(ws: Path) -> list:
        return ["--plugin", plugin, "search", "--space", space_file, "--table", table, "--data", data,
                "--epochs", epochs, "--warmup-epochs", warmup, "--batch-size", 16, "--out", ws, "-q"]

    whole = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args(tmp_path / "a"))], cwd=ROOT,
                           capture_output=True, text=True, timeout=600, check=False)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "b" / "search" / "noisy" / "desktop" / "host"
    ck, log, rng, epoch = out / "architecture.checkpoint.pt", tmp_path / "killed.log", random.Random(2026), 0
    for i in range(KILLS):
        resume = ["--resume"] if ck.exists() else []
        if i > 0 and rng.random() < 0.3:  # inside the Nth save of the checkpoint
            proc = _start(args(tmp_path / "b") + resume, log, rng.randint(1, 2), ck.name)
            proc.wait(WAIT_S)
        else:  # once it has saved an epoch (so it is training), a random part of an epoch later
            proc = _start(args(tmp_path / "b") + resume, log)
            if _wait_for(partial(_changed, ck, _mtime(ck)), proc, f"kill {i + 1}'s first epoch", log):
                saved = time.monotonic()
                if _wait_for(partial(_changed, ck, _mtime(ck)), proc, f"kill {i + 1}'s second epoch", log):
                    # a random part of an epoch, cut short by the next save: a slow moment of the
                    # machine stretches the wait, not the epochs a run gets through
                    _sleep_unless(partial(_changed, ck, _mtime(ck)), rng.uniform(0.0, time.monotonic() - saved))
            _kill(proc)
        assert proc.returncode != 0, f"run {i + 1} finished before its kill"
        now = torch.load(ck, weights_only=True)["position"]["epoch"]  # whole, whatever the kill hit
        assert now >= epoch
        epoch = now
    assert epoch < epochs
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args(tmp_path / "b") + ["--resume"])],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (a, net_a), (b, net_b) = _search_result(tmp_path / "a" / "search" / "noisy" / "desktop" / "host"), _search_result(out)
    assert a["blocks"] == b["blocks"] and a["alpha"] == b["alpha"] and a["history"] == b["history"]
    assert net_a.keys() == net_b.keys() and all(torch.equal(net_a[k], net_b[k]) for k in net_a)  # θ and W
