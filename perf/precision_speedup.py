"""What int8 buys on each local target: per block kind on `fbnet`, and on a derived network.

    python perf/precision_speedup.py --target desktop --target android --target android-executorch --out DIR

For each target T it builds the `fbnet` tables of T and of T at int8 into DIR/fbnet (rows are
cached, so a rerun costs only what changed) and prints each block kind's speed-up: its fp32
row's time over its int8 row's, median over the layer shapes it has (as `pipeline compare`
prints it for two such tables).

Then it runs `pipeline run --target T-int8` on the embedded default into DIR/run-T. That run's
export calibrates the derived network on the training data and checks it on the held-out split:
the script prints its top-1 agreement and accuracy change. It exports the same architecture at
fp32 and times the two artifacts against each other, repeat by repeat (`NetworkTimer.stats`
with `against`): the ratio is the derived network's int8 speed-up at the same moment of the
machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.isolate import NetworkTimer  # noqa: E402
from benchmarks.protocol import Protocol  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from benchmarks.targets import resolve_target  # noqa: E402
from blocks.space import resolve_space  # noqa: E402
from export.base import Artifact  # noqa: E402
from pipeline.stages.compare.report import _speedups  # noqa: E402


def pipeline(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pipeline {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def block_speedups(target: str, out: Path) -> list[tuple[str, float, int]]:
    for t in (target, f"{target}-int8"):
        pipeline("benchmark", "--target", t, "--space", "fbnet", "--out", str(out), "-q")
    fp32, int8 = (load_table(out / "tables/fbnet" / t / "host.json") for t in (target, f"{target}-int8"))
    return list(_speedups(fp32, int8, resolve_space("fbnet")))


def derived(target: str, out: Path) -> dict[str, float]:
    """`run` at int8, its quantized check, and its artifact timed against the fp32 export."""
    quantized = f"{target}-int8"
    if not (out / "run.json").exists():
        (out / "run.json").write_text(pipeline("run", "--target", quantized, "--out", str(out), "--json"))
    export = json.loads((out / "run.json").read_text())["export"]
    arch = out / "search/tiny" / quantized / "host/architecture.json"
    fp32 = json.loads(pipeline("export", "--target", target, "--arch", str(arch), "--out", str(out), "--json"))
    q, f = resolve_target(quantized), resolve_target(target)
    space = resolve_space("tiny")
    x = np.random.default_rng(0).standard_normal((1, space.in_channels, space.resolution, space.resolution))
    x = x.astype(np.float32)
    with NetworkTimer(f.make_runner(1), Protocol()) as timer:
        a = timer.load(Artifact(Path(export["model"]), export["format"], q.exporter, (x.shape,)), [x])
        b = timer.load(Artifact(Path(fp32["model"]), fp32["format"], f.exporter, (x.shape,)), [x])
        ratio = float(timer.stats(b, a)["ratio"])  # fp32's time over int8's, repeat by repeat
    check = export["quantized_check"]
    return {"speedup": ratio, "agreement": check["agreement"], "accuracy_change": check["accuracy_change"],
            "float_accuracy": check["float_accuracy"], "sqnr_db": check["sqnr_db"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", help="local float target(s) [desktop]")
    ap.add_argument("--out", type=Path, required=True, help="a folder for the tables and runs (reused by a rerun)")
    opts = ap.parse_args()
    for target in opts.target or ["desktop"]:
        gains = block_speedups(target, opts.out / "fbnet")
        print(f"{target}: int8 over fp32 per fbnet block (time ratio, median over its shapes)")
        for block, x, n in gains:
            print(f"  {block:<10} {x:5.2f}x  ({n} shapes)")
        d = derived(target, opts.out / f"run-{target}")
        print(f"{target}: derived network (tiny, digits): int8 {d['speedup']:.2f}x as fast as fp32; top-1 agreement "
              f"{d['agreement']:.1%}, accuracy {d['float_accuracy']:.3f} {d['accuracy_change'] * 100:+.1f} points, "
              f"SQNR {d['sqnr_db']:.1f} dB")


if __name__ == "__main__":
    main()
