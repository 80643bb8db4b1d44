"""`digits-hard`: the embedded digits made into a proxy task on which architectures differ.

On scikit-learn's 8x8 digits every network of `tiny` reaches 0.96-0.99, so accuracy cannot tell
architectures apart. Here each digit is drawn onto a 32x32 canvas with a random rotation, scale,
shear and shift, beside fragments of two other digits, behind an occluding patch and under
Gaussian noise. Telling the digit from the clutter takes context, and capacity pays: trained the
same way, random architectures of `tiny` spread far wider than one architecture's
seed-to-seed noise (docs/search.md, "The proxy task").

Every image is a function of its source digit, its copy number and a fixed seed, so the task is
the same on every machine and in every run; no file is downloaded or written.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SIZE = 32  # the canvas, `tiny`'s resolution; other resolutions resize it
CLUTTER = 2  # fragments of other digits per image
NOISE = 0.2  # standard deviation of the Gaussian noise, on images in [0, 1]


def _uniform(n: int, g: torch.Generator, half_width: float) -> torch.Tensor:
    return (torch.rand(n, generator=g) * 2 - 1) * half_width


def _warp(src: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, [len(src), 1, SIZE, SIZE], align_corners=False)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _place(src: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each digit rotated by up to ±30°, scaled 0.75-1.25, sheared and shifted by up to a sixth of the canvas."""
    n = len(src)
    angle, shear = _uniform(n, g, math.radians(30)), _uniform(n, g, 0.3)
    scale = 0.75 + torch.rand(n, generator=g) * 0.5
    shift = torch.stack([_uniform(n, g, 0.35), _uniform(n, g, 0.35)], 1)
    c, s = torch.cos(angle), torch.sin(angle)
    linear = torch.stack([torch.stack([c, shear - s], 1), torch.stack([s, c], 1)], 1) / scale[:, None, None]
    return _warp(src, torch.cat([linear, shift[:, :, None]], 2))


def _fragment(src: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Half of another digit (cut along a random line), turned any way and put anywhere, at 80%."""
    n = len(src)
    other = src[torch.randint(0, n, (n,), generator=g)]
    angle = _uniform(n, g, math.pi)
    scale = 0.9 + torch.rand(n, generator=g) * 0.6
    shift = torch.stack([_uniform(n, g, 1.35), _uniform(n, g, 1.35)], 1)
    c, s = torch.cos(angle), torch.sin(angle)
    linear = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1) * scale[:, None, None]
    piece = _warp(other, torch.cat([linear, shift[:, :, None]], 2))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    cut = torch.rand(n, generator=g) * 2 * math.pi
    keep = xx * torch.cos(cut)[:, None, None] + yy * torch.sin(cut)[:, None, None] > 0
    return piece * keep[:, None] * 0.8


def _occlude(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One rectangle of 4-10 pixels a side, of one random grey, per image."""
    n = len(img)
    w, h = torch.randint(4, 11, (n,), generator=g), torch.randint(4, 11, (n,), generator=g)
    x0 = (torch.rand(n, generator=g) * (SIZE - w)).long()
    y0 = (torch.rand(n, generator=g) * (SIZE - h)).long()
    ar = torch.arange(SIZE)
    cols = (ar >= x0[:, None]) & (ar < (x0 + w)[:, None])
    rows = (ar >= y0[:, None]) & (ar < (y0 + h)[:, None])
    patch = (rows[:, :, None] & cols[:, None, :])[:, None]
    return torch.where(patch, torch.rand(n, generator=g)[:, None, None, None], img)


def render(digits: torch.Tensor, copies: int, seed: int) -> torch.Tensor:
    """`copies` hard images of each 8x8 digit in [0, 1]: (len(digits)·copies)x1x32x32 in [0, 1],
    the copies of one digit next to each other."""
    g = torch.Generator().manual_seed(seed)
    # The 8x8 digit sits in the middle half of a 16x16 source, so a shift or turn never crops it.
    src = F.pad(digits.repeat_interleave(copies, 0)[:, None], (4, 4, 4, 4))
    img = _place(src, g)
    for _ in range(CLUTTER):
        img = torch.maximum(img, _fragment(src, g))
    img = _occlude(img, g)
    return (img + torch.randn(img.shape, generator=g) * NOISE).clamp(0, 1)
