"""Schedules and Gaussian paths: boundary values, derivatives, moments of x_t, conversions."""

import itertools

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.paths.gaussian_path import PREDICTIONS
from flowdiff.paths.schedules import VP, Cosine, Linear, Polynomial, get_schedule

SCHEDULES = [Linear(), Cosine(), Polynomial(2.0), Polynomial(3.0), VP()]
IDS = ["linear", "cosine", "poly2", "poly3", "vp"]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_boundary_conditions(schedule):
    s0, s1 = (
        schedule(torch.tensor(0.0, dtype=torch.float64)),
        schedule(torch.tensor(1.0, dtype=torch.float64)),
    )
    assert float(s1.alpha) == pytest.approx(1.0, abs=1e-12)
    assert float(s1.beta) == pytest.approx(0.0, abs=1e-12)
    assert float(s0.beta) == pytest.approx(1.0, abs=1e-4)
    if isinstance(schedule, VP):
        # VP never reaches pure noise: alpha_0 = exp(-(beta_min + beta_max) / 4) for the defaults.
        expected = torch.exp(torch.tensor(-(0.1 + 20.0) / 4, dtype=torch.float64))
        assert float(s0.alpha) == pytest.approx(float(expected), rel=1e-9)
        assert float(s0.alpha**2 + s0.beta**2) == pytest.approx(1.0, abs=1e-12)
    else:
        assert float(s0.alpha) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_derivatives_match_autograd(schedule):
    t = torch.linspace(0.01, 0.99, 41, dtype=torch.float64, requires_grad=True)
    s = schedule(t)
    (d_alpha,) = torch.autograd.grad(s.alpha.sum(), t, retain_graph=True)
    (d_beta,) = torch.autograd.grad(s.beta.sum(), t)
    torch.testing.assert_close(s.d_alpha.detach(), d_alpha, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(s.d_beta.detach(), d_beta, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_sampled_x_t_has_the_path_mean_and_variance(schedule):
    path = fd.GaussianPath(schedule)
    n, t = 40_000, torch.tensor(0.37, dtype=torch.float64)
    z = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64).expand(n, 3)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(n, 3, generator=g, dtype=torch.float64)
    x_t = path.sample(z, t, noise=noise).x_t
    s = schedule(t)
    # Each coordinate is N(alpha z, beta^2): the sample mean has standard error beta / sqrt(n), the
    # sample variance beta^2 sqrt(2 / (n - 1)); 5 standard errors leave a ~1e-6 false-alarm rate.
    mean_se, var_se = float(s.beta) / n**0.5, float(s.beta) ** 2 * (2 / (n - 1)) ** 0.5
    assert (x_t.mean(0) - s.alpha * z[0]).abs().max() < 5 * mean_se
    assert (x_t.var(0) - s.beta**2).abs().max() < 5 * var_se


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_conditional_velocity_is_the_time_derivative_of_x_t(schedule):
    path = fd.GaussianPath(schedule)
    g = torch.Generator().manual_seed(2)
    z, eps = (
        torch.randn(64, 2, generator=g, dtype=torch.float64),
        torch.randn(64, 2, generator=g, dtype=torch.float64),
    )
    t = torch.rand(64, generator=g, dtype=torch.float64) * 0.96 + 0.02

    def x_of_t(tt):
        s = schedule(tt)
        return s.alpha[:, None] * z + s.beta[:, None] * eps

    _, dx_dt = torch.func.jvp(x_of_t, (t,), (torch.ones_like(t),))
    sample = path.sample(z, t, noise=eps)
    torch.testing.assert_close(sample.velocity, dx_dt, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.conditional_velocity(sample.x_t, z, t), dx_dt, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(path.conditional_score(sample.x_t, z, t), -eps / schedule(t).beta[:, None])


def _truth(path, z, eps, t):
    s = path.values(t, z)
    return {
        "velocity": s.d_alpha * z + s.d_beta * eps,
        "score": -eps / s.beta,
        "x1": z,
        "noise": eps,
    }, s.alpha * z + s.beta * eps


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
def test_conversions_between_all_predictions(schedule):
    path = fd.GaussianPath(schedule)
    g = torch.Generator().manual_seed(3)
    z, eps = (
        torch.randn(32, 2, generator=g, dtype=torch.float64),
        torch.randn(32, 2, generator=g, dtype=torch.float64),
    )
    t = torch.rand(32, generator=g, dtype=torch.float64) * 0.9 + 0.05
    truth, x = _truth(path, z, eps, t)
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        converted = path.convert(truth[source], x, t, source, target)
        torch.testing.assert_close(converted, truth[target], rtol=1e-8, atol=1e-8, msg=f"{source}->{target}")
        back = path.convert(converted, x, t, target, source)
        torch.testing.assert_close(
            back, truth[source], rtol=1e-8, atol=1e-8, msg=f"{source}->{target}->{source}"
        )


@pytest.mark.parametrize("schedule", SCHEDULES, ids=IDS)
@pytest.mark.parametrize("t", [0.0, 1.0])
def test_conversions_are_finite_at_the_ends(schedule, t):
    path = fd.GaussianPath(schedule)
    g = torch.Generator().manual_seed(4)
    x, value = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        out = path.convert(value, x, torch.tensor(t), source, target)
        assert torch.isfinite(out).all(), f"{source}->{target} at t={t}"
    z = torch.randn(16, 2, generator=g)
    assert torch.isfinite(path.conditional_velocity(x, z, torch.tensor(t))).all()
    assert torch.isfinite(path.conditional_score(x, z, torch.tensor(t))).all()
    assert torch.isfinite(path.sample(z, torch.full((16,), t), generator=g).velocity).all()


def test_schedule_registry_and_errors():
    for schedule in SCHEDULES:
        rebuilt = get_schedule(schedule.config())
        assert type(rebuilt) is type(schedule) and vars(rebuilt) == vars(schedule)
    assert isinstance(get_schedule("cosine"), Cosine)
    with pytest.raises(InvalidInputError, match="unknown schedule"):
        get_schedule("quadratic")
    with pytest.raises(InvalidInputError):
        Polynomial(0.0)
    with pytest.raises(InvalidInputError):
        VP(beta_min=5.0, beta_max=1.0)
    with pytest.raises(InvalidInputError, match="unknown prediction"):
        fd.GaussianPath().convert(torch.zeros(2, 2), torch.zeros(2, 2), 0.5, "eps", "score")
