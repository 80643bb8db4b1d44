"""Shared fixtures: a micro search space small enough for end-to-end runs in seconds."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MICRO_SPACE = """\
name: micro
resolution: 16
in_channels: 1
num_classes: 10
stem_channels: 8
stem_stride: 2
stages:
  - [8, 1, 1]
  - [16, 2, 2]
head_channels: 32
blocks: [k3_e1, k3_e6, k5_e3, skip]
"""


@pytest.fixture
def micro_space_file(tmp_path: Path) -> Path:
    p = tmp_path / "micro.yaml"
    p.write_text(MICRO_SPACE)
    return p


@pytest.fixture(scope="session")
def _micro_benchmarked(tmp_path_factory) -> Path:
    """The micro space benchmarked once on this machine (desktop, quick timing): a workspace that
    tests copy rather than measure again."""
    from click.testing import CliRunner

    from pipeline.cli import main

    root = tmp_path_factory.mktemp("micro-benchmarked")
    (root / "micro.yaml").write_text(MICRO_SPACE)
    r = CliRunner().invoke(main, ["benchmark", "--space", str(root / "micro.yaml"), "--out", str(root / "ws"), "-q",
                                  "--repeats", "3", "--min-repeat-ms", "0.5"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return root / "ws"


@pytest.fixture
def micro_workspace(_micro_benchmarked: Path, tmp_path: Path) -> Path:
    """tmp_path/ws: a copy of the workspace whose micro table was measured once for the session.
    Not for tests that judge the table against fresh timings (validate's staleness check): the
    machine's speed drifts between the two."""
    out = tmp_path / "ws"
    shutil.copytree(_micro_benchmarked, out)
    return out


@pytest.fixture
def micro_space(micro_space_file: Path):
    from blocks import resolve_space

    return resolve_space(str(micro_space_file))


def as_if_timed_faster(path: Path, factor: float) -> None:
    """Rewrite the table file at `path` as if its machine had been `factor` times as fast (its
    reference row too): a table that no longer describes this machine."""
    table = json.loads(path.read_text())
    for row in table["rows"]:
        if row["status"] == "ok":
            row["samples_ms"], row["reference_ms"] = ([v / factor for v in row[k]] for k in ("samples_ms", "reference_ms"))
            row["median_ms"] /= factor
    table["provenance"]["reference"]["median_ms"] /= factor
    path.write_text(json.dumps(table))


def make_table(space, latency_of=None, target="desktop", device="host"):
    """A hand-made table: block j in layer shape s costs latency_of(block, shape) ms."""
    from benchmarks.table import LatencyTable, Row, required_rows

    cost = latency_of or (lambda b, s: {"skip": 0.1, "k3_e1": 1.0, "k5_e3": 2.0, "k3_e6": 3.0}.get(b, 0.5))
    table = LatencyTable({"target": target, "device": device, "unit": "ms"})
    for block, shape in required_rows(space):
        table.add(Row(block, shape, "ok", float(cost(block, shape)), {"count": 3}))
    return table


@pytest.fixture
def micro_table(micro_space):
    return make_table(micro_space)


def run_script(path: Path, *args) -> subprocess.CompletedProcess:
    """`python PATH ARGS` for a perf/ script that only reads files and computes: run in this
    process, where torch is already imported (a fresh interpreter costs seconds of imports).
    Its exit code, stdout and stderr as a subprocess would give them; `sys.exit(message)` prints
    the message to stderr and exits 1, as Python does."""
    out, err, argv, path_before = io.StringIO(), io.StringIO(), sys.argv, list(sys.path)
    sys.argv, code = [str(path), *map(str, args)], 0
    sys.path.insert(0, str(Path(path).parent))  # as `python PATH` puts it first: a script imports its neighbours
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=err)
        code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    finally:
        sys.argv, sys.path[:] = argv, path_before
    return subprocess.CompletedProcess([str(path), *map(str, args)], code, out.getvalue(), err.getvalue())
