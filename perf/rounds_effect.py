"""How many rounds does this machine need? Judge one validate run on fewer of its rounds.

    python perf/rounds_effect.py pipeline-out/validate/fbnet/desktop/host/validate.json [--splits 100]

`validate` times every network in `--rounds` rounds and, where they are more than 10% apart,
twice more. This script takes a validate.json and measures each network as the median of its
first N rounds only (N = 1, 3, 5, ... up to the regular rounds) and as the median of all of
them. For each it refits the calibration on the run's own fitted half and prints the held-out
metrics. When validate timed every network against a reference network (`--reference`, the
default), it does the same on the rounds as timed, before dividing by the reference: the two
measurements of one run, side by side, show what the reference is worth on this machine. One
half/half split is a single draw, so it also refits on `--splits` random halves of the random
networks and prints their mean median error and how many of them had a held-out
network outside ±10% (with 20 held out, one such network already fails a 99% goal).

`--table PATH` judges the same measurements against another table of the same space and target
(one re-measured since, or measured another way, e.g. `benchmark --rounds 5`) instead of the one
validate used: how much of the error was the table's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.predict import LatencyModel, fit_calibration  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from blocks.space import SearchSpace, resolve_space  # noqa: E402
from core.errors import PipelineError  # noqa: E402
from pipeline.stages.validate import metrics  # noqa: E402

Arch = tuple[str, ...]


def held_out(plain: LatencyModel, space: SearchSpace, archs: list[Arch], measured: list[float],
             fit: list[int], held: list[int]) -> dict[str, dict[str, float]]:
    """Metrics on `held` of the plain sum and of a calibration fitted on `fit`."""
    models = {"table sum": plain}
    if len(fit) >= 4:
        cal = fit_calibration(plain, space, [archs[i] for i in fit], [measured[i] for i in fit])
        models["calibrated"] = plain.with_calibration(cal, space)
    return {name: metrics([m.predict(space, archs[i]) for i in held], [measured[i] for i in held])
            for name, m in models.items()}


def split_misses(plain: LatencyModel, space: SearchSpace, archs: list[Arch], measured: list[float],
                 pool: list[int], splits: int, seed: int) -> tuple[float, float]:
    """Over `splits` random half/half splits of `pool`: mean median error of the calibrated
    prediction, and the share of splits where some held-out network is outside ±10%."""
    rng = np.random.default_rng(seed)
    errs, misses = [], 0
    for _ in range(splits):
        order = [pool[i] for i in rng.permutation(len(pool))]
        m = held_out(plain, space, archs, measured, sorted(order[: len(pool) // 2]), sorted(order[len(pool) // 2:]))
        errs.append(m["calibrated"]["median_abs_err_pct"])
        misses += m["calibrated"]["max_abs_err_pct"] > 10.0
    return float(np.mean(errs)), misses / splits * 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path)
    ap.add_argument("--space", default="fbnet", help="the space validate ran on: a name or file [fbnet]")
    ap.add_argument("--splits", type=int, default=100, help="random half/half splits to refit on [100]; 0: none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table", type=Path, help="judge against this table instead of the one validate used")
    opts = ap.parse_args()
    try:
        report = json.loads(opts.validate_json.read_text())
        samples, table_path = report["samples"], report["table"]
        if not samples or not all(s["rounds_ms"] for s in samples):
            raise ValueError("no timed networks")
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{opts.validate_json}: not a validate.json ({e}); pass the one 'pipeline validate' wrote")
    try:
        space = resolve_space(opts.space)
        plain = LatencyModel.from_table(load_table(opts.table or table_path), space, calibrated=False)
    except PipelineError as e:
        sys.exit(f"{opts.validate_json}: {e}")
    archs = [tuple(s["blocks"]) for s in samples]
    fit = [i for i, s in enumerate(samples) if s["fitted"]]
    held = [i for i, s in enumerate(samples) if not s["fitted"]]
    pool = [i for i, s in enumerate(samples) if s["origin"] == "random"]
    base = (report.get("noise") or {}).get("rounds") or min(len(s["rounds_ms"]) for s in samples)  # the regular rounds
    print(f"{len(held)} held-out networks; {sum(len(s['rounds_ms']) > base for s in samples)} of {len(samples)} "
          f"had extra rounds")
    splits = opts.splits if fit and len(pool) >= 8 else 0
    kinds = [("rounds_ms", "")] + ([("raw_rounds_ms", "as timed: ")] if all(s.get("raw_rounds_ms") for s in samples) else [])
    if len(kinds) > 1:
        print("each as its ratio to the reference network timed beside it, then as timed (without it)")
    print(f"{'measured as':<36} {'predictor':<11} {'median %':>9} {'within 10%':>11} {'worst %':>8} {'spearman':>9}"
          + (f"   over {splits} splits: median %, splits with a miss" if splits else ""))
    measures: list[tuple[str, int | None]] = [
        (f"median of first {n} round{'s' if n > 1 else ''}", n) for n in sorted({*range(1, base + 1, 2), base})]
    for (key, kind), (label, keep) in ((k, m) for k in kinds for m in measures + [("median of all rounds", None)]):
        measured = [float(np.median(s[key][:keep])) for s in samples]
        for name, m in held_out(plain, space, archs, measured, fit, held).items():
            line = (f"{kind + label:<36} {name:<11} {m['median_abs_err_pct']:9.1f} {m['within_10_pct']:10.0f}% "
                    f"{m['max_abs_err_pct']:8.1f} {m['spearman']:9.3f}")
            if splits and name == "calibrated":
                err, missed = split_misses(plain, space, archs, measured, pool, splits, opts.seed)
                line += f"   {err:9.2f} {missed:9.0f}%"
            print(line)


if __name__ == "__main__":
    main()
