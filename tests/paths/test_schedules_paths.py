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


def test_conversions_are_exact_where_alpha_t_is_tiny():
    # Polynomial(3.5) has alpha_t < 1e-4 for t < 0.072: a clamp of the divisor at 1e-4 gave 10% errors
    # there. Float64 algebra: x = alpha z + beta eps loses about one ulp of |x|, which a division by
    # alpha_t turns into an error of eps |x| / alpha_t; 16 such errors bound every conversion.
    path = fd.GaussianPath(Polynomial(3.5))
    g = torch.Generator().manual_seed(5)
    z, eps = (torch.randn(64, 2, generator=g, dtype=torch.float64) for _ in range(2))
    alpha = torch.logspace(-9, -4, 64, dtype=torch.float64)
    t = alpha ** (1 / 3.5)
    truth, x = _truth(path, z, eps, t)
    bound = 16 * torch.finfo(torch.float64).eps * (1 + x.abs()) / alpha[:, None]
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        error = (path.convert(truth[source], x, t, source, target) - truth[target]).abs()
        assert bool((error <= bound).all()), f"{source}->{target}: {float((error / bound).max())}"
    # A round trip through every kind comes back to the velocity it started from.
    value = truth["velocity"]
    for source, target in [("velocity", "score"), ("score", "x1"), ("x1", "noise"), ("noise", "velocity")]:
        value = path.convert(value, x, t, source, target)
    torch.testing.assert_close(value, truth["velocity"], rtol=1e-12, atol=1e-12)


def test_conversions_are_exact_where_beta_t_is_tiny():
    # The mirror image near the data end: beta_t = 1 - t down to 1e-12 (Linear), divided by in
    # x1 -> noise and -> score; the error bound is eps |x| / beta_t as above.
    path = fd.GaussianPath(Linear())
    g = torch.Generator().manual_seed(6)
    z, eps = (torch.randn(32, 2, generator=g, dtype=torch.float64) for _ in range(2))
    beta = torch.logspace(-12, -5, 32, dtype=torch.float64)
    t = 1 - beta
    truth, x = _truth(path, z, eps, t)
    beta = path.values(t, x).beta  # 1 - (1 - beta) as float64 rounds it
    # The score -eps / beta_t divides once more: its bound is the noise's divided by beta_t.
    bound = 16 * torch.finfo(torch.float64).eps * (1 + x.abs()) / beta
    for source, target in itertools.product(PREDICTIONS, PREDICTIONS):
        error = (path.convert(truth[source], x, t, source, target) - truth[target]).abs()
        scaled = error / (bound / beta if target == "score" else bound)
        assert bool((scaled <= 1).all()), f"{source}->{target}: {float(scaled.max())}"


def test_conversions_at_the_singular_ends_take_the_minimum_norm_solution():
    # Where alpha_t = 0 (t = 0) the data point is undetermined, where beta_t = 0 (t = 1) the noise is:
    # the conversions set that unknown to 0 and keep what x and the prediction determine.
    g = torch.Generator().manual_seed(4)
    x, value = torch.randn(16, 2, generator=g), torch.randn(16, 2, generator=g)
    zero = torch.zeros_like(x)
    linear = fd.GaussianPath(Linear())
    t0, t1 = torch.tensor(0.0), torch.tensor(1.0)
    # t = 0, Linear: x = eps; z undetermined by a noise or score prediction, determined by a velocity.
    torch.testing.assert_close(linear.convert(value, x, t0, "noise", "x1"), zero)
    torch.testing.assert_close(linear.convert(value, x, t0, "noise", "velocity"), -value)  # 0 - eps
    torch.testing.assert_close(linear.convert(value, x, t0, "score", "x1"), zero)
    torch.testing.assert_close(linear.convert(value, x, t0, "score", "noise"), -value)  # eps = -beta s
    torch.testing.assert_close(linear.convert(value, x, t0, "velocity", "x1"), x + value)  # v = z - x
    torch.testing.assert_close(linear.convert(value, x, t0, "x1", "noise"), x)
    torch.testing.assert_close(linear.convert(value, x, t0, "x1", "score"), -x)
    # t = 1, Linear: x = z; eps undetermined by a data prediction.
    torch.testing.assert_close(linear.convert(value, x, t1, "x1", "noise"), zero)
    torch.testing.assert_close(linear.convert(value, x, t1, "x1", "velocity"), value)  # d_alpha z + 0
    torch.testing.assert_close(linear.convert(value, x, t1, "x1", "score"), zero)
    torch.testing.assert_close(linear.convert(value, x, t1, "noise", "x1"), x)
    torch.testing.assert_close(linear.convert(value, x, t1, "noise", "score"), zero)
    torch.testing.assert_close(linear.convert(value, x, t1, "velocity", "noise"), x - value)  # v = z - eps
    # Polynomial(2) at t = 0: d_alpha = d_beta = 0, so v = 0 whatever (z, eps) are and the determinant
    # alpha d_beta - beta d_alpha vanishes; x = eps still fixes the noise, z is undetermined.
    poly = fd.GaussianPath(Polynomial(2.0))
    torch.testing.assert_close(poly.convert(value, x, t0, "velocity", "noise"), x)
    torch.testing.assert_close(poly.convert(value, x, t0, "velocity", "x1"), zero)
    torch.testing.assert_close(poly.convert(value, x, t0, "velocity", "score"), -x)
    # Conditional fields at the ends: u_0(x|z) = z - x and grad log p_0(x|z) = -x; at t = 1 the noise
    # (x - z) / beta is undetermined: u_1(x|z) = d_alpha z, score 0.
    z = torch.randn(16, 2, generator=g)
    torch.testing.assert_close(linear.conditional_velocity(x, z, t0), z - x)
    torch.testing.assert_close(linear.conditional_score(x, z, t0), -x)
    torch.testing.assert_close(linear.conditional_velocity(x, z, t1), z)
    torch.testing.assert_close(linear.conditional_score(x, z, t1), zero)
    torch.testing.assert_close(poly.conditional_velocity(x, z, t1), 2 * z)
    for schedule in SCHEDULES:  # every conversion at both ends: finite, in float32 too
        path = fd.GaussianPath(schedule)
        for t, (source, target) in itertools.product([t0, t1], itertools.product(PREDICTIONS, PREDICTIONS)):
            out = path.convert(value, x, t, source, target)
            assert torch.isfinite(out).all(), (schedule, t, source, target)


def test_polynomial_exponent_below_one_is_refused():
    for n in [0.5, 0.0, -1.0, float("nan"), float("inf"), True, "2"]:
        with pytest.raises(InvalidInputError, match="finite number >= 1"):
            Polynomial(n)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    one, linear = Polynomial(1)(t), Linear()(t)
    for name in ("alpha", "beta", "d_alpha", "d_beta"):
        torch.testing.assert_close(getattr(one, name), getattr(linear, name), rtol=0, atol=0)
    s = Polynomial(3.5)(t)
    torch.testing.assert_close(s.d_alpha, 3.5 * t**2.5, rtol=0, atol=0)
    assert float(s.d_alpha[0]) == 0.0 and float(s.alpha[0]) == 0.0


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
