"""The super-net search: W on the W split, Θ on the Θ split, after W-only warm-up epochs.

A run is resumable at any step: a checkpoint is written after every epoch and on Ctrl-C, and
every random draw (batch order, Gumbel noise, sampled paths, and what blocks draw from torch's,
numpy's and Python's global generators: dropout, noise) is a function of the seed and the saved
generator states, so `--resume` reaches the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from benchmarks.predict import LatencyModel
from blocks.mixing import MIXERS, MixingOptions
from blocks.network import SuperNet
from blocks.space import SearchSpace
from pipeline.training.checkpoint import load_checkpoint, save_checkpoint
from pipeline.training.data import Splits
from pipeline.training.distributed import Context
from core.errors import PipelineError
from pipeline.training.losses import LOSSES, LossOptions
from pipeline.training.loop import EVAL_BATCH, evaluate
from pipeline.training.memory import Setting, check_memory

log = logging.getLogger(__name__)

# λ where the config leaves it unset, per latency term ('mul' uses a and b instead).
DEFAULT_LAM = {"add": 0.1, "log": 0.1, "target": 1.0}


@dataclass(frozen=True)
class SearchConfig:
    epochs: int = 10
    # None: the mixing strategy's recipe (softmax and sampled: 20% of the epochs; gumbel: 50%).
    warmup_epochs: int | None = None  # W-only epochs before Θ starts moving
    batch_size: int = 64  # per process
    w_lr: float = 0.05
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    # None: the strategy's recipe. FBNet used Adam at 0.01 over ~10^4 Θ steps (gumbel's default);
    # a laptop-sized softmax search takes ~10^2, so its default is 0.05 for Θ to move as far.
    theta_lr: float | None = None
    theta_weight_decay: float = 5e-4  # FBNet
    loss: str | None = None  # None: 'target' with a latency target, else 'mul'
    lam: float | None = None  # None: DEFAULT_LAM for the loss (and None for 'mul', which has no λ)
    a: float = 0.2
    b: float = 0.6
    latency_target: float | None = None  # ms; the derived architecture must meet it
    mixing: str = "gumbel"
    # The mixers' defaults, kept in one place (MixingOptions says why they are what they are).
    temperature: float = MixingOptions.temperature  # gumbel
    temperature_decay: float = MixingOptions.temperature_decay  # gumbel: τ ← τ·exp(−decay) each epoch
    paths: int = MixingOptions.paths  # sampled: candidates a Θ step runs
    seed: int = 0
    device: str = "cpu"  # torch device the super-net trains on
    amp: bool = True  # bfloat16 autocast on a CUDA GPU that supports it; ignored on CPU
    # Training input size; None = the space's. A smaller size is a proxy that makes a 224x224
    # space searchable on a CPU: the latency term still comes from the table, measured at the
    # space's own resolution, and the networks are fully convolutional.
    resolution: int | None = None

    def __post_init__(self) -> None:
        recipe = MIXERS.get(self.mixing).recipe
        loss = self.loss or ("target" if self.latency_target is not None else "mul")
        LOSSES.get(loss)
        if self.lam is not None and loss == "mul":
            raise PipelineError("search: --lam does not apply to --loss mul (FBNet's a·(log Lat)^b); "
                                "set --a/--b, or use --loss add or --loss log with --lam")
        if self.latency_target is not None and loss != "target":
            raise PipelineError(f"search: --latency-target brings its own latency term; drop --loss {loss}")
        if loss == "target" and self.latency_target is None:
            raise PipelineError("search: --loss target needs --latency-target MS")
        if self.epochs < 1:
            raise PipelineError(f"search: need epochs >= 1 (got {self.epochs})")
        warmup = self.warmup_epochs
        if warmup is None:
            warmup = min(self.epochs - 1, round(recipe.warmup_fraction * self.epochs))
        if not 0 <= warmup < self.epochs:
            raise PipelineError(f"search: need 0 <= warmup_epochs < epochs (got {warmup}, {self.epochs}); "
                                "Θ would never move otherwise")
        for name, value in (("loss", loss), ("warmup_epochs", warmup),
                            ("theta_lr", self.theta_lr if self.theta_lr is not None else recipe.theta_lr),
                            ("lam", self.lam if self.lam is not None else DEFAULT_LAM.get(loss))):
            object.__setattr__(self, name, value)
        if self.resolution is not None and self.resolution < 8:
            raise PipelineError(f"search: resolution {self.resolution} is too small; use 8 or more (or leave it unset)")
        if self.batch_size < 1 or self.w_lr <= 0 or self.theta_lr <= 0:
            raise PipelineError("search: batch_size must be >= 1 and learning rates > 0")
        if (self.lam is not None and self.lam < 0) or self.a <= 0 or self.b <= 0:
            raise PipelineError("search: lam must be >= 0 and a, b > 0")
        if self.latency_target is not None and self.latency_target <= 0:
            raise PipelineError(f"search: --latency-target must be > 0 ms (got {self.latency_target})")
        if self.temperature <= 0 or self.temperature_decay < 0:
            raise PipelineError("search: temperature must be > 0 and temperature_decay >= 0")
        if self.paths < 2:  # Θ's straight-through gradient compares sampled candidates: one has no rival
            raise PipelineError(f"search: --paths must be at least 2 (got {self.paths})")

    @property
    def loss_options(self) -> LossOptions:
        return LossOptions(lam=self.lam or 0.0, a=self.a, b=self.b, target_ms=self.latency_target)

    @property
    def mixing_options(self) -> MixingOptions:
        return MixingOptions(self.temperature, self.temperature_decay, self.paths)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must share with this config to be resumed (where it runs may differ)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("device", "amp")}


@dataclass
class SearchResult:
    supernet: SuperNet
    blocks: tuple[str, ...]
    history: list[dict[str, Any]] = field(default_factory=list)
    supernet_test_acc: float = 0.0
    argmax_blocks: tuple[str, ...] = ()  # before the latency target's projection (== blocks without one)

    def alpha_table(self) -> list[dict[str, float]]:
        """α per layer and block at full precision: rounding would turn near-ties into ties,
        and the argmax could then no longer be read back from the architecture file."""
        return [
            {n: float(a) for n, a in zip(layer.names, alpha)}
            for layer, alpha in zip(self.supernet.layers, (a.detach() for a in self.supernet.alphas()))
        ]


class SearchStopped(PipelineError):
    """Ctrl-C: progress is saved in the checkpoint."""

    exit_code = 130
    label = "interrupted"


@dataclass
class Position:
    """Where a run is: the next step to take, and the running sums of the pass it is in."""

    epoch: int = 0
    phase: str = "W"  # "W" or "theta"
    batch: int = 0
    sums: tuple[float, float, float] = (0.0, 0.0, 0.0)  # loss·n, correct, n
    w: tuple[float, float] | None = None  # W's (loss, accuracy) once its pass of the epoch is done


# A layer is decided when its most likely block's α is at least this times the runner-up's.
DECIDED = 1.5


def alpha_margins(alphas: list[list[float]]) -> list[float]:
    """Per layer, the most likely block's α over the runner-up's: how decided the layer is (1.0 is a tie)."""
    out = []
    for layer in alphas:
        top = sorted(layer, reverse=True)
        out.append(top[0] / top[1] if len(top) > 1 and top[1] > 0 else float("inf"))
    return out


def decided_layers(alpha: list[dict[str, float]]) -> int:
    """How many layers of an α table (SearchResult.alpha_table) are decided (DECIDED)."""
    return sum(m >= DECIDED for m in alpha_margins([list(layer.values()) for layer in alpha]))


def latency_fingerprint(latency: LatencyModel) -> str:
    h = hashlib.sha256()
    for t in latency.per_layer:
        h.update(t.to(torch.float64).numpy().tobytes())
    h.update(repr(latency.fixed_ms).encode())
    return h.hexdigest()[:16]


def target_slack(target_ms: float) -> float:
    """How far a sum of float latencies may exceed the target and still meet it (rounding)."""
    return 1e-9 * max(1.0, abs(target_ms))


def meets_target(predicted_ms: float, target_ms: float) -> bool:
    return predicted_ms <= target_ms + target_slack(target_ms)


def derive_within(space: SearchSpace, alphas: list[torch.Tensor], latency: LatencyModel,
                  target_ms: float) -> tuple[str, ...]:
    """The most likely architecture (max Σ log α) whose predicted latency is at most the target.

    A multiple-choice knapsack, solved exactly: layer by layer, keep every partial choice
    that no other beats on both latency and Σ log α and that can still meet the target.
    That frontier stays small (hundreds to a few thousand states on FBNet's 22 layers).
    """
    logp = [np.log(a.detach().double().cpu().clamp_min(1e-30).numpy()) for a in alphas]
    if not all(np.isfinite(lp).all() for lp in logp):
        raise PipelineError("the search's α are not finite numbers; lower --theta-lr and search again")
    per = [t.double().cpu().numpy() for t in latency.per_layer]
    budget = target_ms - latency.fixed_ms + target_slack(target_ms)
    rest = np.concatenate([np.cumsum([t.min() for t in per][::-1])[::-1], [0.0]])  # fastest remaining
    if rest[0] > budget:
        raise PipelineError(f"latency target {target_ms:.4g} ms cannot be met in space '{space.name}'")
    lat, score = np.zeros(1), np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []  # per layer: (parent state, candidate) of each state
    for l, (lp, t) in enumerate(zip(logp, per)):
        cand_lat = (lat[:, None] + t[None, :]).ravel()
        cand_score = (score[:, None] + lp[None, :]).ravel()
        keep = np.flatnonzero(cand_lat + rest[l + 1] <= budget)
        # Sort by latency, ties by higher score first; keep a state only if it beats the
        # best score of every faster-or-equal state (the Pareto frontier).
        keep = keep[np.lexsort((-cand_score[keep], cand_lat[keep]))]
        best_before = np.maximum.accumulate(np.concatenate([[-np.inf], cand_score[keep]]))[:-1]
        keep = keep[cand_score[keep] > best_before]
        lat, score = cand_lat[keep], cand_score[keep]
        back.append(np.divmod(keep, len(t)))
    state = int(np.argmax(score))
    choice = []
    for parents, picks in reversed(back):
        choice.append(int(picks[state]))
        state = int(parents[state])
    choice.reverse()
    return tuple(space.candidates(l)[j] for l, j in enumerate(choice))


def _loader(ds: Dataset, batch_size: int, seed: int, ctx: Context) -> tuple[DataLoader, DistributedSampler]:
    # The order of epoch e is a function of (seed, e) alone, on one process or several: a
    # resumed run replays it and skips the batches already done.
    sampler = DistributedSampler(ds, num_replicas=ctx.world, rank=ctx.rank, shuffle=True, seed=seed)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, generator=torch.Generator()), sampler


def _loader_seed(seed: int, epoch: int) -> int:
    """The seed of a loader's own generator for one pass (it seeds the pass's worker processes).
    Reseeded per pass rather than restored: a pass resumed part-way starts a new iterator, which
    draws from the generator once more than the uninterrupted pass did."""
    return seed * 1_000_003 + epoch


def seed_everything(seed: int) -> None:
    """Seed every global generator a search step may draw from: the same seed, the same search."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(device: str) -> dict[str, Any]:
    """Every global generator a step may draw from (dropout, a plugin block's noise), as tensors
    and lists, so a checkpoint loads with weights_only=True."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss_next},
    }
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, Any], device: str) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    # A checkpoint written on the CPU and resumed on a GPU has no CUDA state: the GPU's stays as seeded.
    if device.startswith("cuda") and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


class _Searcher:
    """One search run's state: the super-net, its two optimisers, the latency model, the position."""

    def __init__(self, space: SearchSpace, latency: LatencyModel, splits: Splits, cfg: SearchConfig,
                 ctx: Context) -> None:
        seed_everything(cfg.seed)
        self.cfg, self.latency, self.splits, self.ctx = cfg, latency, splits, ctx
        self.net = SuperNet(space, splits.num_classes, cfg.mixing, cfg.mixing_options, cfg.seed).to(ctx.device)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum,
                                     weight_decay=cfg.w_weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, T_max=cfg.epochs)
        self.t_opt = torch.optim.Adam(self.net.arch_parameters(), lr=cfg.theta_lr, weight_decay=cfg.theta_weight_decay)
        self.data = {"W": _loader(splits.w, cfg.batch_size, cfg.seed, ctx),
                     "theta": _loader(splits.theta, cfg.batch_size, cfg.seed + 1, ctx)}
        self.loss_fn = LOSSES.get(cfg.loss)
        # DDP averages gradients over processes. Sampled paths leave most candidates unused in a
        # step, which DDP must be told; W is not frozen in Θ's pass there (DDP's gradient hooks
        # are fixed when it wraps the model), so that pass costs more than on one process.
        self.model: torch.nn.Module = self.net
        if ctx.distributed:
            self.model = DistributedDataParallel(
                self.net, find_unused_parameters=not self.net.mixer.runs_every_candidate)
        # bfloat16 autocast pays where tensor cores take it natively (Ampere, compute capability 8.0, on).
        self.amp = (cfg.amp and ctx.device.startswith("cuda")
                    and torch.cuda.get_device_capability(torch.device(ctx.device)) >= (8, 0))
        self.position = Position()
        self.history: list[dict[str, Any]] = []
        self.stop_requested = False

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        p = self.position
        return {
            "position": {"epoch": p.epoch, "phase": p.phase, "batch": p.batch, "sums": list(p.sums),
                         "w": list(p.w) if p.w else None},
            "history": self.history, "net": self.net.state_dict(), "w_opt": self.w_opt.state_dict(),
            "t_opt": self.t_opt.state_dict(), "sched": self.sched.state_dict(), "mixer": self.net.mixer.state_dict(),
            "rng": rng_state(self.ctx.device),
        }

    def restore(self, d: dict[str, Any]) -> None:
        self.net.load_state_dict(d["net"])
        self.w_opt.load_state_dict(d["w_opt"])
        self.t_opt.load_state_dict(d["t_opt"])
        self.sched.load_state_dict(d["sched"])
        self.net.mixer.load_state_dict(d["mixer"])
        p = d["position"]
        self.position = Position(int(p["epoch"]), str(p["phase"]), int(p["batch"]),
                                 tuple(float(v) for v in p["sums"]), tuple(p["w"]) if p["w"] else None)
        self.history = list(d["history"])
        set_rng_state(d["rng"], self.ctx.device)

    # ------------------------------------------------------------------ steps
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            return self.model(x).float()

    def _check_stop(self) -> None:
        """Honour Ctrl-C before a step touches anything (even BN statistics), on every process alike."""
        if self.ctx.any(self.stop_requested)[0]:
            raise _Stop()

    def _checked(self, loss: torch.Tensor, where: str) -> None:
        """Stop before a non-finite loss reaches the weights, on every process alike."""
        if self.ctx.any(not bool(torch.isfinite(loss.detach())))[0]:
            raise _Diverged(f"loss is {float(loss.detach())} at {where}")

    def w_step(self, x: torch.Tensor, y: torch.Tensor, where: str) -> tuple[float, int]:
        # W sees cross-entropy only: the latency term does not depend on W, and in the
        # multiplicative form it would merely rescale W's learning rate as Θ moves.
        self._check_stop()
        self.net.mixer.arch_step = False
        out = self._forward(x)
        loss = F.cross_entropy(out, y)
        self._checked(loss, where)
        self.w_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.w_opt.step()
        return loss.item(), int((out.argmax(1) == y).sum())

    def theta_step(self, x: torch.Tensor, y: torch.Tensor, where: str) -> tuple[float, int]:
        self._check_stop()
        self.net.mixer.arch_step = True
        out = self._forward(x)
        lat = self.latency.expected(self.net.latency_weights())
        loss = self.loss_fn(F.cross_entropy(out, y), lat, self.cfg.loss_options)
        self._checked(loss, where)
        self.t_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.t_opt.step()
        self.net.mixer.after_theta_step(list(self.net.layers))
        return loss.item(), int((out.argmax(1) == y).sum())

    # ------------------------------------------------------------------ passes
    def _pass(self, phase: str, progress: bool) -> tuple[float, float]:
        """One pass over a split from the current position; the position follows every step."""
        p = self.position
        loader, sampler = self.data[phase]
        sampler.set_epoch(p.epoch)
        loader.generator.manual_seed(_loader_seed(sampler.seed, p.epoch))
        step: Callable = self.w_step if phase == "W" else self.theta_step
        label = "W" if phase == "W" else "Θ"
        bar = tqdm(total=len(loader), initial=p.batch, desc=f"epoch {p.epoch + 1} {label}", leave=False,
                   disable=not progress)
        with bar:
            for i, (x, y) in enumerate(loader):
                if i < p.batch:  # done before the checkpoint
                    continue
                x, y = x.to(self.ctx.device), y.to(self.ctx.device)
                loss, c = step(x, y, f"epoch {p.epoch + 1}, {label} step {i + 1}")
                loss_sum, correct, n = p.sums
                p.sums = (loss_sum + loss * len(y), correct + c, n + len(y))
                p.batch = i + 1
                bar.update(1)
        loss_sum, correct, n = p.sums
        return loss_sum / max(n, 1), correct / max(n, 1)

    def epoch(self, progress: bool) -> dict[str, Any]:
        """FBNet's alternation: one pass of W over the W split, then one of Θ over the Θ split."""
        p = self.position
        self.net.train()
        self.net.mixer.set_epoch(p.epoch)
        if p.phase == "W":
            self.position = p = Position(p.epoch, "theta", 0, w=self._pass("W", progress))
        assert p.w is not None
        w_loss, w_acc = p.w
        t_loss = t_acc = None
        if p.epoch >= self.cfg.warmup_epochs:
            # On one process W needs no gradients in Θ's pass: skipping them saves about a third of the backward.
            frozen = _frozen(self.net.weight_parameters()) if not self.ctx.distributed else contextlib.nullcontext()
            with frozen:
                t_loss, t_acc = self._pass("theta", progress)
        self.sched.step()
        with torch.no_grad():
            lat = float(self.latency.expected(self.net.alphas()))
        h = {
            "epoch": p.epoch + 1, "theta_moved": t_loss is not None, "w_loss": w_loss, "w_acc": w_acc,
            "theta_loss": t_loss, "theta_acc": t_acc, "expected_latency_ms": lat,
            "derived_latency_ms": self.latency.predict(self.net.space, self.net.derive()),
        }
        if self.cfg.mixing == "gumbel":
            h["temperature"] = self.net.mixer.temperature
        self.history.append(h)
        self.position = Position(p.epoch + 1, "W", 0)
        return h


