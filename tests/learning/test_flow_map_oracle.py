"""The analytic oracle of flow maps: on the linear path the exact map of Gaussian (closed form) and Gaussian-mixture
data (the closed-form marginal velocity integrated by a tight dopri5) satisfies the MeanFlow identity, improved
MeanFlow's compound velocity and the shortcut self-consistency that the losses train, in flowdiff's time direction
(noise at t = 0, data at t = 1)."""

from __future__ import annotations

import math

import torch

import flowdiff as fd
from flowdiff.dynamics.solvers import Dopri5
from flowdiff.learning.flowmaps import MeanFlow, meanflow_target, shortcut_target
from flowdiff.learning.flowmaps.common import per_example
from flowdiff.learning.flowmaps.meanflow import average_velocity_and_derivative, improved_velocity

PATH = fd.GaussianPath("linear")
TIGHT = Dopri5(rtol=1e-10, atol=1e-10)


class GaussianFlowMap(torch.nn.Module):
    """The exact flow map of data N(mu, s^2 I) on the linear path: X_r = r mu + (sigma_r / sigma_t)(x - t mu),
    sigma_t^2 = t^2 s^2 + (1 - t)^2, as the average velocity u(x, r, t) = (X_r - x) / (r - t) (r = t: its limit)."""

    flow_map = True

    def __init__(self, mu: torch.Tensor, s: float) -> None:
        super().__init__()
        self.mu, self.s = mu, s

    def sigma(self, t):
        return torch.sqrt(t**2 * self.s**2 + (1 - t) ** 2)

    def forward(self, x, t, r=None):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        r = t if r is None else torch.as_tensor(r, dtype=x.dtype).reshape(-1, 1)
        h = r - t
        # (sigma_r / sigma_t - 1) / h, written to stay finite (and exact in the limit) at h = 0
        ratio = (self.sigma(r) ** 2 - self.sigma(t) ** 2) / (self.sigma(t) * (self.sigma(r) + self.sigma(t)))
        d_log_sigma = (t * self.s**2 - (1 - t)) / self.sigma(t) ** 2
        slope = torch.where(h.abs() > 1e-12, ratio / torch.where(h == 0, 1.0, h), d_log_sigma)
        return self.mu + slope * (x - t * self.mu)


class ExactFlowMap:
    """The exact flow map of a Gaussian mixture: its marginal velocity integrated from t to r by dopri5
    (one time pair for the whole batch); u(x, t, t) is the marginal velocity itself."""

    flow_map = True

    def __init__(self, mixture) -> None:
        self.velocity = fd.MarginalField(PATH, mixture)

    def flow(self, x, t, r):
        return fd.simulate(fd.ODE(self.velocity), x, torch.tensor([t, r], dtype=x.dtype), solver=TIGHT).final

    def __call__(self, x, t, r=None):
        t = float(torch.as_tensor(t).reshape(-1)[0])
        r = t if r is None else float(torch.as_tensor(r).reshape(-1)[0])
        if r == t:
            return self.velocity(x, t)
        return (self.flow(x, t, r) - x) / (r - t)


def mixture():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=torch.float64)
    return fd.GaussianMixture(means, torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
                              weights=torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64))


