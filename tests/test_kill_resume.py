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
from pathlib import Path

import numpy as np
import pytest
import torch

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
