"""What did `validate`'s extra rounds buy? Refit and judge one run with and without them.

    python perf/rounds_effect.py pipeline-out/validate/fbnet/desktop/host/validate.json

`validate` times every network in `--rounds` rounds and, where they are more than 10% apart,
twice more. This script takes a validate.json, measures each network as the median of its
first N rounds only (N = the regular rounds) and as the median of all of them, refits the
calibration on the same fitted half both ways, and prints the held-out metrics side by side.
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
from blocks.space import resolve_space  # noqa: E402
from pipeline.validate import metrics  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path)
    ap.add_argument("--space", default="fbnet", help="the space validate ran on: a name or file [fbnet]")
    opts = ap.parse_args()
    report = json.loads(opts.validate_json.read_text())
    space = resolve_space(opts.space)
    plain = LatencyModel.from_table(load_table(report["table"]), space, calibrated=False)
    samples = report["samples"]
    archs = [tuple(s["blocks"]) for s in samples]
    fit = [i for i, s in enumerate(samples) if s["fitted"]]
    held = [i for i, s in enumerate(samples) if not s["fitted"]]
    base = min(len(s["rounds_ms"]) for s in samples)
    print(f"{len(held)} held-out networks; {sum(len(s['rounds_ms']) > base for s in samples)} of {len(samples)} "
          f"had extra rounds")
    print(f"{'measured as':<26} {'predictor':<11} {'median %':>9} {'within 10%':>11} {'worst %':>8} {'spearman':>9}")
    for label, keep in ((f"median of first {base} rounds", base), ("median of all rounds", None)):
        measured = [float(np.median(s["rounds_ms"][:keep])) for s in samples]
        models = {"table sum": plain}
        if fit:
            cal = fit_calibration(plain, space, [archs[i] for i in fit], [measured[i] for i in fit])
            models["calibrated"] = plain.with_calibration(cal, space)
        for name, model in models.items():
            m = metrics([model.predict(space, archs[i]) for i in held], [measured[i] for i in held])
            print(f"{label:<26} {name:<11} {m['median_abs_err_pct']:9.1f} {m['within_10_pct']:10.0f}% "
                  f"{m['max_abs_err_pct']:8.1f} {m['spearman']:9.3f}")


if __name__ == "__main__":
    main()
