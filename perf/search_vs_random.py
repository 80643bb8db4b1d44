"""Does the search beat random search at the same latency? (docs/search.md, "Search against random")

    python perf/search_vs_random.py --out DIR                       # 5 seeds, digits-hard, about two hours on 2 cores
    python perf/search_vs_random.py --out DIR --seeds 5,6,7,8,9     # other seeds: only what changed is computed
    python perf/search_vs_random.py --out DIR --smoke               # the CI version: seconds, on 'digits'

For each search seed it runs the default search of `tiny` (SearchConfig's defaults, at that
seed, for `--search-epochs`: the digits-hard super-net takes about 45 s an epoch on one core)
on `--data`, derives an architecture and trains it from scratch. Against it stand
`--random` architectures drawn uniformly from the space among those whose predicted latency
is within 0.9-1.0x of the derived one's, trained the same way (the same TrainConfig and
training seeds: the same initialisation streams, batch orders and schedule). Every accuracy
compared is the mean over `--train-seeds` trainings: between architectures of one latency,
the differences are of the size of one training's seed noise. All seeds draw
from one stream of random architectures, so windows that overlap share their trainings.

It also measures:
- the proxy task's spread: `--scatter` architectures drawn uniformly from the whole space,
  against one architecture trained with `--noise-seeds` training seeds (seed-to-seed noise);
- decisiveness: per layer, the chosen block's α over the runner-up's; and how many layers
  two seeds' architectures agree on;
- the discretization gap: the derived network's accuracy with the super-net's weights
  (BN statistics re-estimated), and the epochs a fine-tune from them (the training recipe at
  a tenth of its learning rate) needs to reach the from-scratch accuracy;
- a sweep: one search per latency target (`--sweep-targets`, spread over the space), each
  derived network trained from scratch; its Pareto front is drawn over the random scatter.

Every search and training is cached in DIR/cache (or `--cache`), keyed by everything it depends
on, so a rerun costs only what changed, and a run of another recipe (`--set`) into another DIR
with the same `--cache` trains only the random architectures it does not share. DIR/report.json holds every figure and DIR/search_vs_random.png
the plot. The latencies come from `--table` (by default the table the figures in docs/search.md
used); `--measure` times a `desktop` table on this machine into DIR/work instead (also reused).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, replace
from math import comb
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.predict import LatencyModel  # noqa: E402
from benchmarks.protocol import Protocol  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from benchmarks.targets import resolve_target  # noqa: E402
from blocks import SearchSpace, resolve_space  # noqa: E402
from core.config import build_config  # noqa: E402
from core.errors import PipelineError  # noqa: E402
from core.fileio import read_json, write_json_atomic, write_with  # noqa: E402
from core.workspace import Workspace  # noqa: E402
from pipeline.stages import benchmark as benchmark_stage  # noqa: E402
from pipeline.stages.search import recalibrate_bn  # noqa: E402
from pipeline.training.data import Splits, load_data  # noqa: E402
from pipeline.training.loop import TrainConfig, evaluate, fresh_network, train_network  # noqa: E402
from pipeline.training.search import DECIDED, SearchConfig, alpha_margins, latency_fingerprint, run_search  # noqa: E402
from pipeline.training.sweep import SweepPoint, mark_pareto  # noqa: E402

SPACE, TARGET = "tiny", "desktop"
# A desktop table of `tiny` timed on a 2-core x86 VM (ONNX Runtime, 1 thread, calibrated on whole
# networks): the latencies the figures in docs/search.md were searched against, so that they reproduce.
TABLE = Path(__file__).resolve().parent / "data" / "tiny-desktop.json"
WINDOW = (0.9, 1.0)  # random architectures' predicted latency, as a share of the derived one's
FINE_TUNE_LR = 0.1  # a fine-tune's learning rate, as a share of the training recipe's
MAX_DRAWS = 2_000_000

Arch = tuple[str, ...]


class Cache:
    """One JSON file per result under DIR/cache/KIND/, named by the hash of what it depends on."""

    def __init__(self, root: Path) -> None:
        self.root, self.hits, self.misses = root, 0, 0

    def files(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json"))

    def get(self, kind: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        text = json.dumps(key, sort_keys=True)
        path = self.root / kind / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"
        if path.exists():
            saved = read_json(path, "cached result")
            if saved.get("key") == json.loads(text):
                self.hits += 1
                return saved["result"]
        self.misses += 1
        result = compute()
        write_json_atomic(path, {"key": json.loads(text), "result": result})
        return result


class Experiment:
    """The space, latency model, data and recipes every measurement shares."""

    def __init__(self, space: SearchSpace, latency: LatencyModel, splits: Splits, search: SearchConfig,
                 train: TrainConfig, cache: Cache) -> None:
        self.space, self.latency, self.splits, self.search_cfg, self.train_cfg = space, latency, splits, search, train
        self.cache = cache
        self.opts: Any = None  # the command line, for a worker process's tasks
        self.identity = {"space": space.fingerprint, "latency": latency_fingerprint(latency),
                         "data": [splits.source, len(splits.w), len(splits.theta), len(splits.test)]}

    def predict(self, blocks: Arch) -> float:
        return self.latency.predict(self.space, blocks)

    def trained(self, blocks: Arch, seed: int | None = None) -> float:
        """Held-out accuracy of `blocks` trained from scratch (with another training seed if given)."""
        cfg = self.train_cfg if seed is None else replace(self.train_cfg, seed=seed)
        key = {**self.identity, "blocks": list(blocks), "train": asdict(cfg)}

        def run() -> dict[str, Any]:
            start = time.perf_counter()
            acc = train_network(fresh_network(self.space, blocks, self.splits.num_classes, cfg.seed), self.splits, cfg,
                                progress=False)
            print(f"    trained {','.join(blocks)} (seed {cfg.seed}): {acc:.4f} in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            return {"accuracy": acc, "seconds": time.perf_counter() - start}

        return float(self.cache.get("train", key, run)["accuracy"])

    def training_seeds(self) -> list[int]:
        return [self.train_cfg.seed + i for i in range(self.opts.train_seeds)]

    def trainings(self, blocks: Arch) -> list[float]:
        """`blocks`' accuracy from each of `--train-seeds` trainings from scratch."""
        return [self.trained(blocks, seed=s) for s in self.training_seeds()]

    def score(self, blocks: Arch) -> float:
        """The mean of `trainings`: the figure every comparison uses, since one training's seed noise
        is as large as the differences between architectures of one latency."""
        return float(np.mean(self.trainings(blocks)))

    def searched(self, seed: int, **changes: Any) -> dict[str, Any]:
        """The search at `seed` (with config changes), its α, and its inherited weights' accuracy
        before and after each fine-tune epoch."""
        cfg = replace(self.search_cfg, seed=seed, **changes)
        key = {**self.identity, "search": cfg.to_dict(), "fine_tune": asdict(self.fine_tune_cfg())}
        return self.cache.get("search", key, lambda: self._search(cfg))

    def fine_tune_cfg(self) -> TrainConfig:
        return replace(self.train_cfg, lr=self.train_cfg.lr * FINE_TUNE_LR)

    def _search(self, cfg: SearchConfig) -> dict[str, Any]:
        start = time.perf_counter()
        r = run_search(self.space, self.latency, self.splits, cfg, progress=False)
        seconds = time.perf_counter() - start
        net = r.supernet.get_active_subnet(r.blocks)
        recalibrate_bn(net, self.splits, "cpu")
        inherited = evaluate(net, self.splits.test)
        curve: list[float] = []
        train_network(net, self.splits, self.fine_tune_cfg(), progress=False,
                      after_epoch=lambda _, n: curve.append(evaluate(n, self.splits.test)))
        print(f"    searched seed {cfg.seed}: {','.join(r.blocks)} in {seconds:.0f} s; inherited {inherited:.4f}",
              flush=True)
        return {"blocks": list(r.blocks), "alpha": r.alpha_table(), "seconds": seconds,
                "supernet_accuracy": r.supernet_test_acc, "inherited_accuracy": inherited, "fine_tune": curve,
                "history": r.history}


