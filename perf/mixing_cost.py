"""What does one search step cost under each mixing strategy: memory and time, W step and Θ step?

    python perf/mixing_cost.py                                  # fbnet, 16x3x64x64 inputs, CPU
    python perf/mixing_cost.py --resolution 32 --steps 3        # a quick look
    python perf/mixing_cost.py --device cuda --resolution 224 --batch 64

For each strategy (softmax, gumbel, sampled) and each step kind, a fresh process builds the
search's own `_Searcher` on random inputs of the right shape and calls its `w_step` /
`theta_step` (Θ's with W frozen, as a one-process search runs it). After `--warmup` steps it
takes the median over `--steps` steps of:

- time per step (wall clock; CUDA is synchronised around each step);
- activation memory: the bytes of the distinct storages autograd saves for backward in the
  step, parameters and buffers excluded (what grows with the candidates that run);
- process memory: on CPU the peak RSS minus the RSS just before the first step (so it counts
  gradients, optimiser state and the allocator's slack too); on CUDA the peak of
  `torch.cuda.max_memory_allocated` in a step (weights included).

One search step is one W step and one Θ step (the search alternates them): its time is their
sum, its memory their maximum (the W step's activations are freed before the Θ step starts).
The latency model is synthetic: latency values only scale the Θ loss, not the step's cost.
The goal: `sampled` needs at most 1/4 of softmax's memory and 1/3 of its step time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from benchmarks.predict import LatencyModel  # noqa: E402
from blocks import SearchSpace, resolve_space  # noqa: E402
from blocks.mixing import MIXERS  # noqa: E402
from pipeline.training.data import Splits  # noqa: E402
from pipeline.training.distributed import Context  # noqa: E402
from pipeline.training.memory import SavedBytes  # noqa: E402
from pipeline.training.search import SearchConfig, _frozen, _Searcher  # noqa: E402

KINDS = ("W", "theta")
MiB = 2.0**20
GOAL = {"memory": 1 / 4, "time": 1 / 3}  # sampled / softmax


# ---------------------------------------------------------------------------- one worker process
def synthetic_latency(space: SearchSpace) -> LatencyModel:
    """A latency model of the right shape; its values change the Θ loss, not what a step computes."""
    per_layer = tuple(torch.linspace(1.0, 2.0, len(space.candidates(i)), dtype=torch.float64)
                      for i in range(len(space.layers)))
    return LatencyModel(per_layer, fixed_ms=1.0)


def random_splits(space: SearchSpace, resolution: int, batch: int, seed: int) -> Splits:
    """One batch of random images and labels per split: step cost does not depend on pixel values."""
    g = torch.Generator().manual_seed(seed)

    def one() -> TensorDataset:
        x = torch.randn(batch, space.in_channels, resolution, resolution, generator=g)
        return TensorDataset(x, torch.randint(space.num_classes, (batch,), generator=g))

    classes = tuple(str(c) for c in range(space.num_classes))
    return Splits(one(), one(), one(), space.num_classes, classes, "random")


def current_rss() -> int:
    """Resident bytes now (Linux); the peak so far where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss()


def peak_rss() -> int:
    kb_or_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb_or_bytes if sys.platform == "darwin" else kb_or_bytes * 1024


def measured_step(step: Callable[[], Any], net: torch.nn.Module, device: str) -> dict[str, float]:
    """Run one step; its seconds, its saved-for-backward bytes and (CUDA) its peak allocation."""
    cuda = device.startswith("cuda")
    saved = SavedBytes([*net.parameters(), *net.buffers()])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        step()
    if cuda:
        torch.cuda.synchronize()
    out = {"seconds": time.perf_counter() - start, "saved_bytes": float(saved.total())}
    if cuda:
        out["cuda_peak_bytes"] = float(torch.cuda.max_memory_allocated())
    return out


def make_searcher(opts: argparse.Namespace, mixing: str) -> _Searcher:
    space = resolve_space(opts.space)
    cfg = SearchConfig(epochs=2, batch_size=opts.batch, mixing=mixing, seed=opts.seed, device=opts.device,
                       resolution=opts.resolution, amp=opts.amp)
    splits = random_splits(space, opts.resolution, opts.batch, opts.seed)
    searcher = _Searcher(space, synthetic_latency(space), splits, cfg, Context(device=opts.device))
    searcher.net.train()
    return searcher


def worker(opts: argparse.Namespace, mixing: str, kind: str) -> dict[str, float]:
    """Medians over the timed steps of one step kind under one strategy, in this (fresh) process."""
    s = make_searcher(opts, mixing)
    phase = "W" if kind == "W" else "theta"
    x, y = (t.to(opts.device) for t in next(iter(s.data[phase][0])))
    fn = s.w_step if kind == "W" else s.theta_step
    # A one-process search freezes W for Θ's pass (see _Searcher.epoch): measure that step.
    frozen = _frozen(s.net.weight_parameters()) if kind == "theta" else contextlib.nullcontext()
    with frozen:
        rss_before = current_rss()
        for _ in range(opts.warmup):
            measured_step(lambda: fn(x, y, "warm-up"), s.net, opts.device)
        steps = [measured_step(lambda: fn(x, y, "timed"), s.net, opts.device) for _ in range(opts.steps)]
    out = {k: statistics.median(st[k] for st in steps) for k in steps[0]}
    out["rss_delta_bytes"] = float(peak_rss() - rss_before)
    return out


