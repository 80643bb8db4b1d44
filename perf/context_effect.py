"""Blocks timed alone or in context: which table predicts whole networks better?

    python perf/context_effect.py OUT [--space fbnet] [--target desktop] [--context-repeats 45] [--splits 40]

Builds both tables of the space in the workspace OUT (`pipeline benchmark`, then `pipeline
benchmark --timing in-context`), times the same held-out networks with `pipeline validate`
against each (same --seed, so the same 40 networks; the in-context run with --no-recheck, whose
rows timed alone would not match in-context rows), and judges both tables on both runs'
measurements: the median absolute error of the plain table sum and of the calibration fitted on
the run's fitting half, on its held-out half, and the calibrated error's mean over `--splits`
random half/half splits. Prints the wall time of each step. `--reuse` keeps the tables and
validate runs OUT already holds and only judges them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.context import context_table_path  # noqa: E402
from benchmarks.predict import LatencyModel  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from blocks.space import resolve_space  # noqa: E402
from core.workspace import Workspace  # noqa: E402
from rounds_effect import held_out, split_misses  # noqa: E402


def step(label: str, args: list[str], done: Path, reuse: bool) -> None:
    """Run `pipeline ARGS` unless `reuse` and `done` exists; print its wall time."""
    if reuse and done.exists():
        print(f"{label}: kept {done}")
        return
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline.cli", *args], check=True, stdout=subprocess.DEVNULL)
    print(f"{label}: {time.perf_counter() - start:.0f} s")


def judge(run: Path, table: Path, space_name: str, splits: int) -> dict[str, float]:
    """Held-out median errors (%) of `table` on the networks validate.json `run` measured."""
    report = json.loads(run.read_text())
    space, samples = resolve_space(space_name), report["samples"]
    plain = LatencyModel.from_table(load_table(table), space, calibrated=False)
    archs, measured = [tuple(s["blocks"]) for s in samples], [float(s["measured_ms"]) for s in samples]
    fit = [i for i, s in enumerate(samples) if s["fitted"]]
    held = [i for i, s in enumerate(samples) if not s["fitted"]]
    m = held_out(plain, space, archs, measured, fit, held)
    pool = [i for i, s in enumerate(samples) if s["origin"] == "random"]
    mean, _ = split_misses(plain, space, archs, measured, pool, splits, 0) if splits else (float("nan"), 0.0)
    return {"sum": m["table sum"]["median_abs_err_pct"], "calibrated": m["calibrated"]["median_abs_err_pct"],
            "splits": mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="workspace folder (pipeline --out)")
    ap.add_argument("--space", default="fbnet")
    ap.add_argument("--target", default="desktop")
    ap.add_argument("--context-repeats", type=int, default=45, help="--repeats of the in-context table [45]")
    ap.add_argument("--splits", type=int, default=40, help="random half/half splits to refit on [40]; 0: none")
    ap.add_argument("--reuse", action="store_true", help="keep the tables and validate runs OUT holds")
    o = ap.parse_args()
    common = ["--space", o.space, "--target", o.target, "--out", str(o.out), "-q"]
    isolated = Workspace(o.out).table(resolve_space(o.space).name, o.target, "host")
    in_context = context_table_path(isolated)
    runs = o.out / "context-effect"
    runs.mkdir(parents=True, exist_ok=True)
    validated = o.out / "validate" / resolve_space(o.space).name / o.target / "host" / "validate.json"
    step("isolated table", ["benchmark", *common], isolated, o.reuse)
    step("in-context table", ["benchmark", *common, "--timing", "in-context", "--repeats", str(o.context_repeats)],
         in_context, o.reuse)
    for name, table, extra in (("isolated", isolated, []), ("in-context", in_context, ["--no-recheck"])):
        done = runs / f"validate-{name}.json"
        args = ["validate", *common, "--fit", "--table", str(table), *extra]
        step(f"validate against the {name} table", args, done, o.reuse)
        if not (o.reuse and done.exists()):
            shutil.copy(validated, done)
    print(f"\n{'networks timed by':<28} {'table':<11} {'table sum %':>12} {'calibrated %':>13} "
          f"{f'calibrated, mean of {o.splits} splits %':>34}")
    for run in ("isolated", "in-context"):
        for name, table in (("isolated", isolated), ("in-context", in_context)):
            e = judge(runs / f"validate-{run}.json", table, o.space, o.splits)
            print(f"{'validate --table ' + run:<28} {name:<11} {e['sum']:12.1f} {e['calibrated']:13.2f} "
                  f"{e['splits']:34.2f}")


if __name__ == "__main__":
    main()
