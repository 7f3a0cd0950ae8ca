"""2-D toy data sets: shapes, labels, scale, determinism from the generator, bad names."""

from __future__ import annotations

import math

import pytest
import torch

from flowdiff.data.toy2d import TOY_DATASETS, ToySample, sample_toy
from flowdiff.errors import InvalidInputError

NAMES = ["moons", "circles", "checkerboard", "eight_gaussians", "spirals", "gmm"]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", NAMES)
def test_toy_sets_shapes_labels_scale_and_seeds(name):
    sample = sample_toy(name, 4000, gen(0))
    assert isinstance(sample, ToySample)
    assert sample.x.shape == (4000, 2) and sample.x.dtype == torch.float32
    assert sample.y.shape == (4000,) and sample.y.dtype == torch.long
    assert sample.y.min() >= 0 and sample.y.max() == sample.num_classes - 1
    assert torch.bincount(sample.y).min() > 4000 / sample.num_classes / 2  # every class is present
    std = sample.x.std(0)
    assert ((std > 0.5) & (std < 2.5)).all(), std
    assert sample.x.mean(0).abs().max() < 0.3
    again = sample_toy(name, 4000, gen(0))
    assert torch.equal(sample.x, again.x) and torch.equal(sample.y, again.y)
    assert not torch.equal(sample.x, sample_toy(name, 4000, gen(1)).x)


def test_labels_are_the_natural_classes():
    moons = sample_toy("moons", 2000, gen(0))
    assert moons.x[moons.y == 0, 1].mean() > moons.x[moons.y == 1, 1].mean()  # upper moon is class 0
    circles = sample_toy("circles", 2000, gen(0))
    radius = circles.x.norm(dim=1)
    assert radius[circles.y == 0].mean() == pytest.approx(2.0, abs=0.05)
    assert radius[circles.y == 1].mean() == pytest.approx(1.0, abs=0.05)
    gaussians = sample_toy("eight_gaussians", 2000, gen(0))
    angle = torch.atan2(gaussians.x[:, 1], gaussians.x[:, 0]) % (2 * math.pi)
    nearest = torch.round(angle / (2 * math.pi / 8)).long() % 8
    assert (nearest == gaussians.y).float().mean() > 0.99
    board = sample_toy("checkerboard", 2000, gen(0))
    cells = torch.floor(board.x + 2.0).long()  # (col, row) in 0..3
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()  # only dark cells
    assert (cells[:, 1] == board.y // 2).all()
    spirals = sample_toy("spirals", 2000, gen(0))
    # arm k: angle = 3 pi r / 2.5 + k pi, so the phase angle - 3 pi r / 2.5 is near 0 (k = 0) or pi (k = 1)
    r = spirals.x.norm(dim=1)
    phase = (torch.atan2(spirals.x[:, 1], spirals.x[:, 0]) - 3 * math.pi * r / 2.5) % (2 * math.pi)
    arm = ((phase > math.pi / 2) & (phase < 3 * math.pi / 2)).long()
    far = r > 0.5  # near the centre the noise mixes the arms
    assert (arm[far] == spirals.y[far]).float().mean() > 0.97


def test_registry_and_bad_input():
    assert list(TOY_DATASETS) == NAMES
    with pytest.raises(InvalidInputError, match="unknown toy data set 'swiss'.*moons, circles"):
        sample_toy("swiss", 10)
    for n in [0, -3, 2.5, True]:
        with pytest.raises(InvalidInputError, match="positive integer"):
            sample_toy("moons", n)
