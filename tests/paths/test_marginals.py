"""Closed-form marginal velocity and score of a Gaussian path with Gaussian-mixture data."""

import math

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.paths.marginals import marginal_log_prob, marginal_score, marginal_velocity

SCHEDULES = ["linear", "cosine", "vp"]


def anisotropic_mixture() -> fd.GaussianMixture:
    """Three components with full, different covariances and unequal weights (a stricter target)."""
    means = torch.tensor([[-2.0, 0.5], [1.5, 2.0], [1.0, -2.0]], dtype=torch.float64)
    covs = torch.tensor(
        [[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.6]], [[0.8, 0.0], [0.0, 0.1]]], dtype=torch.float64
    )
    return fd.GaussianMixture(means, covs, weights=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("t", [0.3, 0.7])
def test_marginal_velocity_matches_monte_carlo_posterior_average(schedule, t):
    """u_t(x) = E[u_t(x|z) | x_t = x], estimated with z_i ~ p_data weighted by p_t(x | z_i)."""
    path, mixture = fd.GaussianPath(schedule), anisotropic_mixture()
    g = torch.Generator().manual_seed(10)
    n = 100_000
    z = mixture.sample(n, g).to(torch.float64)
    s = path.schedule(torch.tensor(t, dtype=torch.float64))
    points = torch.tensor([[0.0, 0.0], [-1.0, 0.5], [0.8, 1.2]], dtype=torch.float64) * float(s.alpha) + 0.3
    closed = marginal_velocity(path, mixture, points, torch.tensor(t))
    for x, exact in zip(points, closed):
        log_w = -((x - s.alpha * z) ** 2).sum(1) / (2 * s.beta**2)  # log N(x; alpha z, beta^2 I) + const
        w = torch.softmax(log_w, 0)
        u = path.conditional_velocity(x.expand(n, 2), z, torch.tensor(t, dtype=torch.float64))
        estimate = (w[:, None] * u).sum(0)
        # Self-normalised importance sampling: Var ~ sum_i w_i^2 (u_i - estimate)^2 (delta method).
        se = ((w[:, None] ** 2) * (u - estimate) ** 2).sum(0).sqrt()
        assert float(1 / (w**2).sum()) > 500, "too few effective samples for a meaningful check"
        assert ((estimate - exact).abs() < 5 * se + 1e-9).all(), (estimate, exact, se)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_marginal_score_is_the_gradient_of_the_marginal_log_density(schedule):
    path, mixture = fd.GaussianPath(schedule), anisotropic_mixture()
    g = torch.Generator().manual_seed(11)
    x = (torch.randn(64, 2, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.rand(64, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(marginal_log_prob(path, mixture, x, t).sum(), x)
    torch.testing.assert_close(marginal_score(path, mixture, x.detach(), t), grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_marginal_velocity_solves_the_continuity_equation(schedule):
    """d/dt log p_t(x) + div u_t(x) + u_t(x) . grad log p_t(x) = 0 (autograd in x and t)."""
    path, mixture = fd.GaussianPath(schedule), anisotropic_mixture()
    g = torch.Generator().manual_seed(12)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64) * 1.5
    t = torch.rand(16, generator=g, dtype=torch.float64) * 0.9 + 0.05
    t_var = t.clone().requires_grad_()
    (d_logp_dt,) = torch.autograd.grad(marginal_log_prob(path, mixture, x, t_var).sum(), t_var)
    x_var = x.clone().requires_grad_()
    u = marginal_velocity(path, mixture, x_var, t)
    div = sum(torch.autograd.grad(u[:, i].sum(), x_var, retain_graph=True)[0][:, i] for i in range(2))
    residual = d_logp_dt + div + (u * marginal_score(path, mixture, x, t)).sum(1)
    assert residual.abs().max() < 1e-8


def test_marginals_at_the_ends_of_the_path():
    path, mixture = fd.GaussianPath("linear"), anisotropic_mixture()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    # t = 1: p_1 = p_data.  t = 0: p_0 = N(0, I), whose score is -x, and u_0(x) = E[z] - x.
    # (GaussianMixture keeps its covariances in float32, hence the float32 tolerances.)
    torch.testing.assert_close(
        marginal_log_prob(path, mixture, x, 1.0), mixture.log_prob(x), rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(marginal_score(path, mixture, x, 1.0), mixture.score(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(marginal_score(path, mixture, x, 0.0), -x)
    mean = (mixture.weights[:, None] * mixture.means).sum(0)
    torch.testing.assert_close(marginal_velocity(path, mixture, x, 0.0), mean - x)
    # VP at t = 1 (where its d beta / dt diverges): the probability-flow drift (beta_min / 2)(x + score).
    vp = fd.GaussianPath("vp")
    expected = 0.5 * 0.1 * (x + marginal_score(vp, mixture, x, 1.0))
    torch.testing.assert_close(marginal_velocity(vp, mixture, x, 1.0), expected, rtol=1e-5, atol=1e-6)
    for schedule in SCHEDULES:
        for t in (0.0, 1.0):
            for kind in ("velocity", "score", "x1", "noise"):
                field = fd.MarginalField(fd.GaussianPath(schedule), mixture, prediction=kind)
                assert torch.isfinite(field(x, torch.tensor(t))).all()


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_marginal_field_predictions_agree_through_the_path_conversions(schedule):
    path, mixture = fd.GaussianPath(schedule), anisotropic_mixture()
    g = torch.Generator().manual_seed(14)
    x = torch.randn(32, 2, generator=g, dtype=torch.float64)
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    fields = {
        k: fd.MarginalField(path, mixture, prediction=k)(x, t) for k in ("velocity", "score", "x1", "noise")
    }
    for source in fields:
        for target in fields:
            converted = path.convert(fields[source], x, t, source, target)
            torch.testing.assert_close(converted, fields[target], rtol=1e-7, atol=1e-7)


def test_labelled_marginal_field_conditions_on_the_components_of_a_class():
    path, mixture = fd.GaussianPath("linear"), anisotropic_mixture()
    field = fd.MarginalField(path, mixture, labels=[0, 1, 1])
    assert field.num_classes == 2 and field.data_shape == (2,)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    t = torch.tensor(0.6)
    class0 = fd.GaussianMixture(mixture.means[:1], mixture.covs[:1])
    class1 = fd.GaussianMixture(mixture.means[1:], mixture.covs[1:], weights=mixture.weights[1:])
    torch.testing.assert_close(field(x, t, y=0), marginal_velocity(path, class0, x, t))
    torch.testing.assert_close(field(x, t, y=1), marginal_velocity(path, class1, x, t))
    torch.testing.assert_close(field(x, t, y=2), marginal_velocity(path, mixture, x, t))  # null label
    mixed = field(x, t, y=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    torch.testing.assert_close(mixed[1], field(x, t, y=1)[1])
    with pytest.raises(IncompatibleError):
        fd.MarginalField(path, mixture)(x, t, y=0)
    with pytest.raises(InvalidInputError):
        fd.MarginalField(path, mixture, labels=[0, 1])
    with pytest.raises(InvalidInputError):
        fd.MarginalField(path, mixture, prediction="eps")
    with pytest.raises(InvalidInputError):
        marginal_velocity(path, mixture, torch.zeros(4, 3), 0.5)


def test_marginal_density_of_a_gaussian_is_the_gaussian_path():
    """For p_data = N(m, s^2 I) the marginal is N(alpha m, (alpha^2 s^2 + beta^2) I)."""
    path = fd.GaussianPath("cosine")
    m, std = torch.tensor([1.0, -2.0], dtype=torch.float64), 0.5
    gaussian = fd.Gaussian(m, std**2)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(16), dtype=torch.float64)
    t = 0.3
    a, b = math.sin(math.pi * t / 2), math.cos(math.pi * t / 2)
    var = a**2 * std**2 + b**2
    expected = -((x - a * m) ** 2).sum(1) / (2 * var) - math.log(2 * math.pi * var)
    torch.testing.assert_close(marginal_log_prob(path, gaussian, x, t), expected)
