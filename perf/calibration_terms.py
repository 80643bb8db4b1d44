"""Do per-block terms help the calibration? Refit validate runs on random halves and compare.

    python perf/calibration_terms.py pipeline-out/validate/fbnet/*/host/validate.json [--splits 40]

The calibration is T = intercept + scale·(table sum) [+ a term per block kind, ridge-shrunk],
chosen by leave-one-out (`benchmarks.predict.fit_coefficients`). Per-block terms are tried only
with `MIN_NETWORKS_PER_TERM` networks per term. For each validate.json given, this script
refits its random networks on `--splits` random half/half splits, fitting on one half and
judging on the other, under three rules:

- `scale`: intercept and scale only;
- `any n`: per-block terms tried whatever the number of networks (leave-one-out decides);
- `shipped`: what `validate` does.

With `--edges TABLE`, each network's table sum first gets what pricing its identity layers at
the edge cost measured in TABLE's no-op rows adds (`benchmarks.boundary`): run it with and
without on validate runs made before tables had those rows to see what they change.

It prints, per target, the mean held-out median error, the share of splits with a held-out
network outside ±10% (with 20 held out, one such network already fails a 99% goal), the mean
worst error and the share of fits that took per-block terms. Each run is refitted on the table
sums validate.json recorded, so runs whose table has been re-measured since still count.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.boundary import layer_latency  # noqa: E402
from benchmarks.predict import MIN_NETWORKS_PER_TERM, fit_coefficients  # noqa: E402
from benchmarks.table import LatencyTable, load_table  # noqa: E402
from blocks.space import SearchSpace  # noqa: E402
from blocks.space import resolve_space  # noqa: E402
from core.errors import PipelineError  # noqa: E402

RULES = {"scale": 10**9, "any n": 0, "shipped": MIN_NETWORKS_PER_TERM}  # networks needed per block term


def design(samples: list[dict], blocks: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows [1, table sum, count of each block] and measured ms, as `fit_coefficients` takes them."""
    x = np.array([[1.0, s["table_sum_ms"]] + [float(s["blocks"].count(b)) for b in blocks] for s in samples])
    return x, np.array([s["measured_ms"] for s in samples])


def edge_extra_ms(table: LatencyTable, space: SearchSpace, blocks: list[str]) -> float:
    """What pricing identities at the edge cost adds to one network's table sum."""
    return sum(layer_latency(table, b, shape) - table.latency(b, shape) for b, shape in zip(blocks, space.layers))


def refit(x: np.ndarray, y: np.ndarray, splits: int, seed: int) -> dict[str, list[tuple[float, float, bool]]]:
    """Per rule, per split: (held-out median error %, worst error %, took per-block terms)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[tuple[float, float, bool]]] = {r: [] for r in RULES}
    for _ in range(splits):
        order = rng.permutation(len(y))
        fit, held = np.sort(order[: len(y) // 2]), np.sort(order[len(y) // 2:])
        for rule, per_term in RULES.items():
            coef = fit_coefficients(x[fit], y[fit], min_networks_per_term=per_term)
            err = np.abs(x[held] @ coef - y[held]) / y[held] * 100
            out[rule].append((float(np.median(err)), float(err.max()), bool(np.any(coef[2:]))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path, nargs="+")
    ap.add_argument("--space", default="fbnet", help="the space validate ran on: a name or file [fbnet]")
    ap.add_argument("--splits", type=int, default=40, help="random half/half splits per run [40]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--edges", type=Path, help="re-price identities with this table's no-op rows first")
    opts = ap.parse_args()
    if opts.splits < 1:
        sys.exit(f"--splits {opts.splits}: give at least 1")
    try:
        space = resolve_space(opts.space)
        edges = load_table(opts.edges) if opts.edges else None
    except PipelineError as e:
        sys.exit(str(e))
    blocks = sorted({b for i in range(len(space.layers)) for b in space.candidates(i)})
    by_target: dict[str, dict[str, list[tuple[float, float, bool]]]] = {}
    runs: dict[str, int] = {}
    for path in opts.validate_json:
        try:
            report = json.loads(path.read_text())
            samples = [s for s in report["samples"] if s["origin"] == "random"]
            if edges is not None:
                samples = [{**s, "table_sum_ms": s["table_sum_ms"] + edge_extra_ms(edges, space, s["blocks"])}
                           for s in samples]
            x, y = design(samples, blocks)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, PipelineError) as e:
            sys.exit(f"{path}: not a validate.json of this space ({e}); pass the ones 'pipeline validate' wrote")
        if len(samples) < 8:
            sys.exit(f"{path}: {len(samples)} random networks; refitting needs at least 8 (validate --samples 20 or more)")
        target = str(report.get("target") or path)
        runs[target] = runs.get(target, 0) + 1
        for rule, results in refit(x, y, opts.splits, opts.seed).items():
            by_target.setdefault(target, {}).setdefault(rule, []).extend(results)
    print(f"{'target':<20} {'rule':<8} {'runs':>4} {'median %':>9} {'splits with a miss':>19} {'worst %':>8} "
          f"{'per-block fits':>15}")
    for target, rules in sorted(by_target.items()):
        for rule, results in rules.items():
            a = np.array(results, dtype=float)
            print(f"{target:<20} {rule:<8} {runs[target]:4d} {a[:, 0].mean():9.2f} {np.mean(a[:, 1] > 10) * 100:18.1f}% "
                  f"{a[:, 1].mean():8.2f} {a[:, 2].mean() * 100:14.0f}%")


if __name__ == "__main__":
    main()
