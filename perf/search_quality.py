"""Does the search beat chance? The derived architecture against random ones no slower than it.

    python perf/search_quality.py                                   # tiny space, digits, desktop table
    python perf/search_quality.py --table pipeline-out/tables/tiny/desktop/host.json
    python perf/search_quality.py --random 2 --train-epochs 1 --search-epochs 2    # a smoke run

It searches the embedded default (space `tiny`, digits data) at `--lam` with `--loss` and
`--mixing`, and derives an architecture. It then draws `--random` distinct architectures of
the same space, uniformly among those the latency model predicts no slower than the derived
one (rejection sampling), and trains every one of them, the derived one included, from
scratch with the same TrainConfig (epochs, learning rate, seed and initialisation stream).
It prints each one's predicted latency and held-out test accuracy, then the derived
architecture's rank (1 = best) and the share of the random ones it beats.

Without `--table` it first measures a `desktop` table of the space on this machine with
`pipeline.stages.benchmark.benchmark`, in `--work DIR` (kept and reused next time) or a temporary
folder. At the defaults the whole run takes 10+ minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.predict import LatencyModel  # noqa: E402
from benchmarks.protocol import Protocol  # noqa: E402
from benchmarks.table import load_table  # noqa: E402
from blocks import SearchSpace, resolve_space  # noqa: E402
from pipeline.stages import benchmark as benchmark_stage  # noqa: E402
from pipeline.training.data import Splits, load_data  # noqa: E402
from pipeline.training.search import SearchConfig, run_search  # noqa: E402
from benchmarks.targets import resolve_target  # noqa: E402
from pipeline.training.loop import TrainConfig, fresh_network, train_network  # noqa: E402
from core.workspace import Workspace  # noqa: E402

SPACE = "tiny"
TARGET = "desktop"
MAX_DRAWS = 1_000_000  # rejection sampling gives up after this many draws (a few seconds)

Arch = tuple[str, ...]


def latency_model(space: SearchSpace, table_path: Path | None, work: Path) -> LatencyModel:
    """The given table's model, or one measured here for `desktop` into `work`."""
    if table_path is not None:
        table = load_table(table_path)
        print(f"latency table: {table_path} ({table.target}/{table.device})", flush=True)
        return LatencyModel.from_table(table, space)
    print(f"measuring a {TARGET} latency table for space '{space.name}' in {work} ...", flush=True)
    report = benchmark_stage.benchmark(space, resolve_target(TARGET), Workspace(work), Protocol(),
                                jobs=os.cpu_count() or 1)
    print(f"latency table: {report.path} ({report.measured} rows measured now)", flush=True)
    return LatencyModel.from_table(report.table, space)


def search(space: SearchSpace, latency: LatencyModel, splits: Splits, opts: argparse.Namespace) -> Arch:
    cfg = SearchConfig(epochs=opts.search_epochs, loss=opts.loss, lam=None if opts.loss == "mul" else opts.lam, mixing=opts.mixing, seed=opts.seed)
    print(f"searching: {cfg.epochs} epoch(s), {cfg.mixing} mixing, loss {cfg.loss}, λ {cfg.lam} ...", flush=True)
    return run_search(space, latency, splits, cfg, progress=True).blocks


def random_within(space: SearchSpace, latency: LatencyModel, budget_ms: float, n: int, seed: int,
                  exclude: set[Arch]) -> tuple[list[Arch], int]:
    """`n` distinct uniformly random architectures predicted at most `budget_ms`, and the draws it took."""
    rng = random.Random(seed)
    choices = [space.candidates(i) for i in range(len(space.layers))]
    ms = [dict(zip(c, t.tolist())) for c, t in zip(choices, latency.per_layer)]
    found: dict[Arch, None] = {}
    draws = 0
    while len(found) < n and draws < MAX_DRAWS:
        draws += 1
        a = tuple(rng.choice(c) for c in choices)
        # The same sum as LatencyModel.predict, without its per-call lookups.
        if a not in exclude and latency.fixed_ms + sum(m[b] for m, b in zip(ms, a)) <= budget_ms:
            found[a] = None
    if len(found) < n:
        raise SystemExit(f"only {len(found)} of {n} random architectures predicted at most {budget_ms:.4f} ms "
                         f"in {draws} draws: the derived one is near the fastest; lower --lam or ask for fewer --random")
    return list(found), draws


