"""How many networks should `validate` time? Refit validate runs on random subsets of each size.

    python perf/sample_size.py pipeline-out/validate/fbnet/*/host/validate.json [--splits 100]

`validate --samples N` fits the calibration on half of its N random networks and judges it on
the other half. This script takes runs made with many networks and, for each smaller N the runs
allow, draws `--splits` random subsets of N of their random networks, refits the calibration
on half (as `validate` does, `benchmarks.predict.fit_coefficients`) and judges it on the other
half against the issue's goal: median absolute error at most 3%, at least 99% within ±10%
(with fewer than 100 held out: all of them) and Spearman at least 0.95. It prints, per target
and N, the mean held-out median error and how often a run of that size would have reported a
miss, and for which part of the goal, and how often the fit's scale fell outside the range a
credible calibration keeps (`benchmarks.predict.SCALE_RANGE`; such a fit is refused). Each network's measurement is the one the run recorded,
so the subsets share the run's machine: the figures say what a smaller draw adds on top. At a
run's own size every subset holds the same networks (only the halves change), which understates
how much a fresh draw of that size would vary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibration_terms import design  # noqa: E402  (perf/ is on the path when run as a script)

from benchmarks.predict import SCALE_RANGE, fit_coefficients  # noqa: E402
from blocks.space import resolve_space  # noqa: E402
from core.errors import PipelineError  # noqa: E402
from pipeline.stages.validate import metrics  # noqa: E402

GOAL = {"median": lambda m: m["median_abs_err_pct"] <= 3.0, "±10%": lambda m: m["within_10_pct"] >= 99.0,
        "spearman": lambda m: m["spearman"] >= 0.95}


def judge_subsets(x: np.ndarray, y: np.ndarray, n: int, splits: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """Held-out metrics of `splits` random draws of `n` networks, fitted on half (the odd one
    out fits, as in validate), judged on the rest; each with the fit's `scale`."""
    out = []
    for _ in range(splits):
        draw = rng.permutation(len(y))[:n]
        fit, held = draw[: (n + 1) // 2], draw[(n + 1) // 2:]  # as validate: every other network fits
        coef = fit_coefficients(x[fit], y[fit])
        out.append({**metrics(list(x[held] @ coef), list(y[held])), "scale": float(coef[1])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path, nargs="+")
    ap.add_argument("--space", default="fbnet", help="the space validate ran on: a name or file [fbnet]")
    ap.add_argument("--splits", type=int, default=100, help="random subsets per run and size [100]")
    ap.add_argument("--sizes", type=int, nargs="+", help="networks per subset (--samples) [10 20 30 ... the runs' size]")
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args()
    if opts.splits < 1:
        sys.exit(f"--splits {opts.splits}: give at least 1")
    try:
        space = resolve_space(opts.space)
    except PipelineError as e:
        sys.exit(str(e))
    blocks = sorted({b for i in range(len(space.layers)) for b in space.candidates(i)})
    runs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for path in opts.validate_json:
        try:
            report = json.loads(path.read_text())
            x, y = design([s for s in report["samples"] if s["origin"] == "random"], blocks)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            sys.exit(f"{path}: not a validate.json of this space ({e}); pass the ones 'pipeline validate' wrote")
        runs.setdefault(str(report.get("target") or path), []).append((x, y))
    smallest = min(len(y) for rs in runs.values() for _, y in rs)
    sizes = opts.sizes or list(range(10, smallest + 1, 10))
    if not sizes or min(sizes) < 6 or max(sizes) > smallest:
        sys.exit(f"--sizes: give sizes from 6 to {smallest} (the fewest random networks of the runs given)")
    rng = np.random.default_rng(opts.seed)
    print(f"{'target':<20} {'runs':>4} {'--samples':>9} {'held out':>8} {'median %':>9} {'goal missed':>12}  "
          f"missed on: median / ±10% / spearman   scale out of range")
    for target, rs in sorted(runs.items()):
        for n in sizes:
            ms = [m for x, y in rs for m in judge_subsets(x, y, n, opts.splits, rng)]
            missed = {part: np.mean([not ok(m) for m in ms]) * 100 for part, ok in GOAL.items()}
            any_miss = np.mean([not all(ok(m) for ok in GOAL.values()) for m in ms]) * 100
            off_scale = np.mean([not SCALE_RANGE[0] <= m["scale"] <= SCALE_RANGE[1] for m in ms]) * 100
            print(f"{target:<20} {len(rs):4d} {n:9d} {n // 2:8d} {np.mean([m['median_abs_err_pct'] for m in ms]):9.2f} "
                  f"{any_miss:11.0f}%  {' / '.join(f'{v:.0f}%' for v in missed.values()):<22} {off_scale:.1f}%")


if __name__ == "__main__":
    main()
