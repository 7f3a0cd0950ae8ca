"""SDE solvers: strong orders against exact paths driven by the same Brownian increments, the weak
order of Euler–Maruyama on OU moments, and reproducibility from a seed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.dynamics.equations import ODE, SDE

FINE = 2**10  # fine Brownian grid on [0, 1]; every coarse grid below divides it


def brownian_normals(paths: int, seed: int) -> torch.Tensor:
    """Standard normals xi_k of the fine grid: dW_k = sqrt(1/FINE) xi_k, shape (FINE, paths, 1)."""
    return torch.randn(FINE, paths, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def coarse_normals(fine: torch.Tensor, steps: int) -> torch.Tensor:
    """The same Brownian path on a coarse grid: sum r fine increments, renormalised to N(0, 1)."""
    r = FINE // steps
    return fine.reshape(steps, r, *fine.shape[1:]).sum(1) / math.sqrt(r)


def strong_order(equation, x0, exact_final, fine, steps_list, solver) -> tuple[float, list[float]]:
    """Slope of log E|X_N - X(1)| against log(1/N), the same Brownian path at every resolution."""
    errors = []
    for steps in steps_list:
        ts = fd.grids.uniform(0.0, 1.0, steps, dtype=torch.float64)
        final = fd.simulate(equation, x0, ts, solver=solver, noise=coarse_normals(fine, steps)).final
        errors.append(float((final - exact_final).abs().mean()))
    slope = np.polyfit(np.log([1.0 / n for n in steps_list]), np.log(errors), 1)[0]
    return float(slope), errors


def test_euler_maruyama_strong_order_one_half_on_geometric_brownian_motion():
    # dX = mu X dt + s X dW has X_1 = x0 exp((mu - s^2/2) + s W_1). With this multiplicative noise
    # EM has strong order 1/2 (for additive noise its order is 1, see below). 4000 paths: across
    # seeds 0..9 the measured slope lies in [0.54, 0.57] (pre-asymptotic), inside the 0.15 tolerance;
    # for additive noise (below) it is [0.99, 1.04].
    mu, s, paths = 2.0, 1.0, 4000
    fine = brownian_normals(paths, seed=1)
    w1 = fine.sum(0) / math.sqrt(FINE)
    x0 = torch.ones(paths, 1, dtype=torch.float64)
    exact_final = x0 * torch.exp((mu - 0.5 * s**2) + s * w1)
    gbm = SDE(lambda x, t: mu * x, lambda x, t: s * x)
    slope, errors = strong_order(gbm, x0, exact_final, fine, [8, 16, 32, 64, 128], "euler_maruyama")
    assert abs(slope - 0.5) < 0.15, (slope, errors)


def ou_exact_final(x0, fine, theta, sigma):
    """X_1 = e^{-theta} x0 + sigma int_0^1 e^{-theta (1 - s)} dW_s, the integral by the fine-grid midpoint
    rule (its strong error, about theta sigma FINE^-1 / sqrt(12) ~ 3e-4, is below all the coarse errors)."""
    mid = (torch.arange(FINE, dtype=torch.float64) + 0.5) / FINE
    weights = torch.exp(-theta * (1.0 - mid)).reshape(-1, 1, 1)
    return math.exp(-theta) * x0 + sigma * (weights * fine).sum(0) / math.sqrt(FINE)


@pytest.mark.parametrize("solver", ["stochastic_heun", "euler_maruyama"])
def test_strong_order_one_for_additive_noise(solver):
    # Additive noise: no Milstein correction, so both methods have strong order 1 on the OU process.
    theta, sigma, paths = 1.5, 1.0, 2000
    fine = brownian_normals(paths, seed=2)
    x0 = torch.full((paths, 1), 2.0, dtype=torch.float64)
    exact_final = ou_exact_final(x0, fine, theta, sigma)
    ou = fd.OrnsteinUhlenbeck(theta=theta, sigma=sigma)
    slope, errors = strong_order(ou, x0, exact_final, fine, [8, 16, 32, 64], solver)
    assert abs(slope - 1.0) < 0.15, (slope, errors)
    if solver == "stochastic_heun":
        assert fd.get_solver(solver).order == 1.0


def euler_maruyama_moments(ou, x0: float, steps: int, solver: str = "euler_maruyama") -> tuple[float, float]:
    """E[X_N] and E[X_N^2] of the EM chain, exactly: the chain is linear in (x0, noise), so X_N with zero
    noise is its mean, and X_N from x0 = 0 with noise e_j (a unit impulse at step j) is its coefficient c_j:
    Var X_N = sum_j c_j^2. (The same holds for stochastic Heun with a linear drift and additive noise.)"""
    ts = fd.grids.uniform(0.0, 1.0, steps, dtype=torch.float64)
    start = torch.full((1, 1), x0, dtype=torch.float64)
    mean = fd.simulate(ou, start, ts, solver, noise=torch.zeros(steps, 1, 1, dtype=torch.float64))
    impulses = torch.eye(steps, dtype=torch.float64).reshape(steps, steps, 1)  # path j: noise e_j
    coefficients = fd.simulate(ou, torch.zeros(steps, 1, dtype=torch.float64), ts, solver,
                               noise=impulses).final
    m = float(mean.final)
    return m, m**2 + float((coefficients**2).sum())


def test_euler_maruyama_weak_order_one_on_ou_moments():
    theta, sigma, x0 = 1.0, 0.8, 1.5
    ou = fd.OrnsteinUhlenbeck(theta=theta, sigma=sigma)
    exact_mean = float(ou.mean(torch.tensor([[x0]], dtype=torch.float64), 1.0))
    exact_second = exact_mean**2 + float(ou.variance(torch.tensor(1.0, dtype=torch.float64)))
    steps_list = [10, 20, 40, 80, 160]
    moments = [euler_maruyama_moments(ou, x0, n) for n in steps_list]
    log_h = np.log([1.0 / n for n in steps_list])
    mean_slope = np.polyfit(log_h, np.log([abs(m - exact_mean) for m, _ in moments]), 1)[0]
    second_slope = np.polyfit(log_h, np.log([abs(s - exact_second) for _, s in moments]), 1)[0]
    assert abs(mean_slope - 1.0) < 0.15 and abs(second_slope - 1.0) < 0.15, (mean_slope, second_slope)
    assert fd.get_solver("euler_maruyama").weak_order == 1.0


def test_exact_em_moments_match_monte_carlo():
    # Ties the linear-algebra moments above to random simulation: with 20000 paths at 10 steps the sample
    # mean has standard error sd/sqrt(n), the sample second moment sqrt(Var(X^2)/n); 4 standard errors each.
    theta, sigma, x0, n = 1.0, 0.8, 1.5, 20000
    ou = fd.OrnsteinUhlenbeck(theta=theta, sigma=sigma)
    mean, second = euler_maruyama_moments(ou, x0, 10)
    ts = fd.grids.uniform(0.0, 1.0, 10, dtype=torch.float64)
    start = torch.full((n, 1), x0, dtype=torch.float64)
    final = fd.simulate(ou, start, ts, "euler_maruyama", generator=torch.Generator().manual_seed(3)).final
    assert abs(float(final.mean()) - mean) < 4 * float(final.std()) / math.sqrt(n)
    assert abs(float((final**2).mean()) - second) < 4 * float((final**2).std()) / math.sqrt(n)


@pytest.mark.parametrize("solver", ["euler_maruyama", "stochastic_heun"])
def test_same_seed_same_trajectory_different_seeds_differ(solver):
    ou = fd.OrnsteinUhlenbeck(theta=0.5, sigma=1.0)
    x0, ts = torch.zeros(8, 2), fd.grids.uniform(0.0, 1.0, 50)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return fd.simulate(ou, x0, ts, solver, save="all", generator=generator).states

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_given_noise_decides_the_path():
    bm = fd.BrownianMotion(sigma=2.0)
    ts = fd.grids.uniform(0.0, 1.0, 4)
    noise = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0))
    a = fd.simulate(bm, torch.zeros(3, 2), ts, "euler_maruyama", save="all", noise=noise,
                    generator=torch.Generator().manual_seed(1))
    b = fd.simulate(bm, torch.zeros(3, 2), ts, "euler_maruyama", save="all", noise=noise)
    assert torch.equal(a.states, b.states)
    # X_t = sigma W_t: the partial sums of sqrt(dt) * noise, scaled by sigma.
    assert torch.allclose(a.states[1:], 2.0 * 0.5 * noise.cumsum(0), atol=1e-6)


@pytest.mark.parametrize("sde_solver, ode_solver", [("euler_maruyama", "euler"), ("stochastic_heun", "heun")])
def test_zero_diffusion_is_the_ode_method(sde_solver, ode_solver):
    drift = lambda x, t: torch.sin(t) - x**3  # noqa: E731
    x0, ts = torch.linspace(-1, 1, 6).reshape(3, 2), fd.grids.uniform(0.0, 1.0, 20)
    sde = fd.simulate(SDE(drift, 0.0), x0, ts, sde_solver, generator=torch.Generator().manual_seed(0)).final
    ode = fd.simulate(ODE(drift), x0, ts, ode_solver).final
    assert torch.allclose(sde, ode, atol=1e-6)


def test_per_dimension_and_time_dependent_diffusion():
    # sigma_t = (0, t): the first coordinate does not move, the second has Var X_1 = int_0^1 t^2 dt = 1/3.
    n = 20000
    sde = SDE(lambda x, t: torch.zeros_like(x), lambda x, t: torch.stack([0 * t, t]), additive=True)
    x0, ts = torch.zeros(n, 2, dtype=torch.float64), fd.grids.uniform(0.0, 1.0, 200, dtype=torch.float64)
    for solver in ["euler_maruyama", "stochastic_heun"]:
        final = fd.simulate(sde, x0, ts, solver, generator=torch.Generator().manual_seed(4)).final
        assert torch.equal(final[:, 0], x0[:, 0])
        # EM's variance is sum t_k^2 dt = 1/3 - 1/(2N) + ..., Heun's (trapezoid weights) 1/3 + O(1/N^2):
        # both within 0.003 of 1/3, below one standard error 1/3 sqrt(2/n) = 0.0033; allow 4 of them.
        assert abs(float(final[:, 1].var()) - 1 / 3) < 4 * (1 / 3) * math.sqrt(2 / n)


def test_image_shaped_sde_states():
    x0 = torch.zeros(2, 1, 4, 4)
    traj = fd.simulate(fd.OrnsteinUhlenbeck(1.0, 1.0), x0, fd.grids.uniform(0, 1, 10), "stochastic_heun",
                       save="all", generator=torch.Generator().manual_seed(0))
    assert traj.states.shape == (11, 2, 1, 4, 4)


def geometric_brownian_motion(mu: float, s: float) -> SDE:
    """dX = mu X dt + s X dW (Itô): multiplicative noise, sigma(x, t) = s x depends on the state."""
    return SDE(lambda x, t: mu * x, lambda x, t: s * x)


def test_stochastic_heun_refuses_state_dependent_noise_without_evaluating_it():
    calls = []

    def drift(x, t):
        calls.append("drift")
        return x

    def diffusion(x, t):
        calls.append("diffusion")
        return x

    x0, ts = torch.ones(4, 1), fd.grids.uniform(0.0, 1.0, 8)
    refused = "Stratonovich solution when sigma depends on x"
    with pytest.raises(fd.errors.IncompatibleError, match=refused) as e:
        fd.simulate(SDE(drift, diffusion), x0, ts, "stochastic_heun")
    assert "euler_maruyama" in str(e.value) and "additive=True" in str(e.value)
    assert calls == []
    # Euler–Maruyama takes the same equation: 8 steps, one drift and one diffusion call each.
    fd.simulate(SDE(drift, diffusion), x0, ts, "euler_maruyama", generator=torch.Generator().manual_seed(0))
    assert calls == ["drift", "diffusion"] * 8


def test_declaring_additive_noise():
    drift = lambda x, t: -x  # noqa: E731
    assert SDE(drift, 0.5).additive is True
    assert SDE(drift, lambda x, t: 1 + t).additive is False  # a callable may depend on x
    assert SDE(drift, lambda x, t: 1 + t, additive=True).additive is True
    assert SDE(drift, lambda x, t: 1 + t, additive=False).additive is False

    class TimeOnly:
        additive = True

        def __call__(self, x, t):
            return 1 + t

    assert SDE(drift, TimeOnly()).additive is True
    assert SDE(drift, TimeOnly(), additive=False).additive is False  # the keyword wins
    assert "additive=True" in repr(SDE(drift, TimeOnly()))
    processes = [fd.BrownianMotion(1.0), fd.OrnsteinUhlenbeck(0.5, 1.0), fd.Langevin(fd.Gaussian([0.0]), 1.0)]
    for process in processes:
        assert process.additive is True
        fd.get_solver("stochastic_heun").check(process)
    with pytest.raises(fd.errors.InvalidInputError, match="constant diffusion coefficient"):
        SDE(drift, 1.0, additive=False)
    with pytest.raises(fd.errors.InvalidInputError, match="additive must be True, False or None"):
        SDE(drift, lambda x, t: t, additive="yes")


def test_stochastic_heun_on_multiplicative_noise_would_converge_to_stratonovich():
    # Why the refusal: driven past `check`, the trapezoid rule solves dX = mu X dt + s X o dW (Stratonovich),
    # X_1 = x0 exp(mu + s W_1), with strong order 1, not the Itô solution x0 exp(mu - s^2/2 + s W_1).
    mu, s, paths = 0.5, 1.0, 400
    fine = brownian_normals(paths, seed=5)
    w1 = fine.sum(0) / math.sqrt(FINE)
    x0 = torch.ones(paths, 1, dtype=torch.float64)
    stratonovich, ito = x0 * torch.exp(mu + s * w1), x0 * torch.exp(mu - 0.5 * s**2 + s * w1)
    heun, errors = fd.get_solver("stochastic_heun"), []
    for steps in [16, 32, 64, 128]:
        ts = fd.grids.uniform(0.0, 1.0, steps, dtype=torch.float64)
        states, _ = heun.integrate(geometric_brownian_motion(mu, s), x0, ts, False,
                                   noise=coarse_normals(fine, steps))
        errors.append(float((states[-1] - stratonovich).abs().mean()))
    slope = np.polyfit(np.log([1 / 16, 1 / 32, 1 / 64, 1 / 128]), np.log(errors), 1)[0]
    assert abs(slope - 1.0) < 0.15, (slope, errors)
    # Far from the Itô solution: the mean gap E|Strat - Ito| = E[X] (1 - e^{-1/2}) is ~ 0.6, the error 1e-2.
    assert float((states[-1] - ito).abs().mean()) > 30 * errors[-1]


@pytest.mark.parametrize("steps", [4, 10, 25])
def test_stochastic_heun_averages_a_time_dependent_noise_coefficient(steps):
    # dX = t dW from 0: Var X_1 = int_0^1 t^2 dt = 1/3. Heun's noise coefficient is the trapezoid average
    # (t_k + t_k+1)/2, so its chain has Var = h^3 sum_k (k + 1/2)^2 = 1/3 - h^2/12 (error O(h^2)); the
    # left point t_k of Euler–Maruyama gives h^3 sum_k k^2 = 1/3 - h/2 + h^2/6 (error O(h)).
    # Exact moments of the linear chains, not sampled.
    sde = SDE(lambda x, t: torch.zeros_like(x), lambda x, t: t, additive=True)
    h = 1.0 / steps
    mean, second = euler_maruyama_moments(sde, 0.0, steps, "stochastic_heun")
    assert mean == 0.0
    assert second == pytest.approx(1 / 3 - h**2 / 12, rel=1e-12)
    _, second_em = euler_maruyama_moments(sde, 0.0, steps, "euler_maruyama")
    assert second_em == pytest.approx(1 / 3 - h / 2 + h**2 / 6, rel=1e-12)