def train_from_scratch(space: SearchSpace, blocks: Arch, splits: Splits, cfg: TrainConfig) -> float:
    """Held-out accuracy after training `blocks` from scratch; every network starts from the same seed."""
    net = fresh_network(space, blocks, splits.num_classes, cfg.seed)  # the same start for every network
    return train_network(net, splits, cfg, progress=False)


def train_all(space: SearchSpace, archs: list[tuple[str, Arch]], splits: Splits, cfg: TrainConfig) -> list[float]:
    accs = []
    for k, (origin, blocks) in enumerate(archs, 1):
        start = time.perf_counter()
        accs.append(train_from_scratch(space, blocks, splits, cfg))
        print(f"  trained {k}/{len(archs)} ({origin}): test accuracy {accs[-1]:.4f}   "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return accs


def print_results(space: SearchSpace, latency: LatencyModel, archs: list[tuple[str, Arch]],
                  accs: list[float]) -> None:
    print(f"\n{'origin':<10} {'predicted ms':>12} {'test acc':>9}  blocks")
    for (origin, blocks), acc in zip(archs, accs):
        print(f"{origin:<10} {latency.predict(space, blocks):>12.4f} {acc:>9.4f}  {','.join(blocks)}")
    derived, rest = accs[0], accs[1:]
    better = sum(a > derived for a in rest)
    beaten = sum(a < derived for a in rest)
    ties = len(rest) - better - beaten
    print(f"\nderived: rank {better + 1} of {len(accs)} by test accuracy (1 = best; a tie takes the better rank)")
    print(f"derived beats {beaten} of {len(rest)} random architectures ({100 * beaten / len(rest):.0f}%), "
          f"ties {ties}; random accuracy median {sorted(rest)[len(rest) // 2]:.4f}, best {max(rest):.4f}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, help="a measured latency table of the space [measure a desktop one here]")
    ap.add_argument("--work", type=Path, help="workspace for the measured table [a temporary folder]")
    # 'log' means the same trade-off on any machine's table. On tiny/desktop λ 0.2 derives a
    # network in the fastest ~6% of the space (0.088 ms of 0.063-0.157), λ 1 nearly the fastest
    # one, where too few random networks are as fast to compare with.
    ap.add_argument("--loss", default="log", help="latency term: add, log or mul [log]")
    ap.add_argument("--lam", type=float, default=0.2, help="λ of the latency term [0.2]")
    ap.add_argument("--mixing", default="softmax", help="softmax, gumbel or sampled [softmax]")
    ap.add_argument("--random", type=int, default=20, help="random architectures to compare with [20]")
    ap.add_argument("--search-epochs", type=int, default=10, help="search epochs [10]")
    ap.add_argument("--train-epochs", type=int, default=TrainConfig.epochs, help=f"training epochs [{TrainConfig.epochs}]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the data split, search, sampling and training [0]")
    opts = ap.parse_args()
    if opts.random < 1:
        ap.error("--random must be >= 1")
    return opts


def main() -> None:
    opts = parse_args()
    space = resolve_space(SPACE)
    splits = load_data("digits", space.resolution, space.in_channels, opts.seed)
    with tempfile.TemporaryDirectory(prefix="search-quality-") as tmp:
        latency = latency_model(space, opts.table, opts.work or Path(tmp))
    derived = search(space, latency, splits, opts)
    budget = latency.predict(space, derived)
    fastest, slowest = latency.bounds()
    print(f"derived: {','.join(derived)}, predicted {budget:.4f} ms (space spans {fastest:.4f} to {slowest:.4f} ms)")
    drawn, draws = random_within(space, latency, budget, opts.random, opts.seed, {derived})
    print(f"drew {len(drawn)} random architectures predicted at most {budget:.4f} ms "
          f"({draws} draws, {100 * len(drawn) / draws:.1f}% accepted)", flush=True)
    archs = [("derived", derived)] + [(f"random {k}", a) for k, a in enumerate(drawn, 1)]
    cfg = TrainConfig(epochs=opts.train_epochs, seed=opts.seed)
    print(f"training {len(archs)} networks from scratch: {cfg.epochs} epoch(s), lr {cfg.lr}, "
          f"batch {cfg.batch_size}, seed {cfg.seed} ...", flush=True)
    print_results(space, latency, archs, train_all(space, archs, splits, cfg))


if __name__ == "__main__":
    main()
