"""The contracts of layer 1 that the mathematical tests leave open: exact error messages, documented
defaults, the edges of the accepted ranges, one exact step of every tableau, and precision kept in float64.
(Found by mutation testing: each test pins down behaviour that a changed line would alter.)"""

from __future__ import annotations

import math
import re

import pytest
import torch

import flowdiff as fd
from flowdiff.dynamics import grids
from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.dynamics.simulate import check_grid
from flowdiff.dynamics.solvers import SOLVERS, EulerMaruyama, RungeKutta, register, solver_names
from flowdiff.errors import IncompatibleError, InvalidInputError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raises_exactly(error: type, message: str):
    """pytest.raises matching the whole message, not a part of it."""
    return pytest.raises(error, match="^" + re.escape(message) + "$")


ZERO = lambda x, t: torch.zeros_like(x)  # noqa: E731
F64 = torch.float64


def same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal in value and dtype, to the last bit."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_error_messages_of_equations_solvers_and_simulate():
    x0, ts = torch.zeros(2, 1), fd.grids.uniform(0.0, 1.0, 4)
    with raises_exactly(IncompatibleError, "ODE drift must be callable f(x, t), got <class 'int'>"):
        ODE(3)
    with raises_exactly(IncompatibleError, "SDE drift must be callable f(x, t), got <class 'int'>"):
        SDE(3, 1.0)
    with raises_exactly(InvalidInputError, "a constant diffusion coefficient (1.0) is additive noise; "
                        "pass additive=False only with a callable sigma(x, t) that depends on x"):
        SDE(ZERO, 1.0, additive=False)
    with raises_exactly(IncompatibleError, "solver 'euler' integrates an ODE, got an SDE; "
                        "choose one of: euler_maruyama, stochastic_heun"):
        fd.simulate(SDE(ZERO, 1.0), x0, ts, "euler")
    refusal = ("stochastic Heun converges to the Stratonovich solution when sigma depends on x, not to the "
               "Itô solution of this SDE; use euler_maruyama, or, if sigma(x, t) depends on t only, declare "
               "it with SDE(drift, diffusion, additive=True)")
    with raises_exactly(IncompatibleError, refusal):
        fd.simulate(SDE(ZERO, lambda x, t: x), x0, ts, "stochastic_heun")
    with raises_exactly(InvalidInputError, "Butcher tableau rows a, weights b and nodes c must match"):
        RungeKutta("bad", 1, a=[[]], b=[1.0, 0.0], c=[0.0])
    with raises_exactly(InvalidInputError, "rtol and atol must be > 0, got 0.0, 1e-05"):
        fd.solvers.Dopri5(rtol=0.0)
    with raises_exactly(InvalidInputError, "rtol and atol must be > 0, got 1e-05, 0.0"):
        fd.solvers.Dopri5(atol=0.0)
    with raises_exactly(InvalidInputError, "the state of shape (2, 1) became (2, 3): "
                        "the drift and diffusion must return tensors broadcastable to x"):
        fd.simulate(ODE(lambda x, t: torch.zeros(1, 3)), x0, ts)
    with raises_exactly(IncompatibleError, "equation must be an ODE or SDE, got str"):
        fd.simulate("dX = -X dt", x0, ts)
    with raises_exactly(IncompatibleError, "x0 must be a torch.Tensor, got list"):
        fd.simulate(ODE(ZERO), [0.0], ts)
    with raises_exactly(InvalidInputError, "x0 contains NaN or inf"):
        fd.simulate(ODE(ZERO), torch.tensor([[math.nan]]), ts)
    with raises_exactly(InvalidInputError, "time grid contains NaN or inf"):
        check_grid(torch.tensor([0.0, math.inf]))
    with raises_exactly(InvalidInputError, "time grid must be strictly increasing or strictly decreasing"):
        check_grid(torch.tensor([1.0, 0.5, 0.5]))  # decreasing, then a zero step
    with raises_exactly(InvalidInputError, "an SDE is simulated forwards in time: ts must increase"):
        fd.simulate(SDE(ZERO, 1.0), x0, torch.tensor([1.0, 0.0]), "euler_maruyama")


