"""A search's peak memory, estimated before it trains, against the memory this machine has.

The estimate is the process's memory now (the interpreter, the libraries and the data, already
loaded) plus what training adds: the super-net's weights with their gradients and momentum, and
the activations autograd saves for backward, which grow with the batch and the candidates a step
runs. Those are counted on a probe: the super-net's layers run one sample, at the training
resolution, candidate by candidate, under saved-tensor hooks. One probe gives every mixing
strategy's step (softmax and gumbel run every candidate; sampled one, or `paths` in a Θ step,
counted at the heaviest), and any batch size (saved bytes are per sample). The factors that turn
these counts into resident memory were measured against the peak RSS of real searches
(`perf/search_memory.py`, docs/search.md "Memory").

A search that would not fit is refused before it starts, naming settings that would fit: the
kernel's OOM killer ends an oversized search with no message at all, after it has taken the
machine's memory from everything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from blocks.network import SuperNet
from blocks.space import SearchSpace
from core.errors import PipelineError
from pipeline.training.loop import (
    EVAL_BATCH,  # the test split runs through the super-net at this batch
)

log = logging.getLogger(__name__)

MEMORY_ENV = "PIPELINE_MEMORY_AVAILABLE"  # bytes a search may use ("12G", "800M"), or "off": no check
GiB = 2.0**30
# Resident bytes per byte counted, fitted on real searches' peak RSS (perf/search_memory.py):
# gradients and SGD momentum beside every weight; backward's transient gradients of the
# activations and the allocator's slack beside the saved ones.
WEIGHT_FACTOR = 3.0
ACTIVATION_FACTOR = 1.6
RESOLUTIONS = (192, 160, 128, 112, 96, 64, 48, 32, 16)  # what a refusal may propose instead


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward, parameters and buffers excluded."""

    def __init__(self, resident: Iterable[torch.Tensor]) -> None:
        self.resident = {t.untyped_storage().data_ptr() for t in resident}
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        # Several nodes save the same tensor (every candidate saves its layer's input): count it once.
        if storage.data_ptr() not in self.resident:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    def total(self) -> int:
        return sum(self.storages.values())


def _saved(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
           resident: Iterable[torch.Tensor]) -> tuple[torch.Tensor, int]:
    saved = SavedBytes(resident)
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        out = fn(x)
    return out, saved.total()


@dataclass(frozen=True)
class LayerCost:
    """One super-net layer, per sample: its input (saved once, by whichever candidates run), what
    each candidate saves besides it, and its output (a weighted sum saves each candidate's)."""

    input_bytes: int
    candidates: tuple[int, ...]
    output_bytes: int


@dataclass(frozen=True)
class Probe:
    resolution: int
    weight_bytes: int  # the super-net's parameters and buffers
    fixed_bytes: int  # stem and head, per sample
    layers: tuple[LayerCost, ...]
    eval_bytes: int  # per sample, the most alive at once in an evaluation pass (no autograd)

    def saved_per_sample(self, mixing: str, paths: int = 2) -> int:
        """Saved-for-backward bytes of one sample in the heaviest step of `mixing`."""
        def step(run: Callable[[tuple[int, ...]], tuple[int, ...]], weighted: bool) -> int:
            total = self.fixed_bytes
            for layer in self.layers:
                ran = run(layer.candidates)
                total += layer.input_bytes + sum(ran) + (len(ran) * layer.output_bytes if weighted else 0)
            return total

        if mixing == "sampled":  # a W step runs one path, a Θ step `paths`, gated: the heaviest ones
            return max(step(lambda c: (max(c),), False), step(lambda c: tuple(sorted(c)[-paths:]), True))
        return step(lambda c: c, True)


@dataclass(frozen=True)
class Estimate:
    baseline: int  # the process now
    weights: int
    activations: int
    evaluation: int

    @property
    def added(self) -> int:
        """What training adds to the process at its peak."""
        return self.weights + max(self.activations, self.evaluation)

    @property
    def peak(self) -> int:
        return self.baseline + self.added