class _Diverged(Exception):
    """A non-finite loss, caught before it reached the weights; the message says where."""


class _Stop(Exception):
    """Ctrl-C was asked for; raised before a step touches anything."""


@contextlib.contextmanager
def _frozen(params: list[torch.nn.Parameter]) -> Iterator[None]:
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def _ctrl_c_requests_stop(searcher: _Searcher) -> Iterator[None]:
    """The first Ctrl-C asks the loop to stop after the current step (so the checkpoint is
    consistent); a second one interrupts at once."""
    try:
        previous = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if searcher.stop_requested:
            raise KeyboardInterrupt
        searcher.stop_requested = True

    try:
        signal.signal(signal.SIGINT, handler)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _epoch_line(h: dict[str, Any]) -> str:
    return (f"epoch {h['epoch']:>3}  W loss {h['w_loss']:.3f}  W acc {h['w_acc']:.3f}  "
            + (f"Θ loss {h['theta_loss']:.3f}  Θ acc {h['theta_acc']:.3f}  " if h["theta_moved"] else "(W only)  ")
            + (f"τ {h['temperature']:.3f}  " if "temperature" in h else "")
            + f"E[lat] {h['expected_latency_ms']:.4f} ms  argmax lat {h['derived_latency_ms']:.4f} ms")


