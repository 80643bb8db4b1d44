"""Re-time the networks `pipeline validate` timed, with the official runtimes and nothing of ours.

    pipeline validate --space fbnet --samples 40 --fit        # writes .../validate.json
    python perf/independent_timing.py pipeline-out/validate/fbnet/desktop/host/validate.json

`validate` times each network with the project's protocol (`benchmarks/protocol.py`). This
script uses none of the project's loading or timing code: it opens each artifact listed in
validate.json with the runtime's own Python API alone (each runner's `open_plain`, chosen by the
file's format from the exporter and runner registries: onnxruntime.InferenceSession,
ai_edge_litert's Interpreter, executorch.runtime), one thread, pinned to one core like `taskset`
in LiteRT's benchmark_model guide, and times a plain loop as `benchmark_model` does by default (a warm-up run, then at least
50 runs and at least 1 s), in `--rounds` rounds (by default as many as `validate` took). It
prints, per network, its own median beside validate's, and the table's predictions judged
against its own timings, so the measurement and the predictor can each be checked without
trusting our timing code. Last, it judges the prediction against the median of only the
first k rounds, k = 1, 2, 3, 5, 9 and all: the part of the gap that shrinks as k grows is the
re-timing's own noise, not the predictor's error.

By default every network is loaded once, all in this process, before any is timed. With
`--alone`, each is timed in its own fresh process (per round) that opens only that network,
as `benchmark_model` runs a model (docs/validate.md gives how far apart the two ways land). With `--paired`, each network is timed both ways back to back in
every round (which way first alternates), and the two ways' ratio is printed pair by pair, so
that the machine's drift between them is as small as it can be.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, for its registries

from benchmarks.runners import RUNNERS  # noqa: E402
from core.errors import PipelineError  # noqa: E402
from core.plugins import LOADED, load_plugins  # noqa: E402
from export import EXPORTERS  # noqa: E402


def opener_for(path: str) -> Callable[[str, int], Callable[[], object]]:
    """The plain opener (`Runner.open_plain`) of the first registered runner of the format whose
    files end as `path` does, by the exporters' suffixes."""
    suffix = Path(path).suffix
    formats = {e.format for _, e in EXPORTERS.items() if e.suffix == suffix}
    runners = [r for _, r in RUNNERS.items() if formats & set(r.formats)]
    if not runners:
        known = ", ".join(sorted({e.suffix for _, e in EXPORTERS.items()}))
        sys.exit(f"{path}: no registered exporter writes '{suffix}' files (they write {known}); pass the plugin "
                 "that registers its format with --plugin")
    return runners[0].open_plain


def open_artifact(path: str, threads: int) -> Callable[[], object]:
    """`path` opened with its runtime's own API, or the reason it cannot be, as an exit."""
    try:
        return opener_for(path)(path, threads)
    except PipelineError as e:
        sys.exit(f"{path}: {e}")


def load_plugin_files(paths: list[str]) -> None:
    """The plugins that register a format's exporter and runner, as `pipeline --plugin` took them."""
    try:
        load_plugins(paths)
    except PipelineError as e:
        sys.exit(str(e))


def time_loop(call: Callable[[], object], min_runs: int = 50, min_s: float = 1.0) -> float:
    """benchmark_model's defaults: one warm-up run, then >= min_runs runs lasting >= min_s; median ms."""
    call()
    runs: list[float] = []
    start = time.perf_counter()
    while len(runs) < min_runs or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        call()
        runs.append((time.perf_counter() - t) * 1e3)
    return float(np.median(runs))


_ALONE = """
import os, sys
sys.path.insert(0, sys.argv[1])
import independent_timing as it
it.load_plugin_files(sys.argv[6:])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:int(sys.argv[3])])
call = it.open_artifact(sys.argv[2], int(sys.argv[3]))
print(it.time_loop(call, int(sys.argv[4]), float(sys.argv[5])))
"""