def probe(net: SuperNet, resolution: int) -> Probe:
    """Run one sample through `net` (a fresh super-net: the probe moves its BN statistics), layer
    by layer and candidate by candidate, counting what autograd saves."""
    space = net.space
    resident = [*net.parameters(), *net.buffers()]
    weight_bytes = sum(t.untyped_storage().nbytes() for t in resident)
    # Two samples, halved: batch norm refuses a batch of one where a layer's output is 1x1.
    with _one_thread(), _biggest_outputs(net) as biggest:
        x = torch.zeros(2, space.in_channels, resolution, resolution)
        x, fixed = _saved(net.stem, x, resident)
        layers = []
        for layer in net.layers:
            inner = [*resident, x]
            outs_and_bytes = [_saved(c, x, inner) for c in layer.candidates]
            out = outs_and_bytes[0][0]
            layers.append(LayerCost(_nbytes(x) // 2, tuple(b // 2 for _, b in outs_and_bytes), _nbytes(out) // 2))
            x = out
        _, head = _saved(lambda t: net.classifier(net.feature_mix(net.head_conv(t))), x, resident)
    eval_bytes = (max(biggest) + 2 * max((l.output_bytes * 2 for l in layers), default=0)) // 2
    return Probe(resolution, weight_bytes, (fixed + head) // 2, tuple(layers), eval_bytes)


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """So small a batch runs faster on one thread than waiting for several on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _biggest_outputs(net: nn.Module) -> Iterator[list[int]]:
    """Filled while the block runs: each leaf module's input plus output bytes, the most an
    evaluation pass holds at once inside one layer besides the layer's running sum."""
    sizes: list[int] = [0]

    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            sizes.append(_nbytes(args[0]) + _nbytes(out))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        yield sizes
    finally:
        for h in handles:
            h.remove()


def estimate(p: Probe, batch_size: int, mixing: str, paths: int = 2, baseline: int = 0,
             eval_batch: int = EVAL_BATCH) -> Estimate:
    """The peak of a search with probe `p`'s resolution, `batch_size` and `mixing`."""
    activations = ACTIVATION_FACTOR * batch_size * p.saved_per_sample(mixing, paths)
    return Estimate(baseline, int(WEIGHT_FACTOR * p.weight_bytes), int(activations), eval_batch * p.eval_bytes)


def parse_bytes(text: str) -> int:
    """'12G', '800M', '64k' or a plain number of bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not m:
        raise PipelineError(f"{MEMORY_ENV}={text!r} is not an amount of memory; give bytes or a size like 12G or "
                            "800M, or 'off' to skip the search's memory check")
    return int(float(m.group(1)) * 1024 ** (" kmgt".find(m.group(2).lower()) if m.group(2) else 0))


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _cgroup_room() -> int | None:
    """What this process's memory cgroup still allows (v2, else v1), or None without a limit."""
    for limit, usage in ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                         (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                          Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))):
        cap, used = _read_int(limit), _read_int(usage)
        if cap is not None and used is not None and cap < 2**60:  # 'max' or v1's huge number: no limit
            return max(cap - used, 0)
    return None


def available() -> int | None:
    """Bytes a search may still take: MEMORY_ENV where set, else the least of the kernel's
    MemAvailable and the cgroup's room; None where neither is known or the check is off."""
    value = os.environ.get(MEMORY_ENV, "").strip()
    if value.lower() == "off":
        return None
    if value:
        return parse_bytes(value)
    try:
        text = Path("/proc/meminfo").read_text()
        found = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    except OSError:
        found = None
    known = [v for v in (int(found.group(1)) * 1024 if found else None, _cgroup_room()) if v is not None]
    return min(known) if known else None


def current_rss() -> int:
    """This process's resident bytes now (Linux); 0 where /proc is missing."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass(frozen=True)
class Setting:
    """What a search would train with; the memory check's input."""

    space: SearchSpace
    num_classes: int
    resolution: int
    batch_size: int
    mixing: str
    paths: int = 2
    processes: int = 1  # on this machine, each with its own copy
    eval_batch: int = EVAL_BATCH  # the test split's first batch through the super-net


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def check_memory(s: Setting) -> Estimate | None:
    """The estimate, or a PipelineError naming settings that fit where the search would not;
    None where the memory available is not known (or MEMORY_ENV is 'off')."""
    room = available()
    if room is None:
        return None
    baseline = current_rss()
    net = SuperNet(s.space, s.num_classes)
    p = probe(net, s.resolution)
    e = estimate(p, s.batch_size, s.mixing, s.paths, baseline, s.eval_batch)
    log.info("memory: a search of batch %d at %dx%d with %s mixing needs about %.3f GiB at its peak (%.3f GiB "
             "now), in each of %d process(es); %.3f GiB available", s.batch_size, s.resolution, s.resolution, s.mixing,
             e.peak / GiB, baseline / GiB, s.processes, room / GiB)
    if s.processes * e.added <= room:
        return e
    fits = _what_fits(net, p, s, room)
    offer = f"these would fit: {', '.join(fits)}" if fits else "no smaller --resolution, --batch-size or mixing fits"
    raise PipelineError(
        f"search: batch {s.batch_size} at {s.resolution}x{s.resolution} with {s.mixing} mixing needs about "
        f"{_gib(s.processes * e.added)} more memory at its peak (estimated), {_gib(room)} is available; {offer} "
        f"({MEMORY_ENV}=off skips this check)")


def _what_fits(net: SuperNet, p: Probe, s: Setting, room: int) -> list[str]:
    """The largest resolution, the largest batch, and sampled mixing, each alone, that fit in `room`."""
    fits = []
    per_process = room / s.processes
    for r in (r for r in RESOLUTIONS if r < s.resolution):
        e = estimate(probe(net, r), s.batch_size, s.mixing, s.paths, eval_batch=s.eval_batch)
        if e.added <= per_process:
            fits.append(f"--resolution {r} (about {_gib(s.processes * e.added)})")
            break
    one = estimate(p, 1, s.mixing, s.paths, eval_batch=s.eval_batch)
    per_sample = ACTIVATION_FACTOR * p.saved_per_sample(s.mixing, s.paths)
    batch = int((per_process - one.weights) // per_sample)
    if 1 <= batch < s.batch_size and one.weights + one.evaluation <= per_process:
        fits.append(f"--batch-size {batch} (about {_gib(s.processes * estimate(p, batch, s.mixing, s.paths, eval_batch=s.eval_batch).added)})")
    if s.mixing != "sampled":
        e = estimate(p, s.batch_size, "sampled", s.paths, eval_batch=s.eval_batch)
        if e.added <= per_process:
            fits.append(f"--mixing sampled (about {_gib(s.processes * e.added)})")
    return fits
