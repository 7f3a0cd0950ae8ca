"""Gaussian and Gaussian-mixture densities: log_prob against scipy, score against autograd, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import flowdiff as fd

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def full_mixture() -> fd.GaussianMixture:
    means = torch.tensor([[0.0, 1.0, -1.0], [2.0, -1.0, 0.5], [-2.0, 0.0, 1.5]], dtype=F64)
    a = torch.randn(3, 3, 3, generator=gen(0), dtype=F64)
    covs = a @ a.transpose(1, 2) + 0.5 * torch.eye(3, dtype=F64)  # symmetric positive definite
    return fd.GaussianMixture(means, covs, weights=torch.tensor([0.2, 0.5, 0.3], dtype=F64))


def scipy_log_prob(mixture: fd.GaussianMixture, x: torch.Tensor) -> np.ndarray:
    parts = [
        math.log(float(w)) + stats.multivariate_normal(m.numpy(), c.numpy()).logpdf(x.numpy())
        for m, c, w in zip(mixture.means, mixture.covs, mixture.weights)
    ]
    return logsumexp(np.stack(parts, axis=-1), axis=-1)


def test_mixture_log_prob_matches_scipy():
    mixture = full_mixture()
    x = 2.0 * torch.randn(50, 3, generator=gen(1), dtype=F64)
    # The parameters are stored in the default dtype (float32), so precisions and log-determinants carry
    # float32 rounding (eps 1.2e-7 times the conditioning of the covariances): compare at rtol 1e-5.
    np.testing.assert_allclose(mixture.log_prob(x).numpy(), scipy_log_prob(mixture, x), rtol=1e-5)
    posterior = mixture.posterior(x)
    assert torch.allclose(posterior.sum(1), torch.ones(50, dtype=F64))


def test_gaussian_log_prob_matches_scipy():
    mean, cov = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=F64)
    gaussian = fd.Gaussian(mean, cov)
    x = torch.randn(20, 2, generator=gen(2), dtype=F64)
    expected = stats.multivariate_normal(mean.numpy(), cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(gaussian.log_prob(x).numpy(), expected, rtol=1e-5)
    assert torch.allclose(gaussian.mean.double(), mean) and torch.allclose(gaussian.cov.double(), cov)
    diagonal = fd.Gaussian(mean, torch.tensor([2.0, 0.5]))
    assert torch.equal(diagonal.cov, torch.diag(torch.tensor([2.0, 0.5])))


def test_float64_parameters_keep_their_precision():
    mixture = full_mixture()
    assert mixture.means.dtype == F64 and mixture.precisions.dtype == F64
    x = 2.0 * torch.randn(50, 3, generator=gen(1), dtype=F64)
    np.testing.assert_allclose(mixture.log_prob(x).numpy(), scipy_log_prob(mixture, x), rtol=1e-10)


@pytest.mark.parametrize("density", [full_mixture(), fd.Gaussian(torch.zeros(3, dtype=F64), 2.0)])
def test_score_matches_autograd(density):
    x = (2.0 * torch.randn(40, 3, generator=gen(3), dtype=F64)).requires_grad_(True)
    (autograd_score,) = torch.autograd.grad(density.log_prob(x).sum(), x)
    assert torch.allclose(density.score(x.detach()), autograd_score, atol=1e-10)


def test_symmetric_2d_mixture_geometry_and_score():
    mixture = fd.GaussianMixture.symmetric_2d(nmodes=5, std=1.0, scale=10.0)
    assert mixture.means.shape == (5, 2) and mixture.num_components == 5 and mixture.dim == 2
    assert torch.allclose(mixture.means.norm(dim=1), torch.full((5,), 10.0))
    assert torch.allclose(mixture.weights, torch.full((5,), 0.2))
    # At a mode far from the others the score is ~0; between it and the origin it points at the mode.
    assert mixture.score(mixture.means[:1]).abs().max() < 1e-6
    assert torch.allclose(mixture.score(0.5 * mixture.means[:1]), 0.5 * mixture.means[:1], atol=1e-6)
    random = fd.GaussianMixture.random_2d(nmodes=4, std=0.5, scale=3.0, generator=gen(0))
    assert random.means.shape == (4, 2) and (random.means.abs() <= 3.0).all()
    again = fd.GaussianMixture.random_2d(nmodes=4, std=0.5, scale=3.0, generator=gen(0))
    assert torch.equal(random.means, again.means)


def test_sample_moments_within_standard_errors():
    mixture = full_mixture()
    n = 40000
    x, labels = mixture.sample(n, generator=gen(4), return_labels=True)
    assert x.shape == (n, 3) and labels.shape == (n,)
    # Mixture mean sum_k w_k mu_k and covariance sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T.
    w = mixture.weights
    mean = (w[:, None] * mixture.means).sum(0)
    outer = mixture.means[:, :, None] * mixture.means[:, None, :]
    second = (w[:, None, None] * (mixture.covs + outer)).sum(0)
    cov = second - mean[:, None] * mean[None, :]
    # standard error of each sample mean: sqrt(Cov_ii / n)
    assert ((x.mean(0) - mean).abs() < 4 * (cov.diagonal() / n).sqrt()).all()
    # standard error of each sample covariance entry: sqrt(Var((X_i - m_i)(X_j - m_j)) / n), estimated.
    centered = x - mean
    products = centered[:, :, None] * centered[:, None, :]
    assert ((products.mean(0) - cov).abs() < 4 * products.std(0) / math.sqrt(n)).all()
    # label frequencies: binomial standard errors sqrt(w (1 - w) / n)
    freq = torch.bincount(labels, minlength=3).to(F64) / n
    assert ((freq - w).abs() < 4 * (w * (1 - w) / n).sqrt()).all()
    # each point came from its labelled component: its posterior is largest there on average
    assert float(mixture.posterior(x)[torch.arange(n), labels].mean()) > 0.5


def test_same_seed_same_sample():
    mixture = fd.GaussianMixture.symmetric_2d()
    assert torch.equal(mixture.sample(10, gen(1)), mixture.sample(10, gen(1)))
    assert not torch.equal(mixture.sample(10, gen(1)), mixture.sample(10, gen(2)))


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: fd.GaussianMixture([[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]]), "positive definite"),
        (lambda: fd.GaussianMixture([[0.0, 0.0]], -1.0), "positive definite"),
        (lambda: fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], torch.ones(3, 2, 2)), "broadcast"),
        (lambda: fd.GaussianMixture([0.0, 0.0]), "(K, d)"),
        (lambda: fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 1.0, weights=[1.0, -1.0]), "positive"),
        (lambda: fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], 1.0, weights=[1.0]), "2 positive"),
        (lambda: fd.Gaussian([[0.0, 0.0]]), "(d,)"),
        (lambda: fd.GaussianMixture.symmetric_2d(nmodes=0), "nmodes"),
        (lambda: fd.GaussianMixture.symmetric_2d(std=0.0), "std"),
        (lambda: fd.GaussianMixture.symmetric_2d().log_prob(torch.zeros(4, 3)), "(batch, 2)"),
    ],
)
def test_bad_parameters_raise_clear_errors(make, words):
    with pytest.raises(fd.errors.InvalidInputError) as info:
        make()
    assert words in str(info.value)