def time_alone(path: str, threads: int, min_runs: int, min_s: float) -> float:
    """`path` timed like `benchmark_model`: alone, in a fresh process that opens only it (the
    project's registries are imported to find its runtime; none of its loading or timing code runs)."""
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run([sys.executable, "-c", _ALONE, here, path, str(threads), str(min_runs), str(min_s), *LOADED],
                         capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no message"])[-1]
        sys.exit(f"timing {path} in a fresh process failed (exit code {out.returncode}): {last}")
    return float(out.stdout.strip().splitlines()[-1])


def judge(pred: np.ndarray, meas: np.ndarray) -> str:
    err = np.abs(pred - meas) / meas * 100
    return (f"median {np.median(err):.1f}%, within ±10% {np.mean(err <= 10) * 100:.0f}%, "
            f"within ±5% {np.mean(err <= 5) * 100:.0f}%, worst {err.max():.1f}%, "
            f"Spearman {spearmanr(pred, meas).statistic:.3f} ({len(meas)} networks)")


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("validate_json", type=Path)
    ap.add_argument("--rounds", type=int,
                    help="time every network this many times, alternating order [as many as validate's regular rounds]")
    ap.add_argument("--threads", type=int, help="runtime threads [validate's protocol]")
    ap.add_argument("--min-runs", type=int, default=50, help="runs per network per round, at least [50]")
    ap.add_argument("--min-s", type=float, default=1.0, help="seconds per network per round, at least [1]")
    ap.add_argument("--alone", action="store_true",
                    help="time each network in its own fresh process per round, as benchmark_model runs, "
                         "instead of all of them loaded once in this one")
    ap.add_argument("--paired", action="store_true",
                    help="time each network both loaded here and alone, back to back, and print their ratio")
    ap.add_argument("--limit", type=int, help="only the first N networks")
    ap.add_argument("--plugin", action="append", default=[], metavar="FILE",
                    help="a plugin file that registers the format's exporter and runner, as given to 'pipeline'")
    opts = ap.parse_args()
    if opts.alone and opts.paired:
        sys.exit("--alone and --paired: pick one (--paired times both ways)")
    if opts.limit is not None and opts.limit < 1:
        sys.exit(f"--limit {opts.limit}: give a number of networks, at least 1")
    if opts.rounds is not None and opts.rounds < 1:
        sys.exit(f"--rounds {opts.rounds}: give a number of rounds, at least 1")
    return opts


def _read_report(opts: argparse.Namespace) -> tuple[dict, list[dict]]:
    """validate.json and the samples whose files are there to time; one line on anything else."""
    try:
        report = json.loads(opts.validate_json.read_text())
        samples = [s for s in report["samples"] if s.get("artifact")][:opts.limit]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        sys.exit(f"{opts.validate_json}: not a validate.json ({e}); pass the one 'pipeline validate' wrote")
    if not samples:
        sys.exit(f"{opts.validate_json}: no artifact paths (written by an older validate); run 'pipeline validate' again")
    missing = [s["artifact"] for s in samples if not Path(s["artifact"]).exists()]
    if missing:
        sys.exit(f"{len(missing)} of the {len(samples)} timed files no longer exist (first: {missing[0]}); "
                 "run 'pipeline validate' again to export them")
    return report, samples


def _time_rounds(samples: list[dict], opts: argparse.Namespace,
                 threads: int) -> tuple[list[list[float]], list[list[float]]]:
    """Every network's rounds (alternating order), and with --paired its fresh-process rounds."""
    def alone_ms(i: int) -> float:
        return time_alone(samples[i]["artifact"], threads, opts.min_runs, opts.min_s)

    if opts.alone:
        time_one = alone_ms
    else:
        calls = [open_artifact(s["artifact"], threads) for s in samples]

        def time_one(i: int) -> float:
            return time_loop(calls[i], opts.min_runs, opts.min_s)
    rounds: list[list[float]] = [[] for _ in samples]
    alone: list[list[float]] = [[] for _ in samples]
    for r in range(opts.rounds):
        for i in (range(len(samples)) if r % 2 == 0 else reversed(range(len(samples)))):
            alone_first = opts.paired and (r + i) % 2 == 1
            if alone_first:
                alone[i].append(alone_ms(i))
            rounds[i].append(time_one(i))
            if opts.paired and not alone_first:
                alone[i].append(alone_ms(i))
    return rounds, alone


def _print_networks(samples: list[dict], ours: np.ndarray, theirs: np.ndarray, rounds: list[list[float]],
                    alone: list[list[float]], paired: bool) -> None:
    print(f"{'#':>3} {'independent ms':>15} {'validate ms':>12} {'ratio':>6} {'table sum':>10} {'calibrated':>11}  held out")
    for i, s in enumerate(samples):
        cal = f"{s['calibrated_ms']:11.3f}" if s.get("calibrated_ms") is not None else f"{'-':>11}"
        print(f"{i:3d} {ours[i]:15.3f} {theirs[i]:12.3f} {ours[i] / theirs[i]:6.3f} {s['table_sum_ms']:10.3f} {cal}  "
              f"{'no' if s['fitted'] else 'yes'}")
    ratio = ours / theirs
    spread = np.array([(max(r) - min(r)) / np.median(r) * 100 for r in rounds])
    print(f"\nindependent / validate: median {np.median(ratio):.3f}, range {ratio.min():.3f}–{ratio.max():.3f}; "
          f"independent rounds {np.median(spread):.1f}% apart (median)")
    if paired:
        pairs = np.array([a / t for al, tl in zip(alone, rounds) for a, t in zip(al, tl)])
        q25, q75 = np.percentile(pairs, [25, 75])
        print(f"alone in a fresh process / loaded here, timed back to back: median {np.median(pairs):.3f}, "
              f"quartiles {q25:.3f}–{q75:.3f} ({len(pairs)} pairs)")


def _print_judgements(samples: list[dict], ours: np.ndarray, rounds: list[list[float]], alone: list[list[float]],
                      opts: argparse.Namespace) -> None:
    held = [i for i, s in enumerate(samples) if not s["fitted"]]
    if len(held) <= 2:
        return
    calibrated = samples[held[0]].get("calibrated_ms") is not None
    timings = [("independent timing", ours)]
    if opts.paired:
        timings.append(("each alone in a fresh process", np.array([np.median(a) for a in alone])))
    for what, measured in timings:
        print(f"held-out networks, prediction vs {what}:")
        print(f"  table sum:  {judge(np.array([samples[i]['table_sum_ms'] for i in held]), measured[held])}")
        if calibrated:
            print(f"  calibrated: {judge(np.array([samples[i]['calibrated_ms'] for i in held]), measured[held])}")
    if opts.rounds > 1:
        # the prediction validate judged: the calibration, or the plain sum where no fit beat it
        key = "calibrated_ms" if calibrated else "table_sum_ms"
        print_rounds_sweep(key.removesuffix("_ms").replace("_", " "), np.array([samples[i][key] for i in held]),
                           [rounds[i] for i in held])


def main() -> None:
    opts = _arguments()
    load_plugin_files(opts.plugin)
    report, samples = _read_report(opts)
    threads = opts.threads or (report.get("protocol") or {}).get("threads", 1)
    # as many rounds as validate gave every network: fewer, and a slow spell moves the median more
    if opts.rounds is None:
        opts.rounds = (report.get("noise") or {}).get("rounds") or 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    rounds, alone = _time_rounds(samples, opts, threads)
    ours = np.array([np.median(r) for r in rounds])
    theirs = np.array([s["measured_ms"] for s in samples])
    how = ", each alone in a fresh process" if opts.alone else ", loaded here and alone, paired" if opts.paired else ""
    print(f"{len(samples)} networks of {report.get('target', '?')}, {threads} thread(s), {opts.rounds} rounds{how}")
    _print_networks(samples, ours, theirs, rounds, alone, opts.paired)
    _print_judgements(samples, ours, rounds, alone, opts)


def print_rounds_sweep(predictor: str, pred: np.ndarray, rounds: list[list[float]]) -> None:
    """The prediction against the independent median of the first k rounds, k = 1..all.

    A predictor that is off by a fixed amount per network stays off however many rounds the
    re-timing takes; if the gap shrinks as the re-timing takes more rounds, it was the
    re-timing's own noise."""
    n = len(rounds[0])
    print(f"held-out networks, {predictor} vs the independent median of its first k rounds:")
    for k in sorted({1, 2, 3, 5, 9, n} & set(range(1, n + 1))):
        print(f"  k={k:<3d} {judge(pred, np.array([np.median(r[:k]) for r in rounds]))}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into head: stop quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
