"""Checks that fail on the mutants an injected-fault run found surviving in the learning core."""

from __future__ import annotations

import pytest
import torch

import flowdiff as fd
from flowdiff.learning.losses import path_batch

MEAN, STD = torch.tensor([1.0, -2.0]), 0.5


@pytest.mark.parametrize("prediction", ["score", "x1", "noise"])
def test_sde_samples_of_every_prediction_have_the_target_variance(prediction):
    """The SDE drift u + sigma^2/2 score: dropping or doubling the score term widens or narrows the samples."""
    path = fd.GaussianPath("linear")
    field = fd.MarginalField(path, fd.Gaussian(MEAN, STD**2), prediction=prediction)
    n = 20_000
    x = fd.sample(field, path, n=n, steps=100, sigma=1.0, prediction=prediction,
                  generator=torch.Generator().manual_seed(11))
    # 5 standard errors of the sample mean (STD / sqrt n) and variance (STD^2 sqrt(2 / n)); without the
    # score term the variance is ~1.6 STD^2, with it doubled ~0.7 STD^2: hundreds of SE away.
    assert (x.mean(0) - MEAN).abs().max() < 5 * STD / n**0.5
    assert (x.var(0) - STD**2).abs().max() < 5 * STD**2 * (2 / n) ** 0.5


def _draws(x1: torch.Tensor, seed: int, **options):
    """The t, noise and x_t that a loss draws from this seed (the same stream the loss consumes)."""
    sample, _ = path_batch(fd.models.MLP(2), fd.GaussianPath(), x1, generator=torch.Generator().manual_seed(seed),
                           **options)
    return sample


def test_uniform_weighted_score_matching_equals_its_formula():
    """E |s(x_t) + eps / beta_t|^2 with beta_t clamped at min_scale: value and sign on the loss's own draws."""
    path, x1 = fd.GaussianPath(), torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = fd.models.MLP(2, hidden=(16,))
    got = fd.score_matching_loss(model, path, x1, weighting="uniform", t_max=0.95,
                                 generator=torch.Generator().manual_seed(3))
    s = _draws(x1, 3, t_max=0.95)
    beta = (1 - s.t)[:, None]
    with torch.no_grad():
        want = (model(s.x_t, s.t) + s.noise / beta).pow(2).mean()
        noise_weighted = (beta * model(s.x_t, s.t) + s.noise).pow(2).mean()
    torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=0)
    assert not torch.isclose(got.detach(), noise_weighted)  # the two weightings differ
    exact = fd.score_matching_loss(lambda x, t: -(x - t[:, None] * x1) / (1 - t[:, None]) ** 2, path, x1,
                                   weighting="uniform", t_max=0.95, generator=torch.Generator().manual_seed(3))
    assert float(exact) < 1e-8  # the conditional score itself has zero loss


@pytest.mark.parametrize("loss", [fd.flow_matching_loss, fd.score_matching_loss])
def test_losses_draw_t_within_t_min_and_t_max(loss):
    seen = []

    def recorder(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    x1 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(0))
    loss(recorder, fd.GaussianPath(), x1, t_min=0.3, t_max=0.6, generator=torch.Generator().manual_seed(1))
    t = seen[0]
    assert float(t.min()) >= 0.3 and float(t.max()) <= 0.6
    # uniform on [0.3, 0.6]: mean 0.45 within 5 SE (0.3 / sqrt(12 n))
    assert abs(float(t.mean()) - 0.45) < 5 * 0.3 / (12 * t.numel()) ** 0.5
