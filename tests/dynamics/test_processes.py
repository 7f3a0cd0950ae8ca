"""Processes of Lecture 1 against their closed forms: Brownian motion, Ornstein–Uhlenbeck, Langevin.

Every statistical check uses a fixed seed and a tolerance of 4 standard errors of the estimator,
with the discretisation bias of Euler–Maruyama bounded (in a comment) well below one of them.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

import flowdiff as fd

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_brownian_increments_mean_variance_independence():
    sigma, n, steps, t_end = 0.7, 4000, 10, 2.0
    ts = fd.grids.uniform(0.0, t_end, steps, dtype=F64)
    traj = fd.simulate(fd.BrownianMotion(sigma), torch.zeros(n, 1, dtype=F64), ts, "euler_maruyama",
                       save="all", generator=gen(0))
    increments = (traj.states[1:] - traj.states[:-1])[..., 0]  # (steps, n)
    dt = t_end / steps
    # mean: standard error sigma sqrt(dt) / sqrt(n); sample variance: sigma^2 dt sqrt(2 / (n - 1)).
    assert (increments.mean(1).abs() < 4 * sigma * math.sqrt(dt / n)).all()
    assert ((increments.var(1) - sigma**2 * dt).abs() < 4 * sigma**2 * dt * math.sqrt(2 / (n - 1))).all()
    # independence: the correlation of two independent increments has standard error 1 / sqrt(n).
    corr = torch.corrcoef(increments)
    off_diagonal = corr[~torch.eye(steps, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 4 / math.sqrt(n)
    # X_t = sigma W_t: Var X_t = sigma^2 t at every t (the increments are exact for Brownian motion).
    var_t = traj.states[1:, :, 0].var(1)
    expected = fd.BrownianMotion(sigma).variance(ts[1:]).to(F64)
    assert ((var_t - expected).abs() < 4 * expected * math.sqrt(2 / (n - 1))).all()


def test_brownian_motion_from_a_start_and_by_seed():
    bm = fd.BrownianMotion(sigma=1.0)
    x0 = torch.tensor([[1.0, -2.0]])
    assert torch.equal(bm.mean(x0, 3.0), x0)
    ts = fd.grids.uniform(0, 1, 20)
    a = fd.simulate(bm, x0, ts, "euler_maruyama", save="all", generator=gen(5)).states
    b = fd.simulate(bm, x0, ts, "euler_maruyama", save="all", generator=gen(5)).states
    assert torch.equal(a, b) and torch.equal(a[0], x0)
    assert float(fd.BrownianMotion(0.0).diffusion(x0, torch.tensor(0.0))) == 0.0


def test_ou_mean_and_variance_match_closed_form_at_several_times():
    theta, sigma, x0, n = 0.5, 1.2, 3.0, 10000
    ou = fd.OrnsteinUhlenbeck(theta=theta, sigma=sigma)
    ts = fd.grids.uniform(0.0, 4.0, 400, dtype=F64)  # dt = 0.01
    traj = fd.simulate(ou, torch.full((n, 1), x0, dtype=F64), ts, "euler_maruyama", save="all",
                       generator=gen(1))
    # EM bias: relative variance error about theta dt / 2 = 0.25%, mean error about theta^2 t dt / 2 <= 0.5%
    # of x0 e^{-theta t}; the standard errors are sqrt(2/n) = 1.4% (variance) and sqrt(var/n) (mean).
    for index in [50, 100, 200, 400]:
        t = ts[index]
        xs = traj.states[index, :, 0]
        mean = float(ou.mean(torch.tensor([[x0]], dtype=F64), t))
        var = float(ou.variance(t))
        assert abs(float(xs.mean()) - mean) < 4 * math.sqrt(var / n), (float(t), float(xs.mean()), mean)
        assert abs(float(xs.var()) - var) < 4 * var * math.sqrt(2 / (n - 1)), (float(t), float(xs.var()), var)


@pytest.mark.parametrize("start", [-8.0, 0.0, 8.0])
def test_ou_started_anywhere_reaches_its_stationary_law(start):
    theta, sigma, n = 1.0, 1.0, 4000
    ou = fd.OrnsteinUhlenbeck(theta=theta, sigma=sigma)
    assert ou.stationary_variance == pytest.approx(sigma**2 / (2 * theta))
    ts = fd.grids.uniform(0.0, 10.0, 1000, dtype=F64)  # dt = 0.01
    x0 = torch.full((n, 1), start, dtype=F64)
    final = fd.simulate(ou, x0, ts, "euler_maruyama", generator=gen(2)).final[:, 0]
    # At t = 10 the start is forgotten up to 8 e^{-10} = 4e-4; EM's stationary variance is
    # sigma^2 / (2 theta - theta^2 dt), 0.5% above the exact one; the standard errors are
    # sqrt(v / n) = 0.011 (mean) and v sqrt(2 / n) = 2.2% of v (variance).
    v = ou.stationary_variance
    assert abs(float(final.mean())) < 4 * math.sqrt(v / n)
    assert abs(float(final.var()) - v) < 4 * v * math.sqrt(2 / (n - 1))
    # The whole law: Kolmogorov–Smirnov against N(0, v) does not reject at level 1e-3.
    assert stats.kstest(final.numpy(), stats.norm(scale=math.sqrt(v)).cdf).pvalue > 1e-3


def test_ou_closed_forms():
    ou = fd.OrnsteinUhlenbeck(theta=0.25, sigma=1.0)
    assert float(ou.variance(0.0)) == 0.0
    assert float(ou.variance(200.0)) == pytest.approx(ou.stationary_variance)
    x0 = torch.tensor([[2.0], [4.0]])
    expected = torch.tensor([[2.0], [4.0 * math.exp(-1.0)]])
    assert torch.allclose(ou.mean(x0, torch.tensor([0.0, 4.0])), expected)
    # dVar/dt = sigma^2 - 2 theta Var (the moment equation of dX = -theta X dt + sigma dW)
    t = torch.tensor(1.3, dtype=F64, requires_grad=True)
    var = ou.variance(t)
    (dvar,) = torch.autograd.grad(var, t)
    assert float(dvar) == pytest.approx(1.0 - 2 * 0.25 * float(var.detach()))
    brownian_limit = fd.OrnsteinUhlenbeck(theta=0.0, sigma=2.0)
    assert float(brownian_limit.variance(3.0)) == pytest.approx(12.0)
    assert brownian_limit.stationary_variance == math.inf


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: torch.Tensor) -> float:
    """Sliced 2-Wasserstein distance between equal-size samples: sqrt of the mean over unit directions
    of the 1-D W2^2, which for sorted projections is the mean squared difference of order statistics."""
    px, _ = torch.sort(x @ directions.T, dim=0)
    py, _ = torch.sort(y @ directions.T, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def test_langevin_on_a_2d_mixture_reaches_the_target():
    target = fd.GaussianMixture(
        means=[[1.2, 0.0], [-0.6, 1.04], [-0.6, -1.04]], covs=0.36, weights=[0.5, 0.3, 0.2]
    )
    lang = fd.Langevin(target, sigma=math.sqrt(2.0))  # dX = grad log p dt + sqrt(2) dW
    x = torch.randn(5, 2, generator=gen(0))
    assert torch.allclose(lang.drift(x, torch.tensor(0.0)), target.score(x))
    n = 2000
    directions = torch.randn(64, 2, generator=gen(10), dtype=F64)
    directions = directions / directions.norm(dim=1, keepdim=True)
    # The bound: the distance between two independent n-samples of the target itself, over 20 pairs:
    # its mean plus 4 of its standard deviations.
    pairs = [(target.sample(n, gen(100 + 2 * r)), target.sample(n, gen(101 + 2 * r))) for r in range(20)]
    null = torch.tensor([sliced_wasserstein(a.double(), b.double(), directions) for a, b in pairs])
    bound = float(null.mean() + 4 * null.std())
    x0 = 3.0 * torch.randn(n, 2, generator=gen(1), dtype=F64)  # a wide Gaussian start
    ts = fd.grids.uniform(0.0, 10.0, 1000, dtype=F64)
    # Modes 2.1 apart with std 0.6: the log-density barrier between modes is about 1.5, so the chain
    # moves between modes many times by t = 10; EM's stationary bias (relative variance error about
    # L dt / 2 = 1.4% for curvature L = 1/0.36) is far below the sampling noise of the distance.
    final = fd.simulate(lang, x0, ts, "euler_maruyama", generator=gen(2)).final
    reference = target.sample(n, gen(3)).double()
    assert sliced_wasserstein(final, reference, directions) < bound
    # The check has power: the start, and the same modes with equal weights, are both rejected.
    assert sliced_wasserstein(x0, reference, directions) > 5 * bound
    equal = fd.GaussianMixture(target.means, 0.36)
    assert sliced_wasserstein(equal.sample(n, gen(4)).double(), reference, directions) > bound


@pytest.mark.parametrize(
    "make",
    [
        lambda: fd.BrownianMotion(sigma=-1.0),
        lambda: fd.OrnsteinUhlenbeck(theta=-0.1, sigma=1.0),
        lambda: fd.OrnsteinUhlenbeck(theta=0.1, sigma=-1.0),
        lambda: fd.OrnsteinUhlenbeck(theta=float("nan"), sigma=1.0),
        lambda: fd.Langevin(fd.Gaussian([0.0, 0.0]), sigma=-0.5),
        lambda: fd.Langevin(object(), sigma=1.0),
    ],
)
def test_bad_process_parameters(make):
    with pytest.raises(fd.errors.InvalidInputError) as info:
        make()
    assert "must" in str(info.value) or "needs" in str(info.value)
