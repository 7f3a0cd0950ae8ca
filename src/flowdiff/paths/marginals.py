"""Closed-form marginal score and velocity of a Gaussian path whose data is a Gaussian mixture.

With p_data = sum_k w_k N(mu_k, Sigma_k) and x_t = alpha_t z + beta_t eps, the marginal
p_t = sum_k w_k N(alpha_t mu_k, C_k) with C_k = alpha_t^2 Sigma_k + beta_t^2 I is again a
mixture. Given x_t = x and the component k, (z, eps) are jointly Gaussian, so with
r_k = C_k^{-1} (x - alpha_t mu_k):

    E[z | x, k]   = mu_k + alpha_t Sigma_k r_k,        E[eps | x, k] = beta_t r_k,

and averaging over the posterior p(k | x_t = x) gives the marginal data prediction, the noise
prediction, the score grad log p_t(x) = -sum_k p(k|x) r_k, and the marginal velocity
u_t(x) = E[u_t(x|z) | x_t = x] = d_alpha E[z | x] + d_beta E[eps | x] (the marginalization
trick). No formula divides by alpha_t or beta_t, so every value is finite on all of [0, 1].
Computed in float64 on the CPU, returned in the dtype and on the device of x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from flowdiff.dynamics.densities import GaussianMixture
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.paths.gaussian_path import PREDICTIONS, GaussianPath
from flowdiff.paths.schedules import ScheduleValues


@dataclass(frozen=True)
class MarginalTerms:
    """Per-component pieces of p_t at points x (batch B, K components, dimension d)."""

    log_probs: torch.Tensor  # (B, K): log w_k + log N(x; alpha_t mu_k, C_k)
    solved: torch.Tensor  # (B, K, d): r_k = C_k^{-1} (x - alpha_t mu_k)
    x1: torch.Tensor  # (B, K, d): E[z | x, k]
    values: ScheduleValues  # alpha_t, beta_t and derivatives, each (B, 1) or (1, 1)
    beta_d_beta: torch.Tensor  # beta_t d beta_t / dt, (B, 1) or (1, 1)


def _flat_times(t, batch: int) -> torch.Tensor:
    """Times as shape (1,) (one time for the whole batch) or (batch,), float64 on the CPU."""
    t = torch.as_tensor(t, dtype=None if isinstance(t, torch.Tensor) else torch.float64)  # 0.4, not 0.4f
    t = t.to(device="cpu", dtype=torch.float64)
    if t.numel() == 1:
        return t.reshape(1)
    t = t.reshape(-1)
    if t.shape[0] != batch:
        raise InvalidInputError(f"t must be 0-d or have {batch} entries, got shape {tuple(t.shape)}")
    return t


def _beta_d_beta(path: GaussianPath, t: torch.Tensor, s: ScheduleValues) -> torch.Tensor:
    """beta_t d beta_t / dt = (1/2) d(beta_t^2) / dt: finite where beta_t -> 0 even if d beta_t / dt diverges.

    VP's beta_t ~ sqrt(1 - t) near t = 1, where its d_beta is clamped; there (beta_t < 1e-4) the
    product is taken from one-sided differences of beta_t^2, which is smooth there.
    """
    product = s.beta * s.d_beta
    small = s.beta < 1e-4
    if bool(small.any()):
        h = 1e-6

        def slope(step):  # (beta_t^2 - beta_{t-step}^2) / (2 step): one-sided, error O(step)
            before = path.schedule((t.reshape(-1, 1) - step).clamp_min(0)).beta.to(torch.float64)
            return 0.5 * (s.beta**2 - before.reshape(-1, 1) ** 2) / step

        product = torch.where(small, 2 * slope(h) - slope(2 * h), product)  # Richardson: error O(h^2)
    return product


def marginal_terms(path: GaussianPath, mixture: GaussianMixture, x: torch.Tensor, t) -> MarginalTerms:
    """The component-wise log-densities and conditional expectations of the marginal p_t at x."""
    if x.ndim < 2 or math.prod(x.shape[1:]) != mixture.dim:
        raise InvalidInputError(
            f"x must have shape (batch, ...) with {mixture.dim} numbers per point, got {tuple(x.shape)}"
        )
    batch, d = x.shape[0], mixture.dim
    xf = x.reshape(batch, d).to(device="cpu", dtype=torch.float64)
    times = _flat_times(t, batch)  # T = 1 or B times
    s = path.schedule(times)
    s = ScheduleValues(*(v.to(torch.float64).reshape(-1, 1) for v in (s.alpha, s.beta, s.d_alpha, s.d_beta)))
    alpha, beta = s.alpha[:, :, None], s.beta[:, :, None]  # (T, 1, 1)
    means = mixture.means.to(torch.float64)  # (K, d)
    covs = mixture.covs.to(torch.float64)  # (K, d, d)
    cov_t = alpha[..., None] ** 2 * covs[None] + beta[..., None] ** 2 * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov_t)  # (T, K, d, d): one factorisation per time, not per point
    precision = torch.cholesky_inverse(chol).expand(batch, -1, -1, -1)
    diff = xf[:, None, :] - alpha * means[None]  # (B, K, d)
    solved = torch.einsum("bkij,bkj->bki", precision, diff)  # C_k^{-1} (x - alpha_t mu_k)
    maha = (diff * solved).sum(-1)
    log_det = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (T, K)
    log_w = torch.log(mixture.weights.to(torch.float64))
    log_probs = log_w - 0.5 * (maha + log_det + d * math.log(2 * math.pi))
    x1 = means[None] + alpha * torch.einsum("kij,bkj->bki", covs, solved)
    return MarginalTerms(log_probs, solved, x1, s, _beta_d_beta(path, times, s))


def predict_from_terms(terms: MarginalTerms, posterior: torch.Tensor, prediction: str) -> torch.Tensor:
    """Average the component-wise predictions over posterior weights (B, K); returns (B, d) float64."""
    s = terms.values
    solved = torch.einsum("bk,bki->bi", posterior, terms.solved)
    if prediction == "score":
        return -solved
    noise = s.beta * solved
    if prediction == "noise":
        return noise
    x1 = torch.einsum("bk,bki->bi", posterior, terms.x1)
    if prediction == "x1":
        return x1
    if prediction == "velocity":  # d_beta E[eps|x] = d_beta beta_t sum_k p(k|x) r_k
        return s.d_alpha * x1 + terms.beta_d_beta * solved
    raise InvalidInputError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def _marginal(path, mixture, x, t, prediction: str) -> torch.Tensor:
    terms = marginal_terms(path, mixture, x, t)
    value = predict_from_terms(terms, torch.softmax(terms.log_probs, dim=-1), prediction)
    return value.reshape(x.shape).to(device=x.device, dtype=x.dtype)


def marginal_score(path: GaussianPath, mixture: GaussianMixture, x: torch.Tensor, t) -> torch.Tensor:
    """grad log p_t(x) = -sum_k p(k|x) C_k^{-1} (x - alpha_t mu_k), C_k = alpha_t^2 Sigma_k + beta_t^2 I."""
    return _marginal(path, mixture, x, t, "score")


def marginal_velocity(path: GaussianPath, mixture: GaussianMixture, x: torch.Tensor, t) -> torch.Tensor:
    """u_t(x) = E[u_t(x|z) | x_t = x] = d_alpha E[z|x] + d_beta E[eps|x] in closed form."""
    return _marginal(path, mixture, x, t, "velocity")


def marginal_log_prob(path: GaussianPath, mixture: GaussianMixture, x: torch.Tensor, t) -> torch.Tensor:
    """log p_t(x) of the marginal mixture sum_k w_k N(alpha_t mu_k, alpha_t^2 Sigma_k + beta_t^2 I)."""
    log_p = torch.logsumexp(marginal_terms(path, mixture, x, t).log_probs, dim=-1)
    return log_p.to(device=x.device, dtype=x.dtype)


class MarginalField:
    """The exact marginal prediction of a path with Gaussian-mixture data: a "perfect model" f(x, t, y=None).

    `prediction` is one of "velocity", "score", "x1", "noise". With `labels` (the class of each
    component), the field is label-conditioned like a trained network: y = c restricts p_data to
    the components of class c, and the null label y = num_classes (or y=None) keeps the whole mixture.
    """

    def __init__(
        self,
        path: GaussianPath,
        mixture: GaussianMixture,
        prediction: str = "velocity",
        labels: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        if prediction not in PREDICTIONS:
            raise InvalidInputError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")
        self.path, self.mixture, self.prediction = path, mixture, prediction
        self.data_shape = (mixture.dim,)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if self.labels is not None:
            if self.labels.shape != (mixture.num_components,) or int(self.labels.min()) < 0:
                raise InvalidInputError(
                    f"labels must give a class >= 0 for each of the {mixture.num_components} components, "
                    f"got {self.labels.tolist()}"
                )
        self.num_classes = None if self.labels is None else int(self.labels.max()) + 1

    def __repr__(self) -> str:
        return f"MarginalField({self.path!r}, {self.mixture!r}, prediction={self.prediction!r})"

    def __call__(self, x: torch.Tensor, t, y: torch.Tensor | int | None = None) -> torch.Tensor:
        """The marginal prediction at (x, t), conditioned on the labels y when given."""
        terms = marginal_terms(self.path, self.mixture, x, t)
        log_probs = terms.log_probs
        if y is not None:
            if self.labels is None:
                raise IncompatibleError(
                    "labels y were given to a MarginalField built without component labels"
                )
            y = torch.as_tensor(y, dtype=torch.long).to("cpu").reshape(-1).expand(x.shape[0])
            conditioned = y[:, None] != self.num_classes  # null label: the whole mixture
            excluded = conditioned & (self.labels[None, :] != y[:, None])
            log_probs = log_probs.masked_fill(excluded, -math.inf)
        value = predict_from_terms(terms, torch.softmax(log_probs, dim=-1), self.prediction)
        return value.reshape(x.shape).to(device=x.device, dtype=x.dtype)
