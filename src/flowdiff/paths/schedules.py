"""Noise schedules alpha_t (data weight) and beta_t (noise weight) with their time derivatives.

Convention of the lecture: t = 0 is noise, t = 1 is data, so alpha_0 = 0, alpha_1 = 1,
beta_0 = 1, beta_1 = 0, and x_t = alpha_t z + beta_t eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.registry import build


@dataclass(frozen=True)
class ScheduleValues:
    """alpha_t, beta_t and their derivatives d alpha_t / dt, d beta_t / dt at some times t."""

    alpha: torch.Tensor
    beta: torch.Tensor
    d_alpha: torch.Tensor
    d_beta: torch.Tensor


class Schedule:
    """A noise schedule: call it on times t to get `ScheduleValues`."""

    def __call__(self, t: torch.Tensor) -> ScheduleValues:  # pragma: no cover - interface
        raise NotImplementedError

    def config(self) -> dict:
        """The keyword arguments that rebuild this schedule, with its name."""
        return {"name": type(self).__name__.lower(), **vars(self)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Linear(Schedule):
    """CondOT schedule: alpha_t = t, beta_t = 1 - t (straight conditional paths)."""

    def __call__(self, t):
        t = torch.as_tensor(t)
        one = torch.ones_like(t)
        return ScheduleValues(alpha=t, beta=1 - t, d_alpha=one, d_beta=-one)


class Cosine(Schedule):
    """Cosine schedule: alpha_t = sin(pi t / 2), beta_t = cos(pi t / 2) (variance preserving)."""

    def __call__(self, t):
        t = torch.as_tensor(t)
        half_pi = math.pi / 2
        s, c = torch.sin(half_pi * t), torch.cos(half_pi * t)
        return ScheduleValues(alpha=s, beta=c, d_alpha=half_pi * c, d_beta=-half_pi * s)


class Polynomial(Schedule):
    """Polynomial schedule: alpha_t = t^n, beta_t = 1 - t^n (n = 1 is `Linear`)."""

    def __init__(self, n: float = 2.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int | float) or not 1.0 <= n < math.inf:
            raise InvalidInputError(
                f"Polynomial exponent n must be a finite number >= 1, got {n!r} "
                "(for n < 1, d alpha_t / dt = n t^(n-1) is infinite at t = 0)"
            )
        self.n = float(n)

    def __call__(self, t):
        t = torch.as_tensor(t)
        n = self.n
        d = n * t ** (n - 1)  # t^0 = 1 also at t = 0, so n = 1 gives d = 1 everywhere
        return ScheduleValues(alpha=t**n, beta=1 - t**n, d_alpha=d, d_beta=-d)


class VP(Schedule):
    """Variance-preserving (DDPM/score-SDE) schedule with linear beta(s) in diffusion time s = 1-t.

    alpha_t = exp(-T(1-t)/2) with T(s) = beta_min s + (beta_max - beta_min) s^2 / 2, and
    beta_t = sqrt(1 - alpha_t^2). alpha_0 = exp(-T(1)/2) is small but not exactly 0
    (about 6.7e-3 for the defaults). d beta_t / dt is unbounded at t = 1; its denominator
    beta_t is clamped at `min_beta` so the value stays finite (and large) there.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, min_beta: float = 1e-4):
        if not 0 <= beta_min < beta_max:
            raise InvalidInputError(f"need 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max, self.min_beta = float(beta_min), float(beta_max), min_beta

    def __call__(self, t):
        t = torch.as_tensor(t)
        s = 1 - t
        integral = self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2
        rate = self.beta_min + (self.beta_max - self.beta_min) * s
        alpha = torch.exp(-0.5 * integral)
        beta = torch.sqrt((1 - alpha**2).clamp_min(0))
        d_alpha = 0.5 * rate * alpha
        d_beta = -alpha * d_alpha / beta.clamp_min(self.min_beta)
        return ScheduleValues(alpha=alpha, beta=beta, d_alpha=d_alpha, d_beta=d_beta)


SCHEDULES = {"linear": Linear, "cosine": Cosine, "polynomial": Polynomial, "vp": VP}
"""Schedules by name, for configuration files and the command line."""


def get_schedule(schedule: str | Schedule | dict, **kwargs) -> Schedule:
    """Return a schedule object from itself, its name, or its `config()` dict."""
    return build(SCHEDULES, schedule, "schedule", Schedule, **kwargs)
