"""The search stage: the super-net searched against a device's latency table, the derived
architecture and its inherited weights written, or a Pareto sweep of searches."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.device import HOST_DEVICE
from benchmarks.predict import LatencyModel
from benchmarks.table import LatencyTable, find_table
from benchmarks.targets import Target
from blocks.architecture import Architecture
from blocks.space import SearchSpace
from core.fileio import output_lock
from core.workspace import Workspace, weights_path
from pipeline.training import distributed
from pipeline.training.data import Splits
from pipeline.training.loop import TrainConfig, evaluate, loader
from pipeline.training.search import (SearchConfig, SearchResult, check_latency_target, decided_layers, meets_target,
                                       run_search)
from pipeline.training.sweep import SweepReport, SweepSpec
from pipeline.training.sweep import sweep as run_sweep
from pipeline.training.weights import save_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchReport:
    architecture: Architecture
    path: Path
    result: SearchResult
    predicted_ms: float
    derived_test_acc: float

    def to_dict(self) -> dict[str, Any]:
        """`search --json`: the figures the text report prints."""
        info = self.architecture.info
        lat, table = info["latency"], info["table"]
        return {"architecture": str(self.path), "space": self.architecture.space.name,
                "blocks": list(self.architecture.blocks), "alpha": info["alpha"],
                "predicted_ms": self.predicted_ms, "predictor": lat["predictor"],
                "target": table["target"], "device": table["device"], "table": table["path"],
                "space_fastest_ms": lat["space_fastest_ms"], "space_slowest_ms": lat["space_slowest_ms"],
                "latency_target": info.get("latency_target"),
                "decided_layers": decided_layers(info["alpha"]),
                "supernet_test_accuracy": info["supernet_test_accuracy"],
                "derived_test_accuracy": self.derived_test_acc}


@torch.no_grad()
def recalibrate_bn(net: torch.nn.Module, splits: Splits, device: str, batch_size: int = 128) -> None:
    """Re-estimate BN statistics of inherited weights: inside the super-net each block saw a
    mixture's inputs, so its running statistics do not fit the derived network."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
    net.train()
    for x, _ in loader(splits.w, batch_size, shuffle=False):
        net(x.to(device))
    net.eval()


def search(space: SearchSpace, target: Target, ws: Workspace, cfg: SearchConfig, splits: Splits,
           device: str = HOST_DEVICE, table_path: Path | None = None, out: Path | None = None,
           progress: bool = True, resume: bool = False) -> SearchReport | None:
    """Search against the (target, device) table; under torchrun every process trains and rank 0
    alone writes the checkpoint, the architecture and its weights (other ranks return None)."""
    table, tpath = find_table(space, target.name, ws, device, table_path, target.measurable_here())
    latency = LatencyModel.from_table(table, space)
    if splits.num_classes != space.num_classes:
        log.info("data has %d classes, space '%s' %d: the classifier row of the table is for %d",
                 splits.num_classes, space.name, space.num_classes, space.num_classes)
    out = out or ws.architecture(space.name, target.name, device)
    checkpoint = checkpoint_path(out)
    data_identity = {"source": splits.source, "classes": splits.num_classes,
                     "w": len(splits.w), "theta": len(splits.theta), "test": len(splits.test)}
    with distributed.launched(cfg.device) as ctx, writing_alone(out, "search", ctx.is_main):
        result = run_search(space, latency, splits, cfg, progress, checkpoint, resume, ctx, {"data": data_identity})
        if not ctx.is_main:
            return None
        return _derive_and_save(space, latency, table, tpath, cfg, splits, result, out, data_identity, ctx.device)


def refuse_if_written(out: Path, what: str) -> None:
    """Refuse now (one line) where another search is writing `out`: for a caller with minutes of
    work to do before its search takes the lock for good."""
    with writing_alone(out, what):
        return


def writing_alone(out: Path, what: str, writes: bool = True) -> contextlib.AbstractContextManager:
    """The lock on what a search writes (`out` and the files named after it), held by the process
    that writes them (rank 0 under torchrun): a second search into the same place is refused at
    once (docs/search.md, "Faults")."""
    if not writes:
        return contextlib.nullcontext()
    return output_lock(out, what, "write elsewhere: another --out or --device")


def checkpoint_path(arch_path: Path) -> Path:
    return arch_path.with_name(arch_path.stem + ".checkpoint.pt")


def _derive_and_save(space: SearchSpace, latency: LatencyModel, table: LatencyTable, tpath: Path, cfg: SearchConfig,
                     splits: Splits, result: SearchResult, out: Path, data_identity: dict[str, Any],
                     compute: str) -> SearchReport:
    derived = result.supernet.get_active_subnet(result.blocks).to(compute)
    recalibrate_bn(derived, splits, compute)
    derived_acc = evaluate(derived, splits.test, compute)
    predicted = latency.predict(space, result.blocks)
    fastest, slowest = latency.bounds()
    info: dict[str, Any] = {
        "predicted_latency_ms": predicted,
        "latency": {"predictor": latency.name, "fixed_ms": latency.fixed_ms,
                    "space_fastest_ms": fastest, "space_slowest_ms": slowest},
        "table": {"path": str(tpath), "sha256": _sha256(tpath), "target": table.target,
                  "device": table.device, "host": table.provenance.get("host")},
        "alpha": result.alpha_table(),
        "search": cfg.to_dict(),
        "data": data_identity,
        "labels": list(splits.classes),  # the exported model's class labels (export.app)
        "supernet_test_accuracy": result.supernet_test_acc,
        "inherited_test_accuracy": derived_acc,
        "history": result.history,
    }
    if cfg.latency_target is not None:
        changed = [i for i, (a, b) in enumerate(zip(result.argmax_blocks, result.blocks)) if a != b]
        info["latency_target"] = {"target_ms": cfg.latency_target, "met": meets_target(predicted, cfg.latency_target),
                                  "argmax_latency_ms": latency.predict(space, result.argmax_blocks),
                                  "layers_changed_to_meet_it": changed}
    arch = Architecture(space, result.blocks, info)
    save_weights(weights_path(out, "supernet"), derived.cpu(), "supernet", derived_acc)
    arch.save(out)
    return SearchReport(arch, out, result, predicted, derived_acc)


def sweep_search(space: SearchSpace, target: Target, ws: Workspace, base: dict[str, Any], spec: SweepSpec,
                 splits: Splits, train_cfg: TrainConfig, random_n: int, device: str = HOST_DEVICE,
                 table_path: Path | None = None, progress: bool = True) -> SweepReport:
    """`pipeline search --sweep`: one search per value, each trained briefly, beside random ones."""
    table, _ = find_table(space, target.name, ws, device, table_path, target.measurable_here())
    latency = LatencyModel.from_table(table, space)
    if spec.field == "latency_target":
        for value in spec.values:
            check_latency_target(space, latency, value)
    out = ws.search_dir(space.name, target.name, device) / "sweep"
    with writing_alone(out, "search --sweep"):
        return run_sweep(space, latency, splits, base, spec, train_cfg, random_n, out, progress)



def sweep_dict(r: SweepReport) -> dict[str, Any]:
    """`search --sweep --json`: every point, the Pareto front's labels and the files written."""
    points = [{"kind": p.kind, "label": p.label, "blocks": list(p.blocks), "predicted_ms": p.predicted_ms,
               "accuracy": p.accuracy, "pareto": p.pareto} for p in r.points]
    return {"points": points, "front": [p.label for p in r.front], "files": {k: str(v) for k, v in r.files.items()}}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