# ---------------------------------------------------------------------------- the parent
def spawn(opts: argparse.Namespace, mixing: str, kind: str) -> dict[str, float]:
    """Run `worker` in a fresh interpreter, so peak RSS and the allocators start clean."""
    args = [sys.executable, __file__, "--worker", f"{mixing}:{kind}", "--space", opts.space,
            "--resolution", str(opts.resolution), "--batch", str(opts.batch), "--steps", str(opts.steps),
            "--warmup", str(opts.warmup), "--device", opts.device, "--seed", str(opts.seed),
            "--amp" if opts.amp else "--no-amp"]
    done = subprocess.run(args, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def search_step(w: float, theta: float, field: str) -> float:
    # Times add up over the two steps; memory peaks do not (W's activations are freed before Θ's step).
    return w + theta if field == "seconds" else max(w, theta)


def print_table(title: str, results: dict[str, dict[str, dict[str, float]]], field: str, scale: float,
                fmt: str) -> dict[str, float]:
    """One metric: W step, Θ step, search step and the ratio to softmax; returns the search-step figures."""
    print(f"\n{title}")
    print(f"{'mixing':<10} {'W step':>10} {'Θ step':>10} {'search step':>12} {'vs softmax':>11}")
    totals = {m: search_step(r["W"][field], r["theta"][field], field) for m, r in results.items()}
    base = totals.get("softmax")
    for m, r in results.items():
        ratio = f"{totals[m] / base:10.3f}x" if base else f"{'-':>11}"
        print(f"{m:<10} {r['W'][field] / scale:>10{fmt}} {r['theta'][field] / scale:>10{fmt}} "
              f"{totals[m] / scale:>12{fmt}} {ratio}")
    return totals


def goal_line(what: str, totals: dict[str, float], limit: float) -> str:
    if "softmax" not in totals or "sampled" not in totals:
        return f"goal ({what}): needs both softmax and sampled measured"
    ratio = totals["sampled"] / totals["softmax"]
    verdict = "PASS" if ratio <= limit else "MISS"
    return f"goal: sampled {what} ≤ 1/{round(1 / limit)} of softmax's: {ratio:.3f} → {verdict}"


def report(opts: argparse.Namespace, results: dict[str, dict[str, dict[str, float]]]) -> None:
    cuda = opts.device.startswith("cuda")
    n = f"median of {opts.steps} step(s) after {opts.warmup} warm-up step(s)"
    times = print_table(f"time per step, ms ({n})", results, "seconds", 1e-3, ".1f")
    saved = print_table("activation memory: bytes saved for backward, MiB (search step: the larger)", results,
                        "saved_bytes", MiB, ".1f")
    if cuda:
        process = print_table("CUDA peak allocated in a step, MiB (weights included)", results,
                              "cuda_peak_bytes", MiB, ".1f")
    else:
        process = print_table("peak RSS above the RSS before the first step, MiB (a fresh process per cell)",
                              results, "rss_delta_bytes", MiB, ".1f")
    print()
    print(goal_line("activation memory", saved, GOAL["memory"]))
    print(goal_line("CUDA peak" if cuda else "peak RSS growth", process, GOAL["memory"]) + "   (informative)")
    print(goal_line("step time", times, GOAL["time"]))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="fbnet", help="search space [fbnet]")
    ap.add_argument("--resolution", type=int, default=64, help="training input size [64: fits a 2-core CPU]")
    ap.add_argument("--batch", type=int, default=16, help="batch size [16]")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per cell, after the warm-up [5]")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first [2]")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N [cpu]")
    ap.add_argument("--mixing", action="append", help=f"strategy to measure, repeatable [{', '.join(MIXERS)}]")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                    help="bfloat16 autocast on CUDA, as the search does by default [on]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: 'mixing:kind' in a fresh process
    opts = ap.parse_args()
    if opts.steps < 1 or opts.warmup < 0 or opts.batch < 1:
        ap.error("--steps and --batch must be >= 1 and --warmup >= 0")
    for m in opts.mixing or []:
        MIXERS.get(m)  # an unknown name fails here, listing the valid ones
    return opts


def main() -> None:
    opts = parse_args()
    if opts.worker:
        mixing, kind = opts.worker.split(":")
        print(json.dumps(worker(opts, mixing, kind)))
        return
    space = resolve_space(opts.space)
    counts = sorted({len(space.candidates(i)) for i in range(len(space.layers))})
    print(f"space {space.name}: {len(space.layers)} layers, {'/'.join(map(str, counts))} candidates a layer; "
          f"input {opts.batch}x{space.in_channels}x{opts.resolution}x{opts.resolution} on {opts.device} "
          f"({torch.get_num_threads()} threads); latency model: synthetic (latency values do not change step cost)")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for mixing in opts.mixing or MIXERS.names():
        results[mixing] = {}
        for kind in KINDS:
            start = time.perf_counter()
            r = spawn(opts, mixing, kind)
            results[mixing][kind] = r
            print(f"  {mixing:<8} {'W' if kind == 'W' else 'Θ'} step: {r['seconds'] * 1e3:8.1f} ms, "
                  f"saved {r['saved_bytes'] / MiB:7.1f} MiB   ({time.perf_counter() - start:.0f} s)", flush=True)
    report(opts, results)


if __name__ == "__main__":
    main()
