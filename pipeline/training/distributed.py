"""Running one search on several processes with PyTorch's DistributedDataParallel.

`torchrun --nproc-per-node N pipeline search ...` sets RANK / WORLD_SIZE / LOCAL_RANK; every
process then trains on its shard of each split and DDP averages the gradients (gloo on CPU,
NCCL on GPU). Only rank 0 prints and writes files. Without torchrun this is one process.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from core.errors import PipelineError


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def any(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all processes: every process takes the same branch (stop, diverged)."""
        if not self.distributed:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in t.tolist())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def check_device(device: str, option: str = "--compute") -> None:
    """Refuse a compute device this machine does not have, before any work starts; `option`
    is how the user gave it (the CLI flag, or a config file's key)."""
    if device == "cpu":
        return
    kind, colon, index = device.partition(":")
    if kind != "cuda" or (colon and not (index.isascii() and index.isdigit())):
        raise PipelineError(f"{option} {device}: not a compute device; use cpu, cuda or cuda:N (N = 0, 1, ...)")
    if not torch.cuda.is_available():
        raise PipelineError(f"{option} {device}: no CUDA GPU is available here (torch {torch.__version__}, "
                            f"built with CUDA {torch.version.cuda or 'none'}); use {option} cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise PipelineError(f"{option} {device}: this machine has {torch.cuda.device_count()} GPU(s); "
                            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")


def single_process(what: str) -> None:
    """Refuse, under torchrun, a command that every process would run whole (timing, files)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise PipelineError(f"{what} runs on one process; use torchrun only for 'pipeline search' (without "
                            "--sweep) and run the other steps without it")


@contextlib.contextmanager
def launched(device: str) -> Iterator[Context]:
    """The process group torchrun asked for (or a single process), torn down afterwards."""
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Context(device=device)
        return
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield Context(rank, world, device)
    finally:
        dist.destroy_process_group()