def check_latency_target(space: SearchSpace, latency: LatencyModel, target_ms: float | None) -> None:
    if target_ms is None:
        return
    fastest, _ = latency.bounds()
    if target_ms < fastest:
        raise PipelineError(f"latency target {target_ms:g} ms is below the fastest architecture of space "
                            f"'{space.name}' under this table ({fastest:.4g} ms); ask for at least {fastest:.4g} ms")


def run_search(space: SearchSpace, latency: LatencyModel, splits: Splits, cfg: SearchConfig,
               progress: bool = True, checkpoint: Path | None = None, resume: bool = False,
               ctx: Context | None = None, identity: dict[str, Any] | None = None) -> SearchResult:
    """Train the super-net against `latency` and derive argmax_j α_j^(l) in every layer (within
    the latency target, when there is one). With `checkpoint`, progress is saved there after
    every epoch and on Ctrl-C; `resume` continues from it."""
    ctx = ctx or Context(device=cfg.device)
    check_latency_target(space, latency, cfg.latency_target)
    _check_memory(space, splits, cfg, ctx)
    s = _Searcher(space, latency, splits, cfg, ctx)
    ident = {"space": space.fingerprint, "latency": latency_fingerprint(latency), "config": cfg.identity(),
             "processes": ctx.world, **(identity or {})}
    saver = _Saver(s, checkpoint, ident, resume)
    _train_all_epochs(s, saver, progress and ctx.is_main)
    argmax = s.net.derive()
    blocks = argmax
    if cfg.latency_target is not None:
        blocks = derive_within(space, [a.detach() for a in s.net.alphas()], latency, cfg.latency_target)
    acc = evaluate(s.net, splits.test, ctx.device) if ctx.is_main else 0.0
    return SearchResult(s.net, blocks, s.history, acc, argmax)