def test_error_messages_of_processes_densities_and_grids():
    for make in [fd.BrownianMotion, lambda sigma: fd.OrnsteinUhlenbeck(0.5, sigma),
                 lambda sigma: fd.Langevin(fd.Gaussian([0.0]), sigma)]:
        with raises_exactly(InvalidInputError, "sigma must be a number >= 0, got -1.0"):
            make(-1.0)
    with raises_exactly(InvalidInputError, "theta must be a number >= 0, got -1.0"):
        fd.OrnsteinUhlenbeck(-1.0, 1.0)
    with raises_exactly(InvalidInputError, "Langevin needs a density with a score(x) method, got int"):
        fd.Langevin(3)
    with raises_exactly(InvalidInputError, "covariance matrices must be symmetric positive definite"):
        fd.GaussianMixture([[0.0, 0.0]], [[1.0, 2.0], [2.0, 1.0]])
    with raises_exactly(InvalidInputError, "need nmodes >= 1 and std > 0, got 5, 0.0"):
        fd.GaussianMixture.random_2d(std=0.0)
    with raises_exactly(InvalidInputError, "need nmodes >= 1 and std > 0, got 0, 1.0"):
        fd.GaussianMixture.random_2d(nmodes=0)
    with raises_exactly(InvalidInputError, "need nmodes >= 1 and std > 0, got 0, 1.0"):
        fd.GaussianMixture.symmetric_2d(nmodes=0)
    with raises_exactly(InvalidInputError, "weights must be 2 positive numbers, got [1.0, 0.0]"):
        fd.GaussianMixture([[0.0], [1.0]], weights=[1.0, 0.0])
    with raises_exactly(InvalidInputError, "steps must be a positive integer, got 0"):
        grids.uniform(steps=0)
    with raises_exactly(InvalidInputError, "shift must be > 0, got 0.0"):
        grids.shifted(shift=0.0)
    with raises_exactly(InvalidInputError, "rho must be > 0, got 0.0"):
        grids.rho(rho=0.0)
    for bad in (0.0, 1.0):
        with raises_exactly(InvalidInputError, f"min_remaining must be in (0, 1), got {bad}"):
            grids.rho(min_remaining=bad)


def test_documented_defaults():
    same(grids.uniform(), torch.linspace(0.0, 1.0, 101))
    s = torch.linspace(0.0, 1.0, 101, dtype=F64)
    torch.testing.assert_close(grids.shifted(), (s / (s + 3.0 * (1 - s))).float(), rtol=0, atol=0)
    assert grids.rho().shape == (101,) and grids.rho()[-2] == torch.tensor(1 - 1e-3, dtype=torch.float32)
    assert float(grids.rho()[-1]) == 1.0
    assert fd.BrownianMotion().sigma == 1.0 and fd.Langevin(fd.Gaussian([0.0])).sigma == 1.0
    ou = fd.OrnsteinUhlenbeck()
    assert (ou.theta, ou.sigma) == (0.25, 1.0)
    mixture = fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]])
    same(mixture.covs, torch.eye(2).expand(2, 2, 2))
    same(fd.Gaussian([0.0, 0.0]).cov, torch.eye(2))
    angles = torch.linspace(0, 2 * math.pi, 6)[:5]
    circle = fd.GaussianMixture.symmetric_2d()
    torch.testing.assert_close(circle.means, 10.0 * torch.stack([angles.cos(), angles.sin()], 1))
    same(circle.covs, torch.eye(2).expand(5, 2, 2))
    random = fd.GaussianMixture.random_2d(generator=gen(0))
    torch.testing.assert_close(random.means, (torch.rand(5, 2, generator=gen(0)) * 2 - 1) * 10.0)
    same(random.covs, torch.eye(2).expand(5, 2, 2))


def test_names_reprs_and_the_registry():
    for name in ["euler", "midpoint", "heun", "rk4", "dopri5", "euler_maruyama", "stochastic_heun"]:
        assert fd.get_solver(name).name == name
    assert repr(fd.get_solver("rk4")) == "RungeKutta('rk4', order=4)"
    assert repr(EulerMaruyama()) == "EulerMaruyama()"
    assert solver_names() == list(SOLVERS)
    assert solver_names(ODE) == ["euler", "midpoint", "heun", "rk4", "dopri5"]
    register("half_euler", lambda: RungeKutta("half_euler", 1, a=[[]], b=[0.5], c=[0.0]))
    try:
        assert fd.get_solver("half_euler").b == (0.5,)
    finally:
        del SOLVERS["half_euler"]
    assert repr(SDE(ZERO, 1.0)).startswith("SDE(drift=")
    assert repr(fd.GaussianMixture([[0.0, 1.0]] * 3)) == "GaussianMixture(K=3, d=2)"
    assert repr(fd.Gaussian([0.0, 1.0])) == "Gaussian(K=1, d=2)"


