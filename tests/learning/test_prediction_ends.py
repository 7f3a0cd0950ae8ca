"""An x1-predicting model that is not exact, sampled and scored through the end t = 1 where beta_1 = 0.

Its velocity is u = d_alpha x1 + d_beta (x - alpha x1) / beta: a prediction error is amplified by
1 / beta_t near t = 1, and at t = 1 itself the conversion must not divide (a clamped beta of 1e-4 turned
an error of 0.01 into sample errors of ~1.5 with Heun and log-likelihood errors of ~1.3 nats).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import flowdiff as fd

PATH = fd.GaussianPath("linear")
MIXTURE = fd.GaussianMixture.symmetric_2d(nmodes=3, std=0.5, scale=2.0)


class Perturbed(nn.Module):
    """The exact x1 prediction E[X_1 | X_t = x], scaled by (1 + scale_error) and shifted by `offset`."""

    data_shape, prediction = (2,), "x1"

    def __init__(self, offset: float = 0.0, scale_error: float = 0.0) -> None:
        super().__init__()
        self.exact = fd.MarginalField(PATH, MIXTURE, prediction="x1")
        self.offset, self.scale_error = offset, scale_error

    def forward(self, x, t, **cond):
        return self.exact(x, t) * (1 + self.scale_error) + self.offset


@pytest.mark.parametrize("solver, steps", [("heun", 50), ("rk4", 25)])
def test_solvers_that_evaluate_at_t_1_do_not_amplify_an_x1_error(solver, steps):
    """Heun and RK4 evaluate the field at t = 1; Euler never does. With the same 0.01 error in the x1
    prediction, their samples may move from the exact model's no more than Euler's do (1.5x its median)."""
    x0 = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))

    def error(solver, steps):
        exact = fd.sample(Perturbed(), PATH, x0=x0, steps=steps, solver=solver, prediction="x1")
        perturbed = fd.sample(Perturbed(offset=0.01), PATH, x0=x0, steps=steps, solver=solver, prediction="x1")
        return float((perturbed - exact).norm(dim=1).median())

    euler = error("euler", 50)
    assert 0.01 < euler < 0.2  # the model's own effect: an offset of 0.01, carried along the flow
    assert error(solver, steps) < 1.5 * euler


def test_the_likelihood_of_an_inexact_x1_model_stays_near_the_exact_one():
    """A 1% error in the x1 prediction changes div u by ~ eps D / beta_t near t = 1: the log-likelihood by
    ~ eps D log(1 / h) for the last step h (0.08 nats at 50 steps); refuse anything above 0.1."""
    x = MIXTURE.sample(300, torch.Generator().manual_seed(1))
    exact = fd.log_prob(Perturbed(), PATH, x, steps=50)
    torch.testing.assert_close(exact, MIXTURE.log_prob(x).float(), rtol=0, atol=1e-3)
    perturbed = fd.log_prob(Perturbed(scale_error=0.01), PATH, x, steps=50)
    assert float((perturbed - exact).mean().abs()) < 0.01 * 2 * math.log(50) + 0.02
