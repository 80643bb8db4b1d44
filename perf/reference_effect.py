"""What does timing against a reference buy? Time validate's networks three ways in one run.

    python perf/reference_effect.py pipeline-out/validate/fbnet/android/host/validate.json [--rounds 7]

Every measurement here is: the reference network timed alone, then the network timed with the
project's protocol with a repeat of the reference after each of its repeats (`measure(...,
reference=...)`), then the reference alone again. From the same measurements, each network's
rounds are then taken three ways:

- as timed: the median of the network's own repeats;
- before/after: that median over the mean of the reference's medians just before and after it;
- repeat by repeat: the median of the ratios of each repeat to the reference's next to it
  (what `validate --reference` does).

It prints how far each network's rounds are apart each way and, refitting the calibration on
`--splits` random halves of the random networks (as `perf/rounds_effect.py` does), the held-out
median error and the share of refits with a network outside ±10%, against validate's table or
`--table`. Networks load once, in this process, with the runtimes' own Python APIs
(each runner's `open_plain`, as `perf/independent_timing.py` opens them), pinned to one core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from independent_timing import open_artifact  # noqa: E402
from rounds_effect import split_misses  # noqa: E402

from benchmarks.predict import LatencyModel  # noqa: E402
from benchmarks.protocol import Protocol, measure, warm_reference  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from blocks.space import resolve_space  # noqa: E402
from core.errors import PipelineError  # noqa: E402


def spread_pct(rounds: list[float]) -> float:
    return (max(rounds) - min(rounds)) / float(np.median(rounds)) * 100


def time_three_ways(calls: list, reference: int, rounds: int, protocol: Protocol) -> dict[str, list[list[float]]]:
    """Each network's rounds as timed, before/after and repeat by repeat (both in ms at the
    reference's median over the run)."""
    ref = warm_reference(calls[reference], protocol)

    def alone() -> float:
        return measure(ref.call, protocol).stats()["median_ms"]

    n = len(calls)
    raw, around, ratios = ([[] for _ in range(n)] for _ in range(3))
    ref_ms: list[float] = []
    for r in range(rounds):
        before = alone()
        for i in range(n) if r % 2 == 0 else reversed(range(n)):
            s = measure(calls[i], protocol, reference=ref)
            after = alone()
            a, b = np.asarray(s.per_call_ms), np.asarray(s.reference_ms)
            raw[i].append(float(np.median(a)))
            around[i].append(float(np.median(a)) / ((before + after) / 2))
            ratios[i].append(float(np.median(a / b)))
            ref_ms += [*b.tolist(), before, after]
            before = after
        print(f"round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
    scale = float(np.median(ref_ms))
    return {"as timed": raw, "before/after": [[x * scale for x in a] for a in around],
            "repeat by repeat": [[x * scale for x in a] for a in ratios]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path)
    ap.add_argument("--rounds", type=int, default=7, help="rounds over all the networks [7]")
    ap.add_argument("--splits", type=int, default=40, help="random half/half refits [40]")
    ap.add_argument("--space", default="fbnet", help="the space validate ran on: a name or file [fbnet]")
    ap.add_argument("--table", type=Path, help="judge against this table instead of the one validate used")
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args()
    if opts.rounds < 2:
        sys.exit(f"--rounds {opts.rounds}: give at least 2, so that rounds can disagree")
    try:
        report = json.loads(opts.validate_json.read_text())
        samples = report["samples"]
        paths = [s["artifact"] for s in samples]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{opts.validate_json}: not a validate.json ({e}); pass the one 'pipeline validate' wrote")
    if not samples or not all(paths) or not all(Path(p).exists() for p in paths):
        sys.exit(f"{opts.validate_json}: some timed files are missing; run 'pipeline validate' again to export them")
    try:
        space = resolve_space(opts.space)
        plain = LatencyModel.from_table(load_table(opts.table or report["table"]), space, calibrated=False)
    except PipelineError as e:
        sys.exit(f"{opts.validate_json}: {e}")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    calls = [open_artifact(p, 1) for p in paths]
    reference = int(np.argsort([s["table_sum_ms"] for s in samples])[len(samples) // 2])  # as validate picks it
    ways = time_three_ways(calls, reference, opts.rounds, Protocol(pin=False))
    archs = [tuple(s["blocks"]) for s in samples]
    pool = [i for i, s in enumerate(samples) if s["origin"] == "random"]
    print(f"{len(samples)} networks of {report.get('target', '?')}, {opts.rounds} rounds, "
          f"{opts.splits} random half/half refits")
    print(f"{'measured as':<18} {'rounds apart (median)':>22} {'held-out median %':>18} {'refits with a miss':>19}")
    for name, rounds in ways.items():
        measured = [float(np.median(r)) for r in rounds]
        err, missed = split_misses(plain, space, archs, measured, pool, opts.splits, opts.seed)
        apart = float(np.median([spread_pct(r) for r in rounds]))
        print(f"{name:<18} {apart:21.1f}% {err:18.2f} {missed:18.0f}%")


if __name__ == "__main__":
    main()
