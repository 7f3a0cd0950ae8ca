"""Densities with closed forms: a Gaussian N(mean, cov) and a Gaussian mixture.

Each can `sample(n, generator)`, and gives `log_prob(x)` and `score(x) = grad log p(x)`
in closed form, for x of shape (batch, d).
"""

from __future__ import annotations

import math

import torch

from flowdiff.errors import InvalidInputError


def _floating(value, dtype=None) -> torch.Tensor:
    """A floating tensor keeping the precision of a floating input (else `dtype` or the default).

    Numbers and lists are converted straight to `dtype` (0.1 in float64 is not 0.1 in float32).
    """
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=dtype)
    if value.is_floating_point() and dtype is None:
        return value
    return value.to(dtype or torch.get_default_dtype())


def _as_covariances(covs, k: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Turn a number, per-dimension variances or full matrices into (k, d, d) covariances."""
    covs = _floating(covs, dtype)
    if covs.ndim == 0:
        covs = covs * torch.eye(d, dtype=dtype).expand(k, d, d)
    elif covs.ndim == 1 and covs.shape[0] == k:
        covs = covs[:, None, None] * torch.eye(d, dtype=dtype)
    elif covs.ndim == 2 and covs.shape == (d, d):
        covs = covs.expand(k, d, d)
    elif covs.ndim == 2 and covs.shape == (k, d):
        covs = torch.diag_embed(covs)
    if covs.shape != (k, d, d):
        raise InvalidInputError(f"covariances must broadcast to ({k}, {d}, {d}), got {tuple(covs.shape)}")
    return covs.clone()


class GaussianMixture:
    """p(x) = sum_k w_k N(x; mu_k, Sigma_k) with K components in d dimensions.

    `means` is (K, d); `covs` a number (isotropic variance), (K,) per-component variances, (d, d) shared,
    (K, d) diagonal or (K, d, d) full matrices; `weights` (K,) positive (normalised here).
    """

    def __init__(self, means, covs=1.0, weights=None) -> None:
        means = _floating(means)
        if means.ndim != 2:
            raise InvalidInputError(f"means must have shape (K, d), got {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.ones(k) if weights is None else torch.as_tensor(weights)
        weights = weights.to(means.dtype)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise InvalidInputError(f"weights must be {k} positive numbers, got {weights.tolist()}")
        self.means = means.clone()
        self.covs = _as_covariances(covs, k, d, means.dtype)
        self.weights = weights / weights.sum()
        try:
            self.chol = torch.linalg.cholesky(self.covs)
        except RuntimeError:
            raise InvalidInputError("covariance matrices must be symmetric positive definite") from None
        self.precisions = torch.cholesky_inverse(self.chol)
        self.log_dets = 2 * torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)

    @property
    def dim(self) -> int:
        """The dimension d of the space."""
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        """The number of components K."""
        return self.means.shape[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(K={self.num_components}, d={self.dim})"

    def sample(
        self, n: int, generator: torch.Generator | None = None, return_labels: bool = False
    ):
        """Draw n points (and, with return_labels, the index of the component of each)."""
        labels = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        x = self.means[labels] + torch.einsum("nij,nj->ni", self.chol[labels], eps)
        return (x, labels) if return_labels else x

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        return x

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; mu_k, Sigma_k), shape (batch, K)."""
        x = self._check(x)
        params = [p.to(x) for p in (self.means, self.precisions, self.log_dets, self.weights)]
        means, precisions, log_dets, weights = params
        diff = x[:, None, :] - means[None]
        maha = torch.einsum("bki,kij,bkj->bk", diff, precisions, diff)
        return torch.log(weights) - 0.5 * (maha + log_dets + self.dim * math.log(2 * math.pi))

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        """p(k | x): the responsibility of each component, shape (batch, K)."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), shape (batch,)."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad log p(x) = sum_k p(k|x) (-Sigma_k^{-1} (x - mu_k)), shape (batch, d)."""
        post = self.posterior(x)
        diff = x[:, None, :] - self.means.to(x)[None]
        comp = -torch.einsum("kij,bkj->bki", self.precisions.to(x), diff)
        return torch.einsum("bk,bki->bi", post, comp)

    @classmethod
    def symmetric_2d(cls, nmodes: int = 5, std: float = 1.0, scale: float = 10.0):
        """nmodes equal-weight isotropic modes evenly spaced on a circle of radius `scale`."""
        if nmodes < 1 or std <= 0:
            raise InvalidInputError(f"need nmodes >= 1 and std > 0, got {nmodes}, {std}")
        angles = torch.linspace(0, 2 * math.pi, nmodes + 1)[:nmodes]
        means = scale * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        return cls(means, std**2)

    @classmethod
    def random_2d(
        cls,
        nmodes: int = 5,
        std: float = 1.0,
        scale: float = 10.0,
        generator: torch.Generator | None = None,
    ):
        """nmodes equal-weight isotropic modes with means uniform in [-scale, scale]^2."""
        if nmodes < 1 or std <= 0:
            raise InvalidInputError(f"need nmodes >= 1 and std > 0, got {nmodes}, {std}")
        means = (torch.rand(nmodes, 2, generator=generator) * 2 - 1) * scale
        return cls(means, std**2)


class Gaussian(GaussianMixture):
    """N(mean, cov): a mixture of one component; cov a number, (d,) variances or (d, d)."""

    def __init__(self, mean, cov=1.0) -> None:
        mean = _floating(mean)
        if mean.ndim != 1:
            raise InvalidInputError(f"mean must have shape (d,), got {tuple(mean.shape)}")
        cov = torch.as_tensor(cov, dtype=mean.dtype)
        if cov.ndim == 1:
            cov = torch.diag(cov)
        super().__init__(mean[None], cov)

    @property
    def mean(self) -> torch.Tensor:
        """The mean vector."""
        return self.means[0]

    @property
    def cov(self) -> torch.Tensor:
        """The covariance matrix."""
        return self.covs[0]
