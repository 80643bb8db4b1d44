"""A Pareto sweep: one search per λ or latency target, each derived network trained briefly from
scratch, beside random architectures of the same space trained with the same recipe.

Every finished point is written to `sweep.json` at once, so an interrupted sweep resumes
where it stopped: a point is reused when its search and training settings are unchanged.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.predict import LatencyModel, arch_key
from blocks.architecture import Architecture, random_architectures
from blocks.space import SearchSpace
from core.config import MAX_MS, build_config, short
from pipeline.training.data import Splits
from core.errors import PipelineError
from core.fileio import read_json, write_json_atomic, write_text_atomic, write_with
from pipeline.training.search import SearchConfig, latency_fingerprint, run_search
from pipeline.training.loop import TrainConfig, fresh_network, train_network

log = logging.getLogger(__name__)

# What users type after --sweep, and the search config field each one sets.
SWEEP_PARAMS = {"lam": "lam", "latency-target": "latency_target"}


@dataclass(frozen=True)
class SweepSpec:
    param: str  # a key of SWEEP_PARAMS
    values: tuple[float, ...]

    @property
    def field(self) -> str:
        return SWEEP_PARAMS[self.param]


def parse_sweep(text: str) -> SweepSpec:
    """'lam=0.01,0.1,1' or 'latency-target=3,4,5'."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("_", "-")
    given, usage = f"--sweep {short(text)}", "use --sweep lam=0.01,0.1,1 or --sweep latency-target=20,25,30"
    if not sep or name not in SWEEP_PARAMS:
        raise PipelineError(f"{given}: sweeps {' or '.join(SWEEP_PARAMS)}; {usage}")
    try:
        parsed = tuple(float(v) for v in values.split(",") if v.strip())
    except ValueError:
        raise PipelineError(f"{given}: values must be numbers; {usage}") from None
    target = name == "latency-target"
    bad = [v for v in parsed if not (math.isfinite(v) and (0 < v < MAX_MS if target else v >= 0))]
    if bad:
        valid = f"milliseconds above 0 and below {MAX_MS:,.0f}" if target else "finite numbers from 0 up"
        raise PipelineError(f"{given}: {bad[0]:g} is out of range; {name} values are {valid}; {usage}")
    if len(parsed) < 2 or len(set(parsed)) != len(parsed):
        raise PipelineError(f"{given}: give at least two different values; {usage}")
    return SweepSpec(name, parsed)


@dataclass(frozen=True)
class SweepPoint:
    kind: str  # "search" or "random"
    label: str  # "lam=0.1", "latency-target=4", "random 3"
    blocks: tuple[str, ...]
    predicted_ms: float
    accuracy: float
    pareto: bool = False


@dataclass
class SweepReport:
    points: list[SweepPoint]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def front(self) -> list[SweepPoint]:
        return sorted((p for p in self.points if p.pareto), key=lambda p: p.predicted_ms)


def mark_pareto(points: list[SweepPoint]) -> list[SweepPoint]:
    """Flag the points no other point beats on both latency (lower) and accuracy (higher)."""
    def dominated(p: SweepPoint) -> bool:
        return any(q.predicted_ms <= p.predicted_ms and q.accuracy >= p.accuracy
                   and (q.predicted_ms < p.predicted_ms or q.accuracy > p.accuracy) for q in points)
    return [SweepPoint(p.kind, p.label, p.blocks, p.predicted_ms, p.accuracy, not dominated(p)) for p in points]


def _train(space: SearchSpace, blocks: tuple[str, ...], splits: Splits, cfg: TrainConfig) -> float:
    return train_network(fresh_network(space, blocks, splits.num_classes, cfg.seed), splits, cfg, progress=False)


def sweep_identity(space: SearchSpace, latency: LatencyModel, splits: Splits, train_cfg: TrainConfig) -> dict[str, Any]:
    """What the points saved in sweep.json depend on besides their own search config."""
    return {"space": space.fingerprint, "latency": latency_fingerprint(latency), "train": asdict(train_cfg),
            # the input shape too: the same data at another --resolution trains other networks
            "data": [splits.source, len(splits.w), len(splits.theta), len(splits.test), list(splits.w[0][0].shape)]}


