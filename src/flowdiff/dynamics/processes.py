"""Stochastic processes of Lecture 1 as SDEs: Brownian motion, Ornstein–Uhlenbeck, Langevin dynamics."""

from __future__ import annotations

import math

import torch

from flowdiff.dynamics.equations import SDE
from flowdiff.errors import InvalidInputError


def _nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0.0:  # also catches NaN
        raise InvalidInputError(f"{name} must be a number >= 0, got {value}")
    return value


def _time(t) -> torch.Tensor:
    """t as a floating tensor (a tensor keeps its dtype; a number gets the default dtype)."""
    if isinstance(t, torch.Tensor) and torch.is_floating_point(t):
        return t
    return torch.as_tensor(t, dtype=torch.get_default_dtype())


def _time_like(t, x: torch.Tensor) -> torch.Tensor:
    """t (a number, 0-d or (batch,)) as a tensor that broadcasts against x of shape (batch, *shape)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 1 and x.ndim >= 1 and t.shape[0] == x.shape[0]:
        return t.reshape(-1, *([1] * (x.ndim - 1)))
    return t


class BrownianMotion(SDE):
    """Brownian motion dX_t = sigma dW_t: X_t - X_s ~ N(0, sigma^2 (t - s) I), independent increments."""

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma = _nonnegative("sigma", sigma)
        super().__init__(self._zero_drift, self.sigma)

    @staticmethod
    def _zero_drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    def mean(self, x0: torch.Tensor, t) -> torch.Tensor:
        """E[X_t | X_0 = x0] = x0 (for every t)."""
        return x0.clone()

    def variance(self, t) -> torch.Tensor:
        """Var[X_t | X_0] = sigma^2 t (per coordinate)."""
        return self.sigma * self.sigma * _time(t)

    def __repr__(self) -> str:
        return f"BrownianMotion(sigma={self.sigma})"


class OrnsteinUhlenbeck(SDE):
    """The Ornstein–Uhlenbeck process dX_t = -theta X_t dt + sigma dW_t.

    Started at x0 it stays Gaussian with mean x0 e^{-theta t} and variance
    sigma^2 (1 - e^{-2 theta t}) / (2 theta), tending to N(0, sigma^2 / (2 theta)).
    theta = 0 is Brownian motion (variance sigma^2 t, no stationary law).
    """

    def __init__(self, theta: float = 0.25, sigma: float = 1.0) -> None:
        self.theta = _nonnegative("theta", theta)
        self.sigma = _nonnegative("sigma", sigma)
        super().__init__(self._drift, self.sigma)

    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -self.theta * x

    def mean(self, x0: torch.Tensor, t) -> torch.Tensor:
        """E[X_t | X_0 = x0] = x0 exp(-theta t); t a number, 0-d or (batch,)."""
        return x0 * torch.exp(-self.theta * _time_like(t, x0))

    def variance(self, t) -> torch.Tensor:
        """Var[X_t | X_0] = sigma^2 (1 - exp(-2 theta t)) / (2 theta); sigma^2 t if theta=0."""
        t = _time(t)
        if self.theta == 0.0:
            return self.sigma * self.sigma * t
        return self.sigma * self.sigma * -torch.expm1(-2.0 * self.theta * t) / (2.0 * self.theta)

    @property
    def stationary_variance(self) -> float:
        """sigma^2 / (2 theta): variance of the stationary law N(0, sigma^2 / (2 theta)); inf if theta=0."""
        return math.inf if self.theta == 0.0 else self.sigma * self.sigma / (2.0 * self.theta)

    def __repr__(self) -> str:
        return f"OrnsteinUhlenbeck(theta={self.theta}, sigma={self.sigma})"


class Langevin(SDE):
    """Overdamped Langevin dynamics dX_t = (sigma^2 / 2) grad log p(X_t) dt + sigma dW_t.

    Its stationary law is p itself, for any sigma > 0. `density` is anything with a
    `score(x)` method (a `Gaussian`, a `GaussianMixture`, ...) taking x of shape (batch, d).
    """

    def __init__(self, density, sigma: float = 1.0) -> None:
        if not callable(getattr(density, "score", None)):
            raise InvalidInputError(
                f"Langevin needs a density with a score(x) method, got {type(density).__name__}"
            )
        self.density = density
        self.sigma = _nonnegative("sigma", sigma)
        super().__init__(self._drift, self.sigma)

    def _drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (0.5 * self.sigma * self.sigma) * self.density.score(x)

    def __repr__(self) -> str:
        return f"Langevin(density={self.density!r}, sigma={self.sigma})"