def random_stream(space: SearchSpace, seed: int) -> Callable[[], Arch]:
    rng = random.Random(seed)
    choices = [space.candidates(i) for i in range(len(space.layers))]
    return lambda: tuple(rng.choice(c) for c in choices)


def within(ex: Experiment, budget_ms: float, n: int, seed: int, exclude: set[Arch]) -> list[Arch]:
    """The first `n` distinct architectures of the shared random stream predicted within WINDOW of `budget_ms`."""
    draw, found = random_stream(ex.space, seed), {}
    lo, hi = WINDOW[0] * budget_ms, WINDOW[1] * budget_ms
    per = [dict(zip(ex.space.candidates(i), t.tolist())) for i, t in enumerate(ex.latency.per_layer)]
    for _ in range(MAX_DRAWS):
        a = draw()
        ms = ex.latency.fixed_ms + sum(m[b] for m, b in zip(per, a))
        if lo <= ms <= hi and a not in exclude:
            found[a] = None
            if len(found) == n:
                return list(found)
    raise SystemExit(f"only {len(found)} random architectures are predicted within {lo:.4f}-{hi:.4f} ms")


def percentile_of(value: float, others: list[float]) -> float:
    """The share of `others` below `value`, ties counting half (0 = worst, 1 = best)."""
    below = sum(o < value for o in others) + 0.5 * sum(o == value for o in others)
    return below / len(others)