def sweep(space: SearchSpace, latency: LatencyModel, splits: Splits, base: dict[str, Any], spec: SweepSpec,
          train_cfg: TrainConfig, random_n: int, out_dir: Path, progress: bool = True) -> SweepReport:
    """Run the sweep into `out_dir` (sweep.json, sweep.csv, sweep.png, one architecture per point)."""
    configs = [build_config(SearchConfig, {**base, spec.field: v}, "search config") for v in spec.values]
    identity = sweep_identity(space, latency, splits, train_cfg)
    state_path = out_dir / "sweep.json"
    done = _previous(state_path, identity)
    points: list[SweepPoint] = []

    def record(key: str, point: SweepPoint, search_cfg: dict[str, Any] | None) -> None:
        points.append(point)
        done[key] = {**asdict(point), "blocks": list(point.blocks), "search": search_cfg}
        write_json_atomic(state_path, {"identity": identity, "points": done})

    jobs = len(configs) + random_n
    bar = tqdm(total=jobs, desc="sweep", unit="net", disable=not progress)
    with bar:
        for value, cfg in zip(spec.values, configs):
            label = f"{spec.param}={value:g}"
            key = f"search {cfg.to_dict()}"
            if key in done:
                points.append(_point(done[key]))
            else:
                bar.set_postfix_str(f"search {label}")
                r = run_search(space, latency, splits, cfg, progress=False)
                bar.set_postfix_str(f"train {label}")
                acc = _train(space, r.blocks, splits, train_cfg)
                point = SweepPoint("search", label, r.blocks, latency.predict(space, r.blocks), acc)
                Architecture(space, r.blocks, {"predicted_latency_ms": point.predicted_ms, "sweep_test_accuracy": acc,
                                               "search": cfg.to_dict(), "alpha": r.alpha_table()}
                             ).save(out_dir / f"{label}.json")
                record(key, point, cfg.to_dict())
            bar.update(1)
        exclude = {arch_key(p.blocks) for p in points}
        for i, blocks in enumerate(random_architectures(space, random_n, train_cfg.seed, exclude, "--sweep-random")):
            key = f"random {arch_key(blocks)}"
            if key in done:
                points.append(_point(done[key]))
            else:
                bar.set_postfix_str(f"train random {i + 1}")
                acc = _train(space, blocks, splits, train_cfg)
                record(key, SweepPoint("random", f"random {i + 1}", blocks, latency.predict(space, blocks), acc), None)
            bar.update(1)
    report = SweepReport(mark_pareto(points))
    report.files = _write(report, out_dir, spec)
    write_json_atomic(state_path, {"identity": identity, "points": done,
                                   "pareto_front": [p.label for p in report.front]})
    return report


def _previous(path: Path, identity: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        data = read_json(path, "sweep file")
    except PipelineError as e:
        log.warning("%s; starting the sweep over", e)
        return {}
    if data.get("identity") != identity:
        log.warning("'%s' is from a sweep with another space, table, data or training recipe; starting over", path)
        return {}
    return dict(data.get("points", {}))


def _point(d: dict[str, Any]) -> SweepPoint:
    return SweepPoint(d["kind"], d["label"], tuple(d["blocks"]), float(d["predicted_ms"]), float(d["accuracy"]))


def _write(report: SweepReport, out_dir: Path, spec: SweepSpec) -> dict[str, Path]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["kind", "label", "predicted_ms", "accuracy", "pareto", "blocks"])
    for p in report.points:
        w.writerow([p.kind, p.label, f"{p.predicted_ms:.6f}", f"{p.accuracy:.6f}", int(p.pareto), " ".join(p.blocks)])
    files = {"csv": out_dir / "sweep.csv", "plot": out_dir / "sweep.png", "json": out_dir / "sweep.json"}
    write_text_atomic(files["csv"], buf.getvalue())
    _plot(report, files["plot"], spec)
    return files


def _plot(report: SweepReport, path: Path, spec: SweepSpec) -> None:
    # The object API with no pyplot: no global backend or figure state; savefig renders with Agg.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    rand = [p for p in report.points if p.kind == "random"]
    found = [p for p in report.points if p.kind == "search"]
    ax.scatter([p.predicted_ms for p in rand], [p.accuracy for p in rand], c="0.6", s=22, label="random architectures")
    ax.scatter([p.predicted_ms for p in found], [p.accuracy for p in found], c="tab:blue", s=40, zorder=3,
               label=f"searched ({spec.param})")
    labels: dict[tuple[float, float], list[str]] = {}  # values that derived the same network share a label
    for p in found:
        labels.setdefault((p.predicted_ms, p.accuracy), []).append(p.label.split("=")[1])
    for xy, names in labels.items():
        ax.annotate(", ".join(names), xy, textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = report.front
    ax.step([p.predicted_ms for p in front], [p.accuracy for p in front], where="post", c="tab:red", lw=1.2,
            zorder=2, label="Pareto front")
    ax.scatter([p.predicted_ms for p in front], [p.accuracy for p in front], facecolors="none",
               edgecolors="tab:red", s=90, zorder=4)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("held-out accuracy (trained from scratch)")
    ax.set_title("accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