def tx(x, t):
    """u(x, t) = t x: depends on both, so every node c_i and every coefficient a_ij shows in one step."""
    return t * x


def test_one_step_of_each_tableau_is_its_formula():
    x0, t, h = torch.tensor([[1.0]], dtype=F64), 0.25, 0.5
    ts = torch.tensor([t, t + h], dtype=F64)
    u = lambda x, s: s * x  # noqa: E731
    k1 = u(1.0, t)
    expected = {
        "euler": 1 + h * k1,
        "midpoint": 1 + h * u(1 + h / 2 * k1, t + h / 2),
        "heun": 1 + h / 2 * (k1 + u(1 + h * k1, t + h)),
    }
    k2 = u(1 + h / 2 * k1, t + h / 2)
    k3 = u(1 + h / 2 * k2, t + h / 2)
    k4 = u(1 + h * k3, t + h)
    expected["rk4"] = 1 + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    for name, value in expected.items():
        final = fd.simulate(ODE(tx), x0, ts, name).final
        assert float(final) == pytest.approx(value, rel=1e-15), name
    # One-stage tableaux other than Euler's: the weight and the node are used, not assumed.
    for b, c in [(0.5, 0.0), (2.0, 0.0), (1.0, 0.5), (1.0, 1.0)]:
        method = RungeKutta("one_stage", 1, a=[[]], b=[b], c=[c])
        final = fd.simulate(ODE(tx), x0, ts, method).final
        assert float(final) == pytest.approx(1 + h * b * u(1.0, t + c * h), rel=1e-15), (b, c)


def test_brownian_increments_are_float64_draws_of_the_generator():
    # X = sigma W on a float64 grid: the increments are sqrt(dt) * randn(dtype=float64) in step order.
    bm, x0 = fd.BrownianMotion(sigma=2.0), torch.zeros(3, 2, dtype=F64)
    ts = torch.tensor([0.0, 0.5, 0.75, 1.0], dtype=F64)
    states = fd.simulate(bm, x0, ts, "euler_maruyama", save="all", generator=gen(9)).states
    g = gen(9)
    draws = torch.stack([torch.randn(3, 2, generator=g, dtype=F64) for _ in range(3)])
    increments = 2.0 * draws * torch.tensor([0.5, 0.25, 0.25], dtype=F64).sqrt()[:, None, None]
    torch.testing.assert_close(states[1:], increments.cumsum(0), rtol=1e-15, atol=1e-15)


def test_times_reach_the_drift_in_the_state_dtype():
    seen = []
    drift = lambda x, t: seen.append(t.dtype) or torch.zeros_like(x)  # noqa: E731
    fd.simulate(ODE(drift), torch.zeros(2, 1, dtype=F64), torch.linspace(0, 1, 3), "euler")
    assert seen == [torch.float64, torch.float64]
    # An integer grid is taken as times of the default dtype; 1-d states (batch,) are states too.
    same(check_grid(torch.tensor([0, 1, 2])), torch.tensor([0.0, 1.0, 2.0]))
    final = fd.simulate(ODE(lambda x, t: -x), torch.ones(4), fd.grids.uniform(0, 1, 2), "euler").final
    same(final, torch.full((4,), 0.25))


def test_processes_keep_float64_times_and_the_variance_of_brownian_motion():
    ou = fd.OrnsteinUhlenbeck(theta=0.7, sigma=3.0)
    x0 = torch.tensor([[2.0]], dtype=F64)
    assert float(ou.mean(x0, 0.3)) == pytest.approx(2.0 * math.exp(-0.7 * 0.3), rel=1e-15)
    t = torch.tensor([0.1, 0.3], dtype=F64)
    expected = 2.0 * torch.exp(-0.7 * t)[:, None]
    torch.testing.assert_close(ou.mean(x0.expand(2, 1), t), expected, rtol=1e-15, atol=0)
    theta_zero = fd.OrnsteinUhlenbeck(theta=0.0, sigma=3.0)
    assert float(theta_zero.variance(2.0)) == 18.0 and theta_zero.stationary_variance == math.inf


