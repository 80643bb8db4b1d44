"""A block defined in a plugin file is exported in worker processes and timed in the timing
child: both load the plugin before they unpickle anything that names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.table import load_table
from tests.conftest import MICRO_SPACE

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''\
from torch import nn

from blocks import register_block


class Widened(nn.Module):
    """A plugin's own module class: workers must import this file to unpickle it."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


register_block("plain_k3", Widened, description="3x3 conv + ReLU, from a plugin")
'''


def test_a_plugin_block_is_exported_and_timed_in_child_processes(tmp_path):
    (tmp_path / "my_blocks.py").write_text(PLUGIN)
    (tmp_path / "micro.yaml").write_text(MICRO_SPACE.replace("blocks: [k3_e1, k3_e6, k5_e3, skip]",
                                                             "blocks: [k3_e1, plain_k3]"))
    cmd = [sys.executable, "-m", "pipeline.cli", "--plugin", str(tmp_path / "my_blocks.py"), "benchmark",
           "--target", "desktop", "--space", str(tmp_path / "micro.yaml"), "--out", str(tmp_path / "ws"),
           "--jobs", "2", "--repeats", "3", "--min-repeat-ms", "0.5", "-q"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    table = tmp_path / "ws" / "tables" / "micro" / "desktop" / "host.json"
    plugin_rows = [r for r in load_table(table).rows.values() if r.block == "plain_k3"]
    assert len(plugin_rows) == 3  # one per layer shape of the micro space
    assert all(r.status == "ok" and r.median_ms > 0 for r in plugin_rows), plugin_rows