def sign_test_p(wins: int, n: int) -> float:
    """P(at least `wins` of `n` above the median by chance), one-sided."""
    return sum(comb(n, k) for k in range(wins, n + 1)) / 2**n


def scatter_archs(ex: Experiment, opts: argparse.Namespace) -> list[Arch]:
    """`--scatter` distinct architectures drawn uniformly from the whole space (their own stream)."""
    draw = random_stream(ex.space, 10_000 + opts.random_seed)
    return list(dict.fromkeys(draw() for _ in range(opts.scatter * 3)))[:opts.scatter]


def sweep_targets(ex: Experiment, opts: argparse.Namespace) -> list[float]:
    """`--sweep-targets` latency targets, evenly between the scatter's 10th and 90th latency percentiles."""
    if opts.sweep_targets < 2:
        return []
    lo, hi = np.percentile([ex.predict(a) for a in scatter_archs(ex, opts)], [10, 90])
    return [round(float(t), 6) for t in np.linspace(lo, hi, opts.sweep_targets)]


def sweep_search(ex: Experiment, opts: argparse.Namespace, target: float) -> dict[str, Any]:
    return ex.searched(opts.sweep_seed, latency_target=target, loss=None, lam=None)


def spread(ex: Experiment, opts: argparse.Namespace) -> dict[str, Any]:
    """Item 1: random architectures' spread against one architecture's seed-to-seed noise."""
    scatter = scatter_archs(ex, opts)
    accs = [ex.trained(a) for a in scatter]  # one training each, like the noise it is set against
    probe = scatter[0]
    noise = [ex.trained(probe, seed=s) for s in range(opts.noise_seeds)]
    sd_seed = statistics.stdev(noise) if len(noise) > 1 else float("nan")
    sd_arch = statistics.stdev(accs) if len(accs) > 1 else float("nan")
    q1, q3 = np.percentile(accs, [25, 75]) if accs else (float("nan"),) * 2
    return {"architectures": [{"blocks": list(a), "predicted_ms": ex.predict(a), "accuracy": ex.score(a),
                               "one_training": acc} for a, acc in zip(scatter, accs)],
            "noise_architecture": list(probe), "noise_accuracies": noise, "seed_sd": sd_seed,
            "random_sd": sd_arch, "random_iqr": float(q3 - q1), "random_range": max(accs) - min(accs),
            "sd_ratio": sd_arch / sd_seed if sd_seed > 0 else None}  # None: its trainings scored alike


