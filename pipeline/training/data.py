"""Training data: a built-in source by name (`--data digits`, the embedded default, or
`--data digits-hard`, the proxy task) or a local image folder.

Every source is split three ways, stratified by class: W (super-net weights), Θ
(architecture parameters) and a held-out test split that neither step sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

from core.errors import PipelineError
from core.registry import Registry
from export.app import Normalization
from pipeline.training import hard_digits

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Splits:
    w: Dataset
    theta: Dataset
    test: Dataset
    num_classes: int
    classes: tuple[str, ...]
    source: str


# Every source's images, in [0, 1], are normalised to ~zero mean the same way per channel; an
# exported model states it (export.app) so that an app feeds what the network was trained on.
MEAN, STD = 0.5, 0.5


def normalization(channels: int) -> Normalization:
    return Normalization((MEAN,) * channels, (STD,) * channels)


def _fit(x: torch.Tensor, resolution: int, channels: int) -> torch.Tensor:
    """Resize a CxHxW image in [0, 1] to the space's input and normalise it to ~zero mean."""
    x = F.interpolate(x[None], size=(resolution, resolution), mode="bilinear", align_corners=False)[0]
    if x.shape[0] != channels:
        x = x.mean(0, keepdim=True).expand(channels, -1, -1) if channels != 1 else x.mean(0, keepdim=True)
    return (x - MEAN) / STD


class DigitsDataset(Dataset):
    """scikit-learn's 1,797 8x8 handwritten digits, shipped with the package: no download."""

    def __init__(self, resolution: int, channels: int) -> None:
        from sklearn.datasets import load_digits

        d = load_digits()
        self.images = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
        self.labels = torch.tensor(d.target, dtype=torch.long)
        self.classes = tuple(str(c) for c in d.target_names)
        self.resolution, self.channels = resolution, channels
        # Small inputs are resized once up front (7 MB at 32x32); large ones (224x224x3 is
        # 1 GB for the whole set) are resized per item instead.
        self.cached = None
        if len(self.labels) * channels * resolution**2 * 4 <= 256 * 2**20:
            self.cached = torch.stack([_fit(x, resolution, channels) for x in self.images])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached is not None:
            return self.cached[i], self.labels[i]
        return _fit(self.images[i], self.resolution, self.channels), self.labels[i]


