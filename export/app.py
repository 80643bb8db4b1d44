"""What an app needs to use an exported model as it is: its labels, the preprocessing its input
takes, the input's layout, and where the model came from. Each format carries these in the
model itself where it has a place for them (Core ML: an image input, a classifier and metadata;
LiteRT and ONNX: a metadata entry), and every export writes them in a sidecar JSON beside the
model (`sidecar_path`), the one format of these facts (docs/app.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import PipelineError
from core.fileio import write_json_atomic

SIDECAR_FORMAT = "pipeline-app"
SIDECAR_VERSION = 1
METADATA_KEY = "pipeline.app"  # the name of the facts' entry in a model's own metadata
LAYOUTS = ("NCHW", "NHWC")
IO_TYPES = ("float", "int8")


@dataclass(frozen=True)
class Normalization:
    """The network's input is (pixel / 255 - mean[c]) / std[c], per channel c."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def image_scale_bias(self) -> tuple[float, list[float], tuple[float, ...]]:
        """An image input's one scale and per-channel bias (Core ML: pixel * scale + bias), and the
        per-channel factors that turn that into the network's input. An image input takes only
        one scale, so a per-channel std is folded into the first convolution (`fold_input_scale`)."""
        s = self.std[0]
        return 1.0 / (255.0 * s), [-m / s for m in self.mean], tuple(s / sd for sd in self.std)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised NCHW input back to the 0-255 pixels it came from (rounded, clipped)."""
        mean, std = (torch.tensor(v, dtype=x.dtype).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return ((x * std + mean) * 255.0).round().clamp(0, 255)


@dataclass(frozen=True)
class AppInterface:
    """The facts an app needs, as the export stage gathers them for one model."""

    labels: tuple[str, ...]
    resolution: int
    channels: int
    normalization: Normalization
    layout: str = "NCHW"  # NHWC: the LiteRT model takes channels last (no transpose at its input)
    io: str = "float"  # int8: an int8 LiteRT model takes and returns int8 tensors
    description: str = ""
    version: str = ""
    source: dict[str, Any] = field(default_factory=dict)  # architecture, table, target, precision

    def __post_init__(self) -> None:
        assert self.layout in LAYOUTS and self.io in IO_TYPES, (self.layout, self.io)
        assert len(self.normalization.mean) == len(self.normalization.std) == self.channels

    @property
    def color(self) -> str:
        return "GRAYSCALE" if self.channels == 1 else "RGB"

    def facts(self) -> dict[str, Any]:
        """The labels, preprocessing and provenance, as the model's metadata and the sidecar hold them."""
        n = self.normalization
        return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "description": self.description,
                "model_version": self.version, "labels": list(self.labels),
                "preprocessing": {"resize": [self.resolution, self.resolution], "color": self.color,
                                  "layout": self.layout, "mean": list(n.mean), "std": list(n.std),
                                  "formula": "x[c] = (pixel[c] / 255 - mean[c]) / std[c]"},
                "source": self.source}


def check_labels(labels: tuple[str, ...], num_classes: int, where: str) -> tuple[str, ...]:
    if len(labels) != num_classes:
        raise PipelineError(f"{where} has {len(labels)} class labels, the network {num_classes} outputs; "
                            "export with the --data the network was trained on")
    return labels


class ChannelScale(nn.Module):
    """Multiplies each input channel by a factor: where the first layer is no plain convolution."""

    def __init__(self, factors: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("factors", torch.tensor(factors).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factors


def first_conv(module: nn.Module) -> nn.Conv2d | None:
    """The convolution every input goes through first: a stem that is a Conv2d or starts with one."""
    stem = getattr(module, "stem", None)
    while isinstance(stem, nn.Sequential) and len(stem):
        stem = stem[0]
    return stem if isinstance(stem, nn.Conv2d) and stem.groups == 1 and stem.padding_mode == "zeros" else None


def fold_input_scale(module: nn.Module, factors: tuple[float, ...]) -> nn.Module:
    """`module` applied to x * factors[c], per channel: folded into the first convolution's weights
    (exact: zero padding stays zero), or a leading multiply where there is no such convolution."""
    if all(f == 1.0 for f in factors):
        return module
    import copy

    folded = copy.deepcopy(module)
    conv = first_conv(folded)
    if conv is None:
        return nn.Sequential(ChannelScale(factors), folded)
    with torch.no_grad():
        conv.weight.mul_(torch.tensor(factors, dtype=conv.weight.dtype).view(1, -1, 1, 1))
    return folded


class PixelClassifier(nn.Module):
    """What a Core ML image classifier computes, in PyTorch: 0-255 pixels in, class probabilities out."""

    def __init__(self, net: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        scale, bias, factors = normalization.image_scale_bias()
        self.net, self.scale = fold_input_scale(net, factors), scale
        self.register_buffer("bias", torch.tensor(bias).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(pixels * self.scale + self.bias), dim=-1)


class Probabilities(nn.Module):
    """The network's logits as probabilities: a classifier's output, so Xcode shows them as such."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def sidecar_path(model: Path) -> Path:
    """`model.tflite` -> `model.json`: the name an app project copies beside the model."""
    return model.with_suffix(".json")


def write_sidecar(model: Path, app: AppInterface, interface: dict[str, Any],
                  extra: dict[str, Any] | None = None) -> Path:
    """The facts, the model's file name and its input and output tensors as read from the model."""
    path = sidecar_path(model)
    body = {**app.facts(), "model": model.name, **interface, **(extra or {})}
    write_json_atomic(path, body)
    return path
