"""MeanFlow's time laws: the uniform draws stay as they were (bitwise), and the paper's logit-normal law, flipped to
flowdiff's direction, has its closed-form distribution, draws the same on any number of ranks and rebuilds."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import recorded_meanflow_times

from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut
from flowdiff.learning.losses import get_loss
from flowdiff.learning.training.distributed import Shard, sharded

N = 20_000


def _recorded_times(monkeypatch, loss: MeanFlow, n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, r) the loss asks the network for on a batch of n points."""
    return recorded_meanflow_times(monkeypatch, loss, n, seed)


def _normal_cdf(z: float) -> float:
    """Phi(z), the standard normal CDF."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _logit(q: float) -> float:
    """log(q / (1 - q))."""
    return math.log(q / (1 - q))


def test_the_uniform_law_draws_exactly_the_former_sequence(monkeypatch):
    """The default law is today's: noise, then t, then the second time, then the r = t coin, all U[0, 1] from the
    loss's generator in that order; t = min, r = max of the two, r = t where the coin falls under flow_share."""
    t, r = _recorded_times(monkeypatch, MeanFlow(flow_share=0.75), n=256, seed=3)
    g = torch.Generator().manual_seed(3)
    torch.randn(256, 2, generator=g)  # the noise x0 of the independent coupling
    first, second, coin = (torch.rand(256, generator=g) for _ in range(3))
    low = torch.minimum(first, second)
    assert torch.equal(t, low) and torch.equal(r, torch.where(coin < 0.75, low, torch.maximum(first, second)))


@pytest.mark.parametrize(("mu", "sigma"), [(-0.4, 1.0), (0.8, 0.5)])
def test_the_logit_normal_times_follow_the_closed_form_law_in_flowdiffs_direction(monkeypatch, mu, sigma):
    """Each draw is t = 1 - tau with logit(tau) ~ N(mu, sigma^2) (the paper's tau: data at 0), so one draw has the
    CDF F(q) = Phi((mu + logit(q)) / sigma), and t = min, r = max of two draws have 1 - (1 - F)^2 and F^2. Checked
    at the single draw's 10/30/50/70/90% quantiles q = sigmoid(sigma Phi^-1(p) - mu) on 20000 pairs, within 4
    binomial standard errors sqrt(P (1 - P) / n) (at most 0.0035); the law read in the paper's direction,
    Phi((logit(q) - mu) / sigma), puts Phi(-2 mu / sigma) instead of 1/2 below the median: far outside them."""
    t, r = _recorded_times(monkeypatch, MeanFlow(flow_share=0.0, time_law="logit_normal", time_mu=mu,
                                                 time_sigma=sigma))
    assert bool((t < r).all())
    for p in (0.1, 0.3, 0.5, 0.7, 0.9):
        q = 1 / (1 + math.exp(-(sigma * math.sqrt(2) * float(torch.erfinv(torch.tensor(2 * p - 1.0))) - mu)))
        assert abs(_normal_cdf((mu + _logit(q)) / sigma) - p) < 1e-6  # q is F's p-quantile
        for times, cdf in ((t, lambda f: 1 - (1 - f) ** 2), (r, lambda f: f**2)):
            want, seen = cdf(p), float((times <= q).double().mean())
            error = math.sqrt(want * (1 - want) / N)
            assert abs(seen - want) < 4 * error, (p, q, seen, want)
            if p == 0.5:
                assert abs(seen - cdf(_normal_cdf(-2 * mu / sigma))) > 10 * error


def test_the_logit_normal_mean_and_range_follow_t_min_and_t_max(monkeypatch):
    """On [t_min, t_max] the draws are t_min + (t_max - t_min) t; their mean (of min and max together, i.e. of
    single draws) matches E t = int sigmoid(-(mu + sigma z)) phi(z) dz (quadrature) within 4 standard errors."""
    mu, sigma, lo, hi = -0.4, 1.0, 0.1, 0.9
    t, r = _recorded_times(monkeypatch, MeanFlow(flow_share=0.0, time_law="logit_normal", time_mu=mu,
                                                 time_sigma=sigma, t_min=lo, t_max=hi))
    both = torch.cat([t, r]).double()
    assert bool((both >= lo).all()) and bool((both <= hi).all())
    z = torch.linspace(-10, 10, 20001, dtype=torch.float64)
    density = torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi)
    mean = lo + (hi - lo) * float(torch.trapezoid(torch.sigmoid(-(mu + sigma * z)) * density, z))
    assert abs(float(both.mean()) - mean) < 4 * float(both.std()) / math.sqrt(2 * N), (float(both.mean()), mean)


def test_a_rank_draws_its_rows_of_the_single_process_times(monkeypatch):
    """Under a Shard (rank 1 of 2) the logit-normal (t, r) are rows n..2n of one process's draw on 2n points."""
    loss = MeanFlow(flow_share=0.5, time_law="logit_normal")
    whole = _recorded_times(monkeypatch, loss, n=64, seed=5)
    with sharded(Shard(rank=1, world_size=2)):
        part = _recorded_times(monkeypatch, loss, n=32, seed=5)
    assert torch.equal(part[0], whole[0][32:]) and torch.equal(part[1], whole[1][32:])


def test_the_law_is_in_the_config_and_bad_laws_are_refused():
    loss = MeanFlow(time_law="logit_normal", time_mu=-2.0, time_sigma=2.0)
    assert get_loss(loss.config()).config() == loss.config()
    assert loss.config()["time_law"] == "logit_normal" and loss.config()["time_mu"] == -2.0
    for options, message in (({"time_sigma": 0.0}, "time_sigma must be a finite number > 0"),
                             ({"time_mu": math.nan}, "time_mu must be a finite number"),
                             ({"time_law": "lognormal"}, "unknown time law")):
        with pytest.raises(InvalidInputError, match=message):
            MeanFlow(**options)
    with pytest.raises(InvalidInputError, match="unknown time law"):
        Shortcut(time_law="logit_normal")  # MeanFlow's own law
