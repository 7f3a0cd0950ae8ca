"""Learned time grids: never worse than the uniform grid where fitted, better on a field with a fast end,
monotone, round-trips through its dict, and refused for solvers it cannot be learned through."""

from __future__ import annotations

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.sampling.learned_grid import LearnedGrid, learn_grid


class SharpField(torch.nn.Module):
    """A cheap velocity field that changes fast near t = 1: u(x, t) = -a(t) x + b(t), a(t) = 3 / (1.05 - t)."""

    data_shape = (2,)

    def forward(self, x, t):
        return -(3.0 / (1.05 - t)) * x + torch.stack([torch.sin(4 * t), torch.cos(4 * t)])


def test_never_worse_than_uniform_and_better_here():
    field = SharpField()
    grid = learn_grid(field, "euler", steps=6, n=64, iterations=40, generator=torch.Generator().manual_seed(0))
    times = torch.tensor(grid.times)
    assert grid.loss <= grid.uniform_loss and grid.loss < 0.5 * grid.uniform_loss  # measured: 0.01x
    assert times[0] == 0.0 and times[-1] == 1.0 and bool((times.diff() > 0).all()) and len(times) == 7
    assert float(times[-2]) > 1 - 1 / 6  # the steps crowd where the field changes fast
    # the stored loss is the loss of the stored times on the fitted draws: recompute it
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    exact = fd.simulate(fd.ODE(field), x0, torch.tensor([0.0, 1.0]), fd.solvers.Dopri5(1e-5, 1e-5)).final
    for ts, loss in ((grid.tensor(), grid.loss), (fd.grids.uniform(0, 1, 6), grid.uniform_loss)):
        recomputed = float((fd.simulate(fd.ODE(field), x0, ts, "euler").final - exact).square().mean())
        assert recomputed == pytest.approx(loss, rel=1e-4)
    assert LearnedGrid.from_dict(grid.to_dict()) == grid


def test_zero_iterations_give_the_uniform_grid_and_bad_input_is_refused():
    field = SharpField()
    grid = learn_grid(field, "heun", steps=3, n=8, iterations=0)
    torch.testing.assert_close(grid.tensor(), fd.grids.uniform(0.0, 1.0, 3))
    assert grid.loss == grid.uniform_loss
    for solver in ("dopri5", "euler_maruyama"):
        with pytest.raises(IncompatibleError, match="fixed-step ODE solver"):
            learn_grid(field, solver, steps=3)
    with pytest.raises(InvalidInputError, match="steps"):
        learn_grid(field, "euler", steps=1)
    entry = {**grid.to_dict(), "times": [0.0, 0.6, 0.5, 1.0]}
    with pytest.raises(InvalidInputError, match="increasing"):
        LearnedGrid.from_dict(entry)
