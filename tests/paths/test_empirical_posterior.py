"""The posterior over a finite set of data points: equal to the closed-form marginal of their empirical law."""

from __future__ import annotations

import pytest
import torch

import flowdiff as fd
from flowdiff.paths.empirical_posterior import posterior_shift
from flowdiff.paths.marginals import MarginalField


def empirical_field(path, points: torch.Tensor) -> MarginalField:
    """The exact marginal velocity of the uniform law on `points` (components of variance 1e-14)."""
    return MarginalField(path, fd.GaussianMixture(points.reshape(len(points), -1), covs=1e-14))


@pytest.mark.parametrize("schedule", ["linear", "cosine", "vp"])
def test_posterior_average_is_the_empirical_marginal_velocity_for_any_own_point(schedule):
    path = fd.GaussianPath(schedule)
    g = torch.Generator().manual_seed(0)
    points = torch.randn(7, 1, 2, 2, generator=g, dtype=torch.float64)  # shaped data: flattened inside
    x = torch.randn(50, 1, 2, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(50, generator=g, dtype=torch.float64)
    own = points[torch.randint(7, (50,), generator=g)]  # the identity holds whichever point it starts from
    stable = path.conditional_velocity(x, own, t) + posterior_shift(path, x, t, points, own)
    exact = empirical_field(path, points)(x.reshape(50, -1), t).reshape(x.shape)
    torch.testing.assert_close(stable, exact, rtol=1e-7, atol=1e-7)


def test_a_mask_restricts_the_posterior_to_the_allowed_points():
    path = fd.GaussianPath("linear")
    g = torch.Generator().manual_seed(1)
    points = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x, t = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.full((4,), 0.6, dtype=torch.float64)
    allowed = torch.zeros(4, 6, dtype=torch.bool)
    allowed[:, :3] = True
    own = points[0].expand(4, 2)
    shift = posterior_shift(path, x, t, points, own, allowed)
    exact = empirical_field(path, points[:3])(x, t)
    torch.testing.assert_close(path.conditional_velocity(x, own, t) + shift, exact)


def test_the_ends_noise_end_averages_all_points_and_data_end_keeps_the_own_target():
    path = fd.GaussianPath("linear")
    points = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=torch.float64)
    x = torch.tensor([[0.3, -0.2], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    at_zero = path.conditional_velocity(x, points, 0.0) + posterior_shift(path, x, torch.zeros(3), points, points)
    torch.testing.assert_close(at_zero, points.mean(0) - x)  # t = 0: every point equally likely
    one_time = posterior_shift(path, x, torch.tensor(0.3, dtype=torch.float64), points, points)  # a 0-d time
    torch.testing.assert_close(one_time, posterior_shift(path, x, torch.full((3,), 0.3, dtype=torch.float64),
                                                         points, points))
    at_one = posterior_shift(path, points, torch.ones(3, dtype=torch.float64), points, points)
    assert torch.equal(at_one, torch.zeros_like(points))  # beta = 0: the own point alone, no 0/0


def test_averaging_over_a_batch_cuts_the_target_error_against_the_true_marginal_velocity():
    """Eight Gaussians: the one-pair target is ~4 (squared) away from u_t(x); the average over 256 points ~0.14."""
    angles = torch.arange(8, dtype=torch.float64) * (torch.pi / 4)
    path = fd.GaussianPath("linear")
    mixture = fd.GaussianMixture(2.0 * torch.stack([angles.cos(), angles.sin()], dim=1), 0.2**2)
    field = MarginalField(path, mixture)
    g = torch.Generator().manual_seed(0)
    z = mixture.sample(256 * 8, g).double().reshape(8, 256, 2)
    errors = {"pair": 0.0, "batch": 0.0}
    for batch in z:
        t = torch.rand(256, generator=g, dtype=torch.float64)
        s = path.sample(batch, t, generator=g)
        exact = field(s.x_t, t)
        errors["pair"] += float((s.velocity - exact).pow(2).sum(1).mean()) / 8
        stable = s.velocity + posterior_shift(path, s.x_t, t, batch, batch)
        errors["batch"] += float((stable - exact).pow(2).sum(1).mean()) / 8
    assert errors["pair"] > 3.0 and errors["batch"] < 0.25, errors  # measured 3.8 and 0.14


def test_float32_points_near_the_data_end_keep_the_weights_of_near_duplicates():
    """t = 1 - 3e-4, two points 1e-4 apart in 8-D: float32 inputs give the float64 shift (0.31 off with the
    logits in float32, as they reach |x| |z| / beta^2 ~ 1e9)."""
    path = fd.GaussianPath("linear")
    g = torch.Generator().manual_seed(0)
    z = 3 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    z[1] = z[0] + 1e-4 * torch.randn(8, generator=g, dtype=torch.float64)
    t = torch.full((64,), 1 - 3e-4, dtype=torch.float64)
    s = path.sample(z, t, generator=g)
    exact = posterior_shift(path, s.x_t, t, z, z)
    assert float(exact[:2].abs().max()) > 0.05  # the near-duplicates do share their weight
    single = posterior_shift(path, s.x_t.float(), t.float(), z.float(), z.float())
    assert float((single.double() - exact).abs().max()) < 0.01
