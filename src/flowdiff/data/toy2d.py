"""2-D toy data sets as samplers: moons, circles, checkerboard, eight Gaussians, spirals, a 5-mode mixture.

Each draws n labelled points from its generator alone (no global random state), scaled so that
every coordinate has a standard deviation between about 0.5 and 2.5: N(0, I) is then a sensible
p_init. The label is the natural class of a point (which moon, circle, cell, Gaussian or arm).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowdiff.dynamics.densities import GaussianMixture
from flowdiff.errors import InvalidInputError


@dataclass(frozen=True)
class ToySample:
    """n points x of shape (n, 2) (float32), their class labels y of shape (n,) (long), and num_classes."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int


def _uniform(n: int, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _labels(n: int, num_classes: int, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(num_classes, (n,), generator=generator)


def _result(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> ToySample:
    return ToySample(x=x.to(torch.float32).contiguous(), y=y.to(torch.long), num_classes=num_classes)


def moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1) -> ToySample:
    """Two interleaving half circles (label: which moon), centred and scaled by 2, Gaussian noise."""
    y = _labels(n, 2, generator)
    angle = _uniform(n, generator, 0.0, math.pi)
    upper = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    lower = torch.stack([1.0 - torch.cos(angle), 0.5 - torch.sin(angle)], dim=1)
    x = torch.where(y[:, None] == 0, upper, lower)
    x = x + noise * torch.randn(n, 2, generator=generator)
    return _result(2.0 * (x - torch.tensor([0.5, 0.25])), y, 2)


def circles(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> ToySample:
    """Two concentric circles of radii 2 and 1 (label 0 outer, 1 inner), Gaussian noise."""
    y = _labels(n, 2, generator)
    angle = _uniform(n, generator, 0.0, 2 * math.pi)
    radius = torch.where(y == 0, 2.0, 1.0)
    x = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return _result(x + 2.0 * noise * torch.randn(n, 2, generator=generator), y, 2)


def checkerboard(n: int, generator: torch.Generator | None = None) -> ToySample:
    """Uniform on the 8 dark cells of a 4x4 board on [-2, 2]^2 (label: the cell, 0..7)."""
    y = _labels(n, 8, generator)
    row = y // 2
    col = 2 * (y % 2) + (row % 2)  # dark cells: row + col even
    x = torch.stack([col, row], dim=1).to(torch.float32) - 2.0
    return _result(x + torch.rand(n, 2, generator=generator), y, 8)


def eight_gaussians(n: int, generator: torch.Generator | None = None, std: float = 0.2) -> ToySample:
    """Eight isotropic Gaussians (std 0.2) evenly spaced on the circle of radius 2 (label: which one)."""
    y = _labels(n, 8, generator)
    angle = y.to(torch.float32) * (2 * math.pi / 8)
    x = 2.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return _result(x + std * torch.randn(n, 2, generator=generator), y, 8)


def spirals(n: int, generator: torch.Generator | None = None, noise: float = 0.08) -> ToySample:
    """Two interleaved Archimedean spiral arms r = 2.5 s, angle 3 pi s + k pi (label k: which arm)."""
    y = _labels(n, 2, generator)
    s = torch.sqrt(_uniform(n, generator))  # uniform along the area the arm sweeps, not along s
    angle = 3 * math.pi * s + math.pi * y.to(torch.float32)
    x = (2.5 * s)[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return _result(x + noise * torch.randn(n, 2, generator=generator), y, 2)


def gmm(n: int, generator: torch.Generator | None = None) -> ToySample:
    """The symmetric 5-mode mixture of the first lab, shrunk to radius 2 and std 0.3 (label: the mode)."""
    mixture = GaussianMixture.symmetric_2d(nmodes=5, std=0.3, scale=2.0)
    x, y = mixture.sample(n, generator=generator, return_labels=True)
    return _result(x, y, 5)


TOY_DATASETS: dict[str, Callable[..., ToySample]] = {
    "moons": moons,
    "circles": circles,
    "checkerboard": checkerboard,
    "eight_gaussians": eight_gaussians,
    "spirals": spirals,
    "gmm": gmm,
}
"""The 2-D toy sets by name: each is called as f(n, generator) -> ToySample."""


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> ToySample:
    """Draw n labelled points of the toy set `name` (one of TOY_DATASETS)."""
    if name not in TOY_DATASETS:
        raise InvalidInputError(f"unknown toy data set {name!r}; choose one of: {', '.join(TOY_DATASETS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer number of points, got {n!r}")
    return TOY_DATASETS[name](n, generator)