def _check_memory(space: SearchSpace, splits: Splits, cfg: SearchConfig, ctx: Context) -> None:
    """Refuse, before training, a search the machine's memory cannot hold (on every process alike).
    GPU memory is not estimated: CUDA says itself when it runs out."""
    if not ctx.device.startswith("cpu"):
        return
    setting = Setting(space, splits.num_classes, cfg.resolution or space.resolution, cfg.batch_size, cfg.mixing,
                      cfg.paths, ctx.world, min(EVAL_BATCH, len(splits.test)))
    refused: PipelineError | None = None
    try:
        check_memory(setting)
    except PipelineError as e:
        refused = e
    if ctx.any(refused is not None)[0]:
        e = refused or PipelineError("search: another process of this search has not the memory it needs")
        e.quiet = not ctx.is_main
        raise e


class _Saver:
    """The search's checkpoint: restored on --resume, written after every epoch (by rank 0), and
    described in words for the messages that say what a stop keeps."""

    def __init__(self, s: _Searcher, path: Path | None, ident: dict[str, Any], resume: bool) -> None:
        self.s, self.path, self.ident = s, path, ident
        # Which checkpoint of this search is on disk (an earlier search's does not count).
        self.saved: str | None = None
        if resume:
            assert path is not None
            s.restore(load_checkpoint(path, ident))
            self.saved = "the checkpoint --resume started from"
        elif path is not None and path.exists() and s.ctx.is_main:
            log.warning("starting over: '%s' holds an earlier search's checkpoint (use --resume to continue it)", path)

    def save(self) -> None:
        if self.path is None:
            return
        if self.s.ctx.is_main:
            save_checkpoint(self.path, self.ident, self.s.state())
        self.saved = f"the checkpoint after epoch {self.s.position.epoch}"

    def stopped(self, message: str, kind: type[PipelineError] = PipelineError) -> PipelineError:
        """The error every process raises alike; only rank 0's is printed."""
        e = kind(message)
        e.quiet = not self.s.ctx.is_main
        return e

    def on_ctrl_c(self) -> PipelineError:
        """The first Ctrl-C: stop after the step in progress, save, say how to go on."""
        self.save()
        self.s.ctx.barrier()  # no process exits (and has torchrun stop the rest) before rank 0 has saved
        p = self.s.position
        where = f"epoch {p.epoch + 1}, {'W' if p.phase == 'W' else 'Θ'} step {p.batch + 1}"
        if self.path is None:
            return self.stopped(f"search stopped at {where} (no checkpoint was asked for)", SearchStopped)
        return self.stopped(f"search stopped at {where}: progress saved to '{self.path}'; run the same command "
                            "with --resume to continue", SearchStopped)

    def on_diverged(self, e: Exception) -> PipelineError:
        last = f"; {self.saved}, the last good one, is kept at '{self.path}'" if self.saved else ""
        return self.stopped(f"search stopped: {e}{last}; lower --w-lr / --theta-lr and search again")

    def on_second_ctrl_c(self) -> PipelineError:
        kept = (f"{self.saved} is kept at '{self.path}'; run the same command with --resume to continue from it"
                if self.saved else "nothing was saved")
        return self.stopped(f"search interrupted at once by a second Ctrl-C: {kept}", SearchStopped)


def _train_all_epochs(s: _Searcher, saver: _Saver, progress: bool) -> None:
    """The epochs left, each saved when done; a stop becomes the one-line error that says what is kept."""
    for h in s.history:
        if progress:
            tqdm.write(_epoch_line(h) + "  (from checkpoint)")
    bar = tqdm(total=s.cfg.epochs, initial=s.position.epoch, desc="search", unit="epoch", disable=not progress)
    with bar, _ctrl_c_requests_stop(s):
        try:
            while s.position.epoch < s.cfg.epochs:
                try:
                    h = s.epoch(progress)
                except _Stop:
                    raise saver.on_ctrl_c() from None
                except _Diverged as e:
                    raise saver.on_diverged(e) from None
                saver.save()
                bar.update(1)
                bar.set_postfix(acc=f"{h['w_acc']:.3f}", lat=f"{h['expected_latency_ms']:.3f}ms")
                if progress:
                    tqdm.write(_epoch_line(h))
        except KeyboardInterrupt:  # a second Ctrl-C, wherever it lands (even mid-save: writes are atomic)
            raise saver.on_second_ctrl_c() from None