def points(n=64, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_the_closed_form_gaussian_map_is_the_flow_of_the_marginal_velocity():
    mu, s = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.6
    exact = GaussianFlowMap(mu, s)
    gaussian = fd.GaussianMixture(mu[None], s**2)
    x, t, r = points(), 0.2, 0.9
    integrated = fd.simulate(fd.ODE(fd.MarginalField(PATH, gaussian)), x, torch.tensor([t, r], dtype=torch.float64),
                             solver=TIGHT).final
    assert torch.allclose(x + (r - t) * exact(x, t, r=r), integrated, atol=1e-9)
    # u(x, t, t) is the marginal velocity (exact to rounding), and r = None means r = t
    assert torch.allclose(exact(x, t), fd.marginal_velocity(PATH, gaussian, x, t), atol=1e-12)
    assert torch.equal(exact(x, t), exact(x, t, r=t))


def test_the_meanflow_target_by_jvp_reproduces_the_exact_gaussian_map():
    """With the marginal velocity as tangent, v + (r - t) d/dt u of the exact map is u itself (rounding)."""
    mu, s = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.6
    exact, gaussian = GaussianFlowMap(mu, s), fd.GaussianMixture(mu[None], s**2)
    x = points()
    t = torch.rand(64, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    r = t + (1 - t) * torch.rand(64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = fd.marginal_velocity(PATH, gaussian, x, t)
    u, derivative = average_velocity_and_derivative(exact, x, t, r, v, {})
    assert torch.allclose(meanflow_target(v, derivative, t, r), u, atol=1e-10)
    # the paper's sign convention read in flowdiff's direction would be v - (r - t) d/dt u: wrong here by O(1)
    assert (v - (r - t)[:, None] * derivative - u).abs().max() > 0.1


def _gaussian_times(n=64):
    t = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    return t, t + (1 - t) * torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_the_improved_compound_velocity_of_the_exact_gaussian_map_is_the_marginal_velocity():
    """Improved MeanFlow regresses V = u - (r - t) sg(d/dt u), the JVP's tangent being the network's own u(z, t, t),
    on the conditional velocity; E[v_cond | z] is the marginal velocity, so the exact map makes the expected residual
    V - v vanish (rounding). With the paper's sign read in flowdiff's direction, u + (r - t) d/dt u, it is O(1)."""
    mu, s = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.6
    exact, gaussian = GaussianFlowMap(mu, s), fd.GaussianMixture(mu[None], s**2)
    x, (t, r) = points(), _gaussian_times()
    v = fd.marginal_velocity(PATH, gaussian, x, t)
    assert torch.allclose(MeanFlow._improved_prediction(exact, x, t, r, {}), v, atol=1e-10)
    u, derivative = average_velocity_and_derivative(exact, x, t, r, exact(x, t), {})
    assert torch.allclose(improved_velocity(u, derivative, t, r), v, atol=1e-10)
    assert (u + (r - t)[:, None] * derivative - v).abs().max() > 0.1


def test_the_improved_loss_of_the_exact_gaussian_map_is_the_conditional_variance_alone():
    """On Gaussian data the improved loss of the exact map is, draw for draw, E |v(x_t, t) - v_cond|^2 (the part of
    the loss no network can remove): its time pairs (both laws), path samples and compound velocity, end to end."""
    mu, s = torch.tensor([1.5, -0.5], dtype=torch.float64), 0.6
    exact, gaussian = GaussianFlowMap(mu, s), fd.GaussianMixture(mu[None], s**2)
    x1 = gaussian.sample(512, generator=torch.Generator().manual_seed(4))
    for law in ("uniform", "logit_normal"):
        loss = MeanFlow(flow_share=0.5, time_law=law, variant="improved")
        got = loss(exact, PATH, x1, generator=torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        x0 = torch.randn(x1.shape, generator=g, dtype=x1.dtype)
        t, _ = loss.times(torch.rand(512, generator=g, dtype=x1.dtype), g, "cpu", x1.dtype)
        sample = PATH.sample(x1, t, noise=x0)
        want = per_example(fd.marginal_velocity(PATH, gaussian, sample.x_t, t) - sample.velocity).mean()
        assert torch.allclose(got, want, rtol=1e-9), (law, got, want)
        original = MeanFlow(flow_share=0.5, time_law=law)(exact, PATH, x1, generator=torch.Generator().manual_seed(5))
        assert abs(float(original - want)) > 1e-2  # the original keeps v_cond inside its target (measured 0.67, 0.76)


def test_the_mixture_map_satisfies_the_meanflow_identity_with_second_order_finite_differences():
    """u(x, r, t) - [v(x, t) + (r - t) d/dt u] with d/dt u by central differences along the exact trajectory:
    the residual is the difference's truncation error, so it falls as h^2 (a sign error would leave O(1))."""
    exact, x, t, r = ExactFlowMap(mixture()), points(32), 0.3, 0.8
    u, v = exact(x, t, r=r), exact(x, t)

    def residual(h):
        later, earlier = exact.flow(x, t, t + h), exact.flow(x, t, t - h)
        derivative = (exact(later, t + h, r=r) - exact(earlier, t - h, r=r)) / (2 * h)
        return u - meanflow_target(v, derivative, torch.tensor([t]), torch.tensor([r]))

    _falls_as_h_squared([residual(h) for h in (0.02, 0.01)])


def _falls_as_h_squared(residuals):
    errors = [float(e.abs().max()) for e in residuals]
    assert abs(math.log2(errors[0] / errors[1]) - 2) < 0.1, errors
    # Richardson: the h^2 terms cancel, leaving O(h^4) and dopri5's endpoint error over 2h: under 2% of the residual
    assert float(((4 * residuals[1] - residuals[0]) / 3).abs().max()) < 0.02 * errors[1]


def test_the_improved_compound_velocity_of_the_mixture_map_is_its_velocity_with_finite_differences():
    """V = u(x, r, t) - (r - t) d/dt u, d/dt u by central differences along the exact trajectory, less the marginal
    velocity: the difference's truncation error alone, falling as h^2 (the other sign would leave O(1))."""
    exact, x, t, r = ExactFlowMap(mixture()), points(32), 0.3, 0.8
    u, v = exact(x, t, r=r), exact(x, t)

    def derivative(h):
        later, earlier = exact.flow(x, t, t + h), exact.flow(x, t, t - h)
        return (exact(later, t + h, r=r) - exact(earlier, t - h, r=r)) / (2 * h)

    times = torch.tensor([t]), torch.tensor([r])
    _falls_as_h_squared([improved_velocity(u, derivative(h), *times) - v for h in (0.02, 0.01)])
    assert float((u + (r - t) * derivative(0.01) - v).abs().max()) > 0.1


def test_the_shortcut_target_of_the_exact_maps_is_the_one_step_map():
    """Two exact steps of size d are one of size 2d: for the Gaussian (closed form) and the mixture (dopri5)."""
    x, n = points(32), 32
    t, d = torch.full((n,), 0.25, dtype=torch.float64), torch.full((n,), 0.3, dtype=torch.float64)
    gaussian = GaussianFlowMap(torch.tensor([1.5, -0.5], dtype=torch.float64), 0.6)
    assert torch.allclose(shortcut_target(gaussian, x, t, d), gaussian(x, t, r=t + 2 * d), atol=1e-12)
    exact = ExactFlowMap(mixture())
    assert torch.allclose(shortcut_target(exact, x, t, d), exact(x, t, r=t + 2 * d), atol=1e-8)
    # the tolerance is the dopri5 tolerance; the targets differ from the one-step Euler guess by O(1)
    assert (exact(x, t, r=t + 2 * d) - exact(x, t)).abs().max() > 0.1


def test_the_average_velocity_tends_to_the_marginal_velocity_as_r_tends_to_t():
    """u(x, t + h, t) = v(x, t) + h/2 dv/dt + O(h^2): the gap to the marginal velocity falls with order 1."""
    exact, x, t = ExactFlowMap(mixture()), points(32), 0.4
    v = fd.marginal_velocity(PATH, mixture(), x, t)
    gaps = [float((exact(x, t, r=t + h) - v).abs().max()) for h in (0.04, 0.02, 0.01)]
    orders = [math.log2(a / b) for a, b in zip(gaps, gaps[1:])]
    assert all(abs(order - 1) < 0.15 for order in orders), (gaps, orders)