def test_grids_at_the_edges_of_their_branches():
    # rho: an interval within min_remaining of t = 1 is uniform (also exactly at the edge) ...
    same(grids.rho(0.75, 1.0, 4, min_remaining=0.25, dtype=F64),
                               grids.uniform(0.75, 1.0, 4, dtype=F64))
    # ... an end exactly at min_remaining needs no extra last step ...
    i = torch.linspace(0, 1, 5, dtype=F64)
    a, b = 1.0, 0.25 ** (1 / 7)
    expected = 1 - (a + i * (b - a)) ** 7
    torch.testing.assert_close(grids.rho(0.0, 0.75, 4, min_remaining=0.25, dtype=F64), expected,
                               rtol=1e-15, atol=1e-15)
    # ... from t0 = 0.5, the remaining time 1 - t is spaced linearly in its 1/rho power ...
    i = torch.linspace(0, 1, 4, dtype=F64)
    a, b = 0.5 ** (1 / 3), 0.25 ** (1 / 3)
    torch.testing.assert_close(grids.rho(0.5, 0.75, 3, rho=3.0, min_remaining=0.1, dtype=F64),
                               1 - (a + i * (b - a)) ** 3, rtol=1e-15, atol=1e-15)
    # ... and two steps to t = 1 are one spaced step to 1 - min_remaining and the last one.
    torch.testing.assert_close(grids.rho(0.0, 1.0, 2, dtype=F64),
                               torch.tensor([0.0, 1 - 1e-3, 1.0], dtype=F64), rtol=1e-15, atol=1e-15)
    for make in [grids.uniform, grids.shifted, grids.rho]:
        assert make(steps=3, device="meta").device.type == "meta"
    assert grids.rho(0.9995, 1.0, 3, device="meta").device.type == "meta"


def test_densities_keep_the_dtype_of_their_means():
    mixture = fd.GaussianMixture(torch.zeros(2, 3, dtype=F64), 0.1, weights=[1, 3])
    assert mixture.covs.dtype == torch.float64 and float(mixture.covs[0, 0, 0]) == 0.1
    same(mixture.weights, torch.tensor([0.25, 0.75], dtype=F64))
    narrow = fd.GaussianMixture(torch.zeros(1, 2), torch.eye(2, dtype=F64))
    assert narrow.covs.dtype == torch.float32
    integer = fd.GaussianMixture([[0, 1]])
    assert integer.means.dtype == torch.get_default_dtype()
    gaussian = fd.Gaussian(torch.zeros(2, dtype=F64), 0.1)
    assert float(gaussian.cov[0, 0]) == 0.1 and fd.GaussianMixture([[0.0]], 1.0, weights=[2]).weights == 1.0


def test_covariance_forms():
    means = torch.zeros(3, 2, dtype=F64)
    per_component = fd.GaussianMixture(means, torch.tensor([1.0, 2.0, 3.0], dtype=F64))
    same(per_component.covs, torch.tensor([1.0, 2.0, 3.0], dtype=F64)[:, None, None]
                               * torch.eye(2, dtype=F64))
    diagonal = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=F64)
    same(fd.GaussianMixture(means, diagonal).covs, torch.diag_embed(diagonal))
    shared = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    same(fd.GaussianMixture(means, shared).covs, shared.expand(3, 2, 2))


def test_mixture_sample_is_mean_plus_cholesky_factor_times_noise():
    covs = [[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]]]
    mixture = fd.GaussianMixture([[1.0, -1.0], [4.0, 2.0]], covs, weights=[0.3, 0.7])
    x, labels = mixture.sample(50, gen(2), return_labels=True)
    g = gen(2)
    expected_labels = torch.multinomial(mixture.weights, 50, replacement=True, generator=g)
    eps = torch.randn(50, 2, generator=g)
    assert torch.equal(labels, expected_labels)
    expected = mixture.means[labels] + (mixture.chol[labels] @ eps[:, :, None])[:, :, 0]
    torch.testing.assert_close(x, expected)


def test_one_mode_and_scaled_circles():
    one = fd.GaussianMixture.symmetric_2d(nmodes=1, std=0.5, scale=3.0)
    torch.testing.assert_close(one.means, torch.tensor([[3.0, 0.0]]))
    same(one.covs, torch.full((1,), 0.25)[:, None, None] * torch.eye(2))
    random = fd.GaussianMixture.random_2d(nmodes=1, std=0.5, scale=3.0, generator=gen(1))
    torch.testing.assert_close(random.means, (torch.rand(1, 2, generator=gen(1)) * 2 - 1) * 3.0)
    same(random.covs, 0.25 * torch.eye(2)[None])
