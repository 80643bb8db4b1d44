"""The derived network at an 8-bit precision: calibrated on the user's training data, judged
against its float model on the held-out split, and written only when it keeps the goal
(`export.verify.QuantGoal`)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks.targets import Target
from blocks.architecture import Architecture
from core.errors import PipelineError
from export.app import AppInterface
from export.base import Artifact, Exporter
from export.quantize import Inputs, Quantization
from export.verify import QuantGoal, QuantQuality, quantized_quality
from pipeline.training.data import Splits, load_data, searched_source

# Enough images that every class shows up in the activations' ranges, few enough that a
# calibration takes seconds (ONNX Runtime's and PT2E's observers run the model once per sample).
CALIBRATION_SAMPLES = 64
# Fewer images than this leave activation ranges to chance: a class or two sets every range.
MIN_CALIBRATION = 8


@dataclass(frozen=True)
class QuantizeConfig:
    goal: QuantGoal = QuantGoal()
    samples: int = CALIBRATION_SAMPLES
    data: str | None = None  # None: the data the search used (the architecture records it)


@dataclass(frozen=True)
class QuantizedExport:
    artifact: Artifact
    quantization: Quantization
    quality: QuantQuality | None  # None where the target's runtime cannot run here
    not_checked_because: str | None = None


def splits_for(arch: Architecture, data: str | None) -> Splits:
    """The splits the search saw (its data source and seed), at the exported input size."""
    source = searched_source(arch.info, data)
    seed = int(arch.info.get("search", {}).get("seed", 0))
    return load_data(source, arch.space.resolution, arch.space.in_channels, seed)


def calibration_from(train: Dataset, n: int) -> list[Inputs]:
    """`n` training images, one batch of one each, spread evenly over the split."""
    if len(train) == 0:
        raise PipelineError("the training split is empty: no images to calibrate an 8-bit model on")
    picks = np.linspace(0, len(train) - 1, min(n, len(train))).astype(int)
    return [(train[int(i)][0][None],) for i in dict.fromkeys(picks)]


def check_calibration(batches: list[Inputs], x: torch.Tensor, what: str) -> None:
    """Enough calibration inputs, each the network's input shape, or one line that says which."""
    if len(batches) < MIN_CALIBRATION:
        raise PipelineError(f"{what} gives {len(batches)} calibration image(s); an 8-bit model needs at least "
                            f"{MIN_CALIBRATION}: pass --calibration-samples {MIN_CALIBRATION} or more, or --data with "
                            "more images")
    for k, batch in enumerate(batches):
        shapes = [tuple(t.shape) for t in batch]
        if shapes != [tuple(x.shape)]:
            raise PipelineError(f"calibration input {k} has shape(s) {shapes}; the network takes one input of shape "
                                f"{tuple(x.shape)}: calibrate on images at the network's input size")


def outputs_on(run: Callable[[list[np.ndarray]], list[np.ndarray]], ds: Dataset,
               to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> tuple[np.ndarray, np.ndarray]:
    """A runtime's first output on every image of `ds` (one at a time, as `to_input` makes it the
    model's input), and their labels."""
    outs, labels = [], []
    for i in range(len(ds)):
        x, y = ds[i]
        outs.append(np.asarray(run([to_input(x[None]).numpy()])[0]).reshape(-1))
        labels.append(int(y))
    return np.stack(outs), np.asarray(labels)


def float_outputs(net: torch.nn.Module, ds: Dataset,
                  to_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> np.ndarray:
    with torch.no_grad():
        return outputs_on(lambda xs: [net.eval()(torch.from_numpy(xs[0])).numpy()], ds, to_input)[0]


def export_quantized(net: torch.nn.Module, x: torch.Tensor, exporter: Exporter, target: Target, arch: Architecture,
                     out: Path, cfg: QuantizeConfig, calibration: list[Inputs] | None = None,
                     app: AppInterface | None = None) -> QuantizedExport:
    """Export `net` at the exporter's 8-bit precision (as `app` ships it), calibrated on
    `calibration` (default: the training split's images), check it on the held-out split where
    its runtime runs here, and move it to `out` only if it keeps `cfg.goal`; otherwise nothing
    is written."""
    splits = splits_for(arch, cfg.data)
    batches = calibration if calibration is not None else calibration_from(splits.w, cfg.samples)
    check_calibration(batches, x, "the calibration" if calibration is not None else
                      f"the training split of '{splits.source}'")
    staging = out.with_name(f".unchecked-{out.name}")  # the same suffix: Core ML saves only to .mlpackage
    _remove(staging)
    artifact = exporter.export(net, (x,), staging, batches, app)
    quantization = exporter.quantization(batches)
    assert quantization is not None, "export_quantized is for an 8-bit exporter"
    if calibration is None and quantization.calibration:
        quantization = replace(quantization, calibration=f"{len(batches)} images of the training split of "
                                                         f"'{splits.source}'")
    reason = target.measurable_here()
    quality = None
    if reason is None:
        reference, to_input = exporter.app_reference(net, app) if app is not None else (net, lambda t: t)
        run = target.make_runner(1).load(artifact)
        labels_out, labels = outputs_on(run, splits.test, to_input)
        quality = quantized_quality(float_outputs(reference, splits.test, to_input), labels_out, labels)
        failed = quality.failures(cfg.goal)
        if failed:
            _remove(staging)
            raise PipelineError(
                f"the {quantization.precision} model is not written: {'; '.join(failed)} on {quality.samples} held-out "
                f"images; calibrate on more images (--calibration-samples, now {len(batches)}) or relax the goal "
                "(--min-agreement, --max-accuracy-drop)")
    else:
        exporter.inspect(artifact)
    _remove(out)
    os.replace(staging, out)
    return QuantizedExport(replace(artifact, path=out), quantization, quality, reason)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
