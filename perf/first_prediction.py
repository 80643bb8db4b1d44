"""The first prediction a user sees: `pipeline run`'s, against its own measurement.

    python perf/first_prediction.py --target desktop --runs 3 --out /tmp/first-prediction

Runs `pipeline run --target T` (the quick start, with its calibration stage) `--runs` times,
each into a fresh workspace, and reads the line it ends with: the derived network's
prediction, the model that made it, and its error against the end-to-end measurement.

It also measures the alternative to a calibration that the issue names: rows that exclude the
per-call overhead a whole network pays once. For every part's input shape it times the no-op
layers of one and two 1x1 convs (`benchmarks.boundary`), against the table's reference row as
the table's rows were, and takes 2·t(noop_1) − t(noop_2) as that shape's per-call cost. The
"overhead once" prediction is then Σ (row − its input's per-call cost) + the network input's
per-call cost. Both are judged on the networks the run's calibration held out, and on the
derived network.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.boundary import edge_ms  # noqa: E402
from benchmarks.harness import export_row, row_module  # noqa: E402
from benchmarks.isolate import NetworkTimer  # noqa: E402
from benchmarks.predict import LatencyModel  # noqa: E402
from benchmarks.protocol import Protocol  # noqa: E402
from benchmarks.table import LatencyTable, load_table  # noqa: E402
from benchmarks.targets import resolve_target  # noqa: E402
from blocks.architecture import load_architecture  # noqa: E402
from blocks.space import LayerShape, SearchSpace, resolve_space  # noqa: E402

PREDICTED = re.compile(r"^predicted \((?P<model>.+)\): (?P<ms>[0-9.]+) ms, (?P<err>[+-][0-9.]+)% vs measured", re.M)
MEASURED = re.compile(r"^measured end to end: (?P<ms>[0-9.]+) ms median", re.M)
AT_FIT_SPEED = re.compile(r"^at the calibration's speed: (?P<ms>[0-9.]+) ms", re.M)


def part_shapes(space: SearchSpace) -> list[LayerShape]:
    """The input shape of every part a network of `space` runs: fixed parts and layers."""
    return [shape for _, shape in space.fixed_parts()] + list(space.layers)


def per_call_ms(table: LatencyTable, space: SearchSpace, target_name: str, cache: Path) -> dict[str, float]:
    """Each part shape's per-call cost, timed against the table's reference row and put on
    the table's scale (its rows are ratios to that row times its median)."""
    target = resolve_target(target_name)
    exporter, ref = target.make_exporter(), table.reference
    assert ref is not None, "a table timed against a reference row"
    ref_shape = LayerShape(*(int(ref[k]) for k in ("in_ch", "out_ch", "stride", "height", "width")))
    out: dict[str, float] = {}
    with NetworkTimer(target.make_runner(1), Protocol()) as timer:
        against = timer.load(export_row(exporter, ref["block"], ref_shape, cache),  # type: ignore[arg-type]
                             [row_module(ref["block"], ref_shape)[1].numpy()])
        for shape in dict.fromkeys(part_shapes(space)):
            ratios = [timer.stats(timer.load(export_row(exporter, noop, shape, cache),  # type: ignore[arg-type]
                                             [row_module(noop, shape)[1].numpy()]), against)["ratio"]
                      for noop in ("noop_1", "noop_2")]
            out[shape.key] = edge_ms(*ratios) * float(ref["median_ms"])
    return out


def overhead_once(plain: LatencyModel, space: SearchSpace, blocks: tuple[str, ...], calls: dict[str, float]) -> float:
    """The plain sum with every part's per-call cost taken out and the network's paid once."""
    shapes = part_shapes(space)
    return plain.predict(space, blocks) - sum(calls[s.key] for s in shapes) + calls[space.fixed_parts()[0][1].key]


def one_run(target: str, out: Path) -> dict[str, float | str]:
    """`pipeline run` into `out`, and both predictions judged on what it measured."""
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--target", target, "--out", str(out)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"pipeline run --target {target} failed: {done.stderr.strip().splitlines()[-1:]}")
    (out / "run.txt").write_text(done.stdout)  # what the user saw
    # judged as the run judged its own prediction: at the calibration's speed where it printed one
    said, measured = PREDICTED.search(done.stdout), AT_FIT_SPEED.search(done.stdout) or MEASURED.search(done.stdout)
    if said is None or measured is None:
        sys.exit(f"pipeline run --target {target} printed no prediction beside a measurement")
    space = resolve_space("tiny")
    table = load_table(out / "tables/tiny" / target / "host.json")
    plain = LatencyModel.from_table(table, space, calibrated=False)
    calls = per_call_ms(table, space, target, out / "cache")
    held = [s for s in json.loads((out / "validate/tiny" / target / "host/validate.json").read_text())["samples"]
            if not s["fitted"]]

    def err(pred: list[float], meas: list[float]) -> float:
        return float(np.median(np.abs(np.array(pred) / np.array(meas) - 1)) * 100)

    meas = [s["measured_ms"] for s in held]
    derived = load_architecture(out / "search/tiny" / target / "host/architecture.json", space).blocks
    return {"model": said["model"], "run_err": float(said["err"]),
            "once_err": (overhead_once(plain, space, derived, calls) / float(measured["ms"]) - 1) * 100,
            "held_plain": err([s["table_sum_ms"] for s in held], meas),
            "held_once": err([overhead_once(plain, space, tuple(s["blocks"]), calls) for s in held], meas),
            "held_cal": err([s["calibrated_ms"] or s["table_sum_ms"] for s in held], meas)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", help="local target(s) [desktop]")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True, help="a folder for the runs' workspaces (must not exist)")
    opts = ap.parse_args()
    if opts.out.exists():
        sys.exit(f"--out {opts.out} exists; give a new folder (each run starts from a fresh workspace)")
    print("target              run  derived: run's error (model)                        overhead once   "
          "held out, median |err|: plain / overhead once / calibrated")
    for target in opts.target or ["desktop"]:
        for i in range(opts.runs):
            r = one_run(target, opts.out / target / f"run{i}")
            print(f"{target:<19} {i:3d}  {r['run_err']:+6.1f}% ({r['model']:<46}) {r['once_err']:+6.1f}%         "
                  f"{r['held_plain']:.1f} / {r['held_once']:.1f} / {r['held_cal']:.1f}%", flush=True)


if __name__ == "__main__":
    main()