def per_seed(ex: Experiment, seed: int, opts: argparse.Namespace) -> dict[str, Any]:
    """Item 3 for one seed: the derived architecture against random ones at its latency."""
    s = ex.searched(seed)
    blocks = tuple(s["blocks"])
    budget = ex.predict(blocks)
    rivals = within(ex, budget, opts.random, opts.random_seed, {blocks})
    derived = ex.score(blocks)
    accs = [ex.score(a) for a in rivals]
    runs = ex.trainings(blocks)
    margins = alpha_margins([list(layer.values()) for layer in s["alpha"]])
    scratch = runs[0]  # the fine-tune follows the first training seed's data order, so it is set against that seed
    reached = next((i + 1 for i, a in enumerate(s["fine_tune"]) if a >= scratch), None)
    return {"seed": seed, "blocks": list(blocks), "predicted_ms": budget, "accuracy": derived, "trainings": runs,
            "random": [{"blocks": list(a), "predicted_ms": ex.predict(a), "accuracy": acc, "trainings": ex.trainings(a)}
                       for a, acc in zip(rivals, accs)],
            "random_median": float(np.median(accs)), "random_q75": float(np.percentile(accs, 75)),
            "percentile": percentile_of(derived, accs), "beats_median": derived > float(np.median(accs)),
            "alpha_margins": margins, "decided_layers": sum(m >= DECIDED for m in margins),
            "search_seconds": s["seconds"], "supernet_accuracy": s["supernet_accuracy"],
            "inherited_accuracy": s["inherited_accuracy"], "fine_tune": s["fine_tune"],
            "scratch_accuracy_first_seed": scratch, "fine_tune_epochs_to_scratch": reached}