class ImageFolderDataset(Dataset):
    """A folder with one sub-folder per class, images decoded lazily with Pillow."""

    def __init__(self, root: Path, resolution: int, channels: int) -> None:
        if not root.is_dir():
            raise PipelineError(f"image folder '{root}' does not exist; pass a folder with one sub-folder per class")
        classes = data_labels(str(root))
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).rglob("*"))
                 if f.suffix.lower() in IMAGE_SUFFIXES]
        if len(classes) < 2 or not files:
            raise PipelineError(
                f"image folder '{root}' has {len(classes)} class sub-folder(s) and {len(files)} image(s); "
                "it needs at least 2 sub-folders (one per class) holding images"
            )
        self.files, self.classes = files, tuple(classes)
        self.labels = torch.tensor([i for _, i in files])
        self.resolution, self.channels = resolution, channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.files[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB" if self.channels == 3 else "L")
                arr = np.asarray(im.resize((self.resolution, self.resolution)), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise PipelineError(f"cannot read image '{path}' ({e}); remove or replace it") from None
        x = torch.from_numpy(arr).reshape(self.resolution, self.resolution, -1).permute(2, 0, 1)
        return _fit(x, self.resolution, self.channels), torch.tensor(label)


def data_labels(source: str) -> tuple[str, ...]:
    """A source's class names, in its label order, without reading its images."""
    if source in SOURCES:
        return SOURCES.get(source).classes
    root = Path(source)
    if not root.is_dir():
        raise PipelineError(f"data '{source}' is neither a built-in source ({', '.join(SOURCES.names())}) nor a "
                            "folder; pass --data with the data the network was trained on")
    return tuple(sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")))


def searched_source(info: dict, given: str | None) -> str:
    """The data a command on an architecture means: the one given, else the one its search
    recorded (`info["data"]["source"]`), else the embedded digits."""
    return given or str((info.get("data") or {}).get("source", "digits"))


def digits_folder(root: Path, per_class: int) -> Path:
    """The first `per_class` embedded digits of each class as PNGs in `root/CLASS/`: a small image
    folder for `--data`, for trying a search (or measuring one) in seconds."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for c in range(10):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(d.target == c)[:per_class]:
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).save(root / str(c) / f"{i}.png")
    return root


def _split(labels: np.ndarray, frac: float, seed: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified when every class can be represented on both sides, plain otherwise."""
    # imported here, not with the module: scikit-learn takes over a second to import, and every
    # command (a resumed benchmark that has nothing to do) imports this module
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels[idx])
    stratify = labels[idx] if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(idx, test_size=frac, random_state=seed, stratify=stratify)
    except ValueError:
        return train_test_split(idx, test_size=frac, random_state=seed)


def _three_way(ds: Dataset, labels: np.ndarray, source: str, classes: tuple[str, ...], seed: int,
               test_fraction: float, theta_fraction: float) -> Splits:
    if len(labels) < 10:
        raise PipelineError(f"data '{source}' has {len(labels)} images; at least 10 are needed for three splits")
    rest, test = _split(labels, test_fraction, seed, np.arange(len(labels)))
    w, theta = _split(labels, theta_fraction, seed + 1, rest)
    return Splits(Subset(ds, w.tolist()), Subset(ds, theta.tolist()), Subset(ds, test.tolist()),
                  len(classes), classes, source)


@dataclass(frozen=True)
class Source:
    """A built-in data source: its class names, and its splits at a resolution and channel count."""

    classes: tuple[str, ...]
    description: str
    load: Callable[[int, int, int, float, float], Splits]  # (resolution, channels, seed, test, Θ fractions)


SOURCES: Registry[Source] = Registry("data source")
DIGIT_CLASSES = tuple(str(c) for c in range(10))


def _digits(resolution: int, channels: int, seed: int, test_fraction: float, theta_fraction: float) -> Splits:
    ds = DigitsDataset(resolution, channels)
    return _three_way(ds, ds.labels.numpy(), "digits", ds.classes, seed, test_fraction, theta_fraction)


SOURCES.add("digits", Source(DIGIT_CLASSES, "scikit-learn's 1,797 8x8 handwritten digits (the embedded default)",
                             _digits))

# digits-hard: the test split is fixed (seed 0) and each test digit is drawn HARD_TEST_COPIES times,
# so every run and seed is judged on the same 3,600 images; the seed moves the W/Θ split only.
HARD_TRAIN_COPIES, HARD_TEST_COPIES = 4, 10


class RenderedDataset(TensorDataset):
    """Images rendered once at 32x32 in [0, 1], fitted to the space's input per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, resolution: int, channels: int) -> None:
        super().__init__(images, labels)
        self.labels, self.resolution, self.channels = labels, resolution, channels
        self.fitted = None
        if images.shape[-1] == resolution and channels == 1:  # tiny's own input: normalise once
            self.fitted = (images - MEAN) / STD

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().__getitem__(i)
        return (self.fitted[i] if self.fitted is not None else _fit(x, self.resolution, self.channels)), y


def _digits_hard(resolution: int, channels: int, seed: int, test_fraction: float, theta_fraction: float) -> Splits:
    from sklearn.datasets import load_digits

    d = load_digits()
    digits, labels = torch.tensor(d.images / 16.0, dtype=torch.float32), d.target
    rest, test = _split(labels, test_fraction, 0, np.arange(len(labels)))
    w, theta = _split(labels, theta_fraction, seed + 1, rest)
    # Train images are the same whatever the seed (rendered in index order), so a seed moves only
    # which digits train W and which Θ.
    rest = np.sort(rest)
    train = RenderedDataset(hard_digits.render(digits[rest], HARD_TRAIN_COPIES, 1),
                            torch.tensor(labels[rest]).repeat_interleave(HARD_TRAIN_COPIES), resolution, channels)
    held = RenderedDataset(hard_digits.render(digits[np.sort(test)], HARD_TEST_COPIES, 2),
                           torch.tensor(labels[np.sort(test)]).repeat_interleave(HARD_TEST_COPIES), resolution, channels)
    position = {int(k): i for i, k in enumerate(rest)}

    def copies_of(idx: np.ndarray) -> list[int]:
        return [position[int(k)] * HARD_TRAIN_COPIES + c for k in np.sort(idx) for c in range(HARD_TRAIN_COPIES)]

    return Splits(Subset(train, copies_of(w)), Subset(train, copies_of(theta)), Subset(held, list(range(len(held)))),
                  10, DIGIT_CLASSES, "digits-hard")


SOURCES.add("digits-hard", Source(
    DIGIT_CLASSES, "the digits at 32x32, turned, scaled, sheared and shifted among fragments of other digits, "
    "occluded and noisy: a proxy task on which architectures differ", _digits_hard))


def load_data(source: str, resolution: int, channels: int, seed: int = 0,
              test_fraction: float = 0.2, theta_fraction: float = 0.2) -> Splits:
    """`source` is a built-in source's name or the path of an image folder. Θ takes
    `theta_fraction` of the non-test part."""
    if source in SOURCES:
        return SOURCES.get(source).load(resolution, channels, seed, test_fraction, theta_fraction)
    if not Path(source).exists():
        raise PipelineError(f"data '{source}' is neither a built-in source ({', '.join(SOURCES.names())}) nor a "
                            "folder; pass --data with one of those or a folder with one sub-folder per class")
    ds = ImageFolderDataset(Path(source), resolution, channels)
    return _three_way(ds, ds.labels.numpy(), source, ds.classes, seed, test_fraction, theta_fraction)