def agreement(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """How many layers two seeds' architectures share, over every pair, and per layer the modal block's share."""
    archs = [r["blocks"] for r in seeds]
    pairs = [sum(x == y for x, y in zip(a, b)) for i, a in enumerate(archs) for b in archs[i + 1:]]
    per_layer = []
    for layer in zip(*archs):
        top = max(set(layer), key=layer.count)
        per_layer.append({"block": top, "seeds": layer.count(top)})
    return {"pairs_mean_layers": float(np.mean(pairs)) if pairs else float("nan"), "layers": len(archs[0]),
            "per_layer": per_layer}


def sweep(ex: Experiment, opts: argparse.Namespace) -> list[dict[str, Any]]:
    """One search per latency target, each derived network trained from scratch; its Pareto front."""
    points = []
    for t in sweep_targets(ex, opts):
        blocks = tuple(sweep_search(ex, opts, t)["blocks"])
        points.append(SweepPoint("search", f"target {t:.4f}", blocks, ex.predict(blocks), ex.score(blocks)))
    return [{**asdict(p), "blocks": list(p.blocks)} for p in mark_pareto(points)]


_WORKER: Experiment | None = None


def _start_worker(opts: argparse.Namespace) -> None:
    global _WORKER
    torch.set_num_threads(1)  # one core per worker: small networks train faster side by side than threaded
    _WORKER = experiment(opts)


def _do(task: tuple[str, Any]) -> None:
    """One search or training in a worker; its result lands in the cache the main process reads."""
    assert _WORKER is not None
    kind, arg = task
    if kind == "search":
        _WORKER.searched(arg)
    elif kind == "sweep":
        sweep_search(_WORKER, _WORKER.opts, arg)
    else:
        _WORKER.trained(*arg)


def prefetch(ex: Experiment, opts: argparse.Namespace) -> None:
    """With --jobs N > 1, compute every search and then every training in N processes first;
    the report then reads them all from the cache."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(opts.jobs, initializer=_start_worker, initargs=(opts,)) as pool:
        list(pool.map(_do, [("search", s) for s in opts.seeds] + [("sweep", t) for t in sweep_targets(ex, opts)]))
        scatter = scatter_archs(ex, opts)
        archs = list(scatter)
        for seed in opts.seeds:
            blocks = tuple(ex.searched(seed)["blocks"])
            archs += [blocks] + within(ex, ex.predict(blocks), opts.random, opts.random_seed, {blocks})
        archs += [tuple(sweep_search(ex, opts, t)["blocks"]) for t in sweep_targets(ex, opts)]
        trains = [(a, s) for s in ex.training_seeds() for a in archs]  # every first training before any second
        trains += [(scatter[0], s) for s in range(opts.noise_seeds)]
        list(pool.map(_do, [("train", t) for t in dict.fromkeys(trains)]))


def latency_model(space: SearchSpace, table: Path | None, work: Path) -> LatencyModel:
    if table is not None:
        return LatencyModel.from_table(load_table(table), space)
    print(f"measuring a {TARGET} table of '{space.name}' in {work} (reused next time) ...", flush=True)
    report = benchmark_stage.benchmark(space, resolve_target(TARGET), Workspace(work), Protocol(),
                                       jobs=os.cpu_count() or 1)
    return LatencyModel.from_table(report.table, space)


def pooled_seed_sd(seeds: list[dict[str, Any]]) -> float:
    """One training's seed-to-seed standard deviation, pooled over every compared architecture
    with two or more trainings (the root of the mean of their sample variances)."""
    runs = {tuple(a["blocks"]): a["trainings"] for r in seeds for a in [r, *r["random"]] if len(a["trainings"]) > 1}
    return float(np.sqrt(np.mean([np.var(t, ddof=1) for t in runs.values()]))) if runs else float("nan")


def summary(seeds: list[dict[str, Any]], spread_: dict[str, Any], train_seeds: int) -> dict[str, Any]:
    wins = sum(r["beats_median"] for r in seeds)
    pooled = pooled_seed_sd(seeds)
    gaps = [r["accuracy"] - r["random_median"] for r in seeds]
    return {"seeds": len(seeds), "beats_median": wins, "sign_test_p": sign_test_p(wins, len(seeds)),
            "mean_percentile": float(np.mean([r["percentile"] for r in seeds])),
            "top_quartile_on_average": bool(np.mean([r["percentile"] for r in seeds]) >= 0.75),
            "mean_gain_over_median": float(np.mean(gaps)),
            "decided_layers_mean": float(np.mean([r["decided_layers"] for r in seeds])),
            "seed_sd": spread_["seed_sd"], "random_sd": spread_["random_sd"], "sd_ratio": spread_["sd_ratio"],
            "train_seeds": train_seeds, "seed_sd_pooled": pooled, "noise_of_a_score": pooled / train_seeds**0.5}


def print_report(rep: dict[str, Any]) -> None:
    sp, sm = rep["spread"], rep["summary"]
    print(f"\nproxy task '{rep['data']}': {len(sp['architectures'])} uniformly random architectures span "
          f"{min(a['one_training'] for a in sp['architectures']):.4f}-{max(a['one_training'] for a in sp['architectures']):.4f} "
          f"(sd {sp['random_sd']:.4f}, IQR {sp['random_iqr']:.4f}); one architecture over "
          f"{len(sp['noise_accuracies'])} training seeds: sd {sp['seed_sd']:.4f}; ratio "
          f"{'-' if sp['sd_ratio'] is None else format(sp['sd_ratio'], '.1f')}")
    print(f"\n{'seed':>4} {'pred ms':>8} {'derived':>8} {'rand med':>8} {'rand q75':>8} {'pctile':>7} "
          f"{'decided':>7} {'inherit':>7} {'ft ep':>5}  blocks")
    for r in rep["seeds"]:
        ft = r["fine_tune_epochs_to_scratch"]
        print(f"{r['seed']:>4} {r['predicted_ms']:>8.4f} {r['accuracy']:>8.4f} {r['random_median']:>8.4f} "
              f"{r['random_q75']:>8.4f} {r['percentile']:>7.2f} {r['decided_layers']:>4}/{len(r['blocks'])} "
              f"{r['inherited_accuracy']:>7.4f} {ft if ft else '-':>5}  {','.join(r['blocks'])}")
    ag = rep["agreement"]
    print(f"\nbetter than the median random one in {sm['beats_median']} of {sm['seeds']} seeds "
          f"(sign test p = {sm['sign_test_p']:.3f}); mean percentile {sm['mean_percentile']:.2f} "
          f"(top quartile on average: {'yes' if sm['top_quartile_on_average'] else 'no'}); "
          f"mean gain over the median {sm['mean_gain_over_median']:+.4f}; each accuracy is the mean of "
          f"{sm['train_seeds']} trainings: one training's seed sd pooled over them {sm['seed_sd_pooled']:.4f}, "
          f"that mean's {sm['noise_of_a_score']:.4f}")
    print(f"decided layers (α ≥ {DECIDED}x the runner-up's): {sm['decided_layers_mean']:.1f} of {ag['layers']} "
          f"on average; two seeds agree on {ag['pairs_mean_layers']:.1f} of {ag['layers']} layers on average; "
          "per layer: " + ", ".join(f"{p['block']} {p['seeds']}/{sm['seeds']}" for p in ag["per_layer"]))
    for p in rep["sweep"]:
        print(f"sweep {p['label']}: predicted {p['predicted_ms']:.4f} ms, accuracy {p['accuracy']:.4f}"
              + ("  (Pareto)" if p["pareto"] else ""))


def plot(rep: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    changed = rep.get("changed") or {}
    recipe = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the default recipe"
    fig = Figure(figsize=(12, 4.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    for i, r in enumerate(rep["seeds"]):
        accs = [a["accuracy"] for a in r["random"]]
        left.scatter(np.full(len(accs), i) + np.linspace(-0.15, 0.15, len(accs)), accs, c="0.6", s=14,
                     label="random, 0.9-1.0x its latency" if i == 0 else None)
        left.hlines([r["random_median"]], i - 0.25, i + 0.25, colors="0.2", lw=1.5, label="random median" if i == 0 else None)
        left.hlines([r["random_q75"]], i - 0.25, i + 0.25, colors="0.2", lw=1, linestyles="dashed",
                    label="random 75th percentile" if i == 0 else None)
        left.scatter([i], [r["accuracy"]], marker="*", c="tab:red", s=160, zorder=3, label="searched" if i == 0 else None)
    left.set_xticks(range(len(rep["seeds"])), [str(r["seed"]) for r in rep["seeds"]])
    left.set_xlabel("search seed")
    left.set_ylabel("held-out accuracy (trained from scratch)")
    left.set_title("the searched network against random ones as fast")
    left.legend(fontsize=7, loc="lower right")
    right.scatter([a["predicted_ms"] for a in rep["spread"]["architectures"]],
                  [a["accuracy"] for a in rep["spread"]["architectures"]], c="0.6", s=16, label="random (whole space)")
    near = [a for r in rep["seeds"] for a in r["random"]]
    right.scatter([a["predicted_ms"] for a in near], [a["accuracy"] for a in near], c="0.8", s=10,
                  label="random (near the searched)")
    right.scatter([r["predicted_ms"] for r in rep["seeds"]], [r["accuracy"] for r in rep["seeds"]], marker="*",
                  c="tab:red", s=120, zorder=3, label=f"searched ({recipe}, per seed)")
    sw = sorted(rep["sweep"], key=lambda p: p["predicted_ms"])
    if sw:
        right.scatter([p["predicted_ms"] for p in sw], [p["accuracy"] for p in sw], c="tab:blue", s=36, zorder=3,
                      label="sweep of latency targets")
        front = [p for p in sw if p["pareto"]]
        right.step([p["predicted_ms"] for p in front], [p["accuracy"] for p in front], where="post", c="tab:blue",
                   lw=1.2, label="sweep's Pareto front")
    right.set_xlabel("predicted latency (ms)")
    right.set_ylabel("held-out accuracy (trained from scratch)")
    right.set_title("accuracy against latency")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"space '{rep['space']}', data '{rep['data']}', {rep['train']['epochs']} training epochs; each accuracy "
                 f"the mean of {rep['summary']['train_seeds']} trainings", fontsize=9)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="results, plot and cache")
    ap.add_argument("--cache", type=Path, help="the cache, which runs with other --set values may share [OUT/cache]")
    ap.add_argument("--table", type=Path, default=TABLE,
                    help="a latency table of tiny [perf/data/tiny-desktop.json, the one docs/search.md's figures used]")
    ap.add_argument("--measure", action="store_true", help="measure a desktop table here (into OUT/work) instead")
    ap.add_argument("--data", default="digits-hard", help="data source [digits-hard]")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="search seeds [0,1,2,3,4]")
    ap.add_argument("--random", type=int, default=20, help="random architectures per seed, within 0.9-1.0x [20]")
    ap.add_argument("--random-seed", type=int, default=0, help="seed of the random architectures' stream [0]")
    ap.add_argument("--scatter", type=int, default=15, help="random architectures from the whole space [15]")
    ap.add_argument("--noise-seeds", type=int, default=5, help="training seeds of one architecture [5]")
    ap.add_argument("--sweep-targets", type=int, default=3, help="latency targets of the sweep (0: none) [3]")
    ap.add_argument("--sweep-seed", type=int, default=0, help="search seed of the sweep [0]")
    ap.add_argument("--search-epochs", type=int, default=10, help="search epochs [10, the search's default]")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help="a search config value other than the default, e.g. --set mixing=softmax --set theta_lr=0.01")
    ap.add_argument("--train-epochs", type=int, default=6, help="training epochs [6]")
    ap.add_argument("--train-seeds", type=int, default=2,
                    help="training seeds each compared architecture's accuracy is averaged over [2]")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="processes computing searches and trainings, one core each [the machine's cores]")
    ap.add_argument("--smoke", action="store_true",
                    help="the CI version: digits, 2 seeds, 3 random, 2 search and 1 training epochs")
    if "--smoke" in (sys.argv[1:] if argv is None else argv):  # its defaults; flags given still win
        ap.set_defaults(data="digits", seeds="0,1", random=3, scatter=3, noise_seeds=2, sweep_targets=2,
                        search_epochs=2, train_epochs=1, train_seeds=2, jobs=1)
    opts = ap.parse_args(argv)
    opts.seeds = [int(s) for s in opts.seeds.split(",") if s.strip()]
    if opts.random < 1 or opts.scatter < 2 or opts.noise_seeds < 2 or opts.train_seeds < 1 or not opts.seeds:
        ap.error("need --random >= 1, --scatter >= 2, --noise-seeds >= 2, --train-seeds >= 1 and at least one seed")
    return opts


def settings(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, each value read as JSON where it parses (numbers) and as text otherwise."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair}: write KEY=VALUE, e.g. --set theta_lr=0.01")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def experiment(opts: argparse.Namespace) -> Experiment:
    space = resolve_space(SPACE)
    latency = latency_model(space, None if opts.measure else opts.table, opts.out / "work")
    splits = load_data(opts.data, space.resolution, space.in_channels, 0)
    search_cfg = build_config(SearchConfig, {"epochs": opts.search_epochs, **settings(opts.settings)}, "--set")
    train_cfg = TrainConfig(**({"epochs": opts.train_epochs} if opts.train_epochs else {}))
    ex = Experiment(space, latency, splits, search_cfg, train_cfg, Cache(opts.cache or opts.out / "cache"))
    ex.opts = opts
    return ex


def main(argv: list[str] | None = None) -> dict[str, Any]:
    opts = parse_args(argv)
    # Every search and training runs on one core, here as in a worker: the figures do not depend on --jobs.
    torch.set_num_threads(1)
    ex = experiment(opts)
    search_cfg, train_cfg, splits = ex.search_cfg, ex.train_cfg, ex.splits
    before = ex.cache.files()
    if opts.jobs > 1:
        prefetch(ex, opts)
        ex.cache.hits = ex.cache.misses = 0  # count the report's lookups alone
    print(f"'{opts.data}': {len(splits.w)} W, {len(splits.theta)} Θ, {len(splits.test)} test images; search "
          f"{search_cfg.epochs} epochs ({search_cfg.mixing}), training {train_cfg.epochs} epochs", flush=True)
    print("spread of the proxy task ...", flush=True)
    sp = spread(ex, opts)
    seeds = []
    for seed in opts.seeds:
        print(f"seed {seed} ...", flush=True)
        seeds.append(per_seed(ex, seed, opts))
    print("sweep ...", flush=True)
    sw = sweep(ex, opts)
    rep = {"space": SPACE, "data": opts.data, "search": search_cfg.to_dict(), "changed": settings(opts.settings),
           "train": asdict(train_cfg),
           "spread": sp, "seeds": seeds, "agreement": agreement(seeds), "sweep": sw,
           "summary": summary(seeds, sp, opts.train_seeds), "cache": {}}
    computed = ex.cache.files() - before  # here or in a worker
    rep["cache"] = {"computed": computed, "reused": ex.cache.hits + ex.cache.misses - computed}
    write_json_atomic(opts.out / "report.json", rep)
    plot(rep, opts.out / "search_vs_random.png")
    print_report(rep)
    print(f"\n{computed} searches and trainings computed, {rep['cache']['reused']} reused from {ex.cache.root}; "
          f"{opts.out / 'report.json'}, {opts.out / 'search_vs_random.png'}")
    return rep


if __name__ == "__main__":
    try:
        main()
    except PipelineError as e:
        raise SystemExit(f"error: {e}") from None
