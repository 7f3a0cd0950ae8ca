"""Gaussian probability paths p_t(x|z) = N(alpha_t z, beta_t^2 I) and their vector fields.

From x_t = alpha_t z + beta_t eps follow the conditional velocity
u_t(x|z) = (d_alpha - d_beta alpha / beta) z + (d_beta / beta) x, the conditional score
-(x - alpha z) / beta^2, and conversions between the four things a network may predict:
the velocity, the score, the data point x1 (= z) and the noise eps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.paths.schedules import Schedule, ScheduleValues, get_schedule

PREDICTIONS = ("velocity", "score", "x1", "noise")
"""What a network may predict; `GaussianPath.convert` maps any one to any other."""


def expand_time(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Shape t (0-d or (batch,)) to broadcast against x of shape (batch, *shape)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim == 1 and t.shape[0] in (1, x.shape[0]):
        return t.reshape(-1, *([1] * (x.ndim - 1)))
    raise InvalidInputError(f"t must be 0-d or of shape (batch,), got {tuple(t.shape)}")


@dataclass(frozen=True)
class PathSample:
    """A draw x_t ~ p_t(.|z) with its conditional velocity (the regression target)."""

    t: torch.Tensor
    x_t: torch.Tensor
    velocity: torch.Tensor
    x1: torch.Tensor
    noise: torch.Tensor


class GaussianPath:
    """The Gaussian conditional path x_t = alpha_t z + beta_t eps, eps ~ p_init = N(0, I).

    The conversions solve the two linear equations x = alpha_t z + beta_t eps and the
    prediction's own (e.g. v = d_alpha z + d_beta eps) for (z, eps), exactly wherever the
    divisor (alpha_t, beta_t or the determinant alpha d_beta - beta d_alpha) is a normal
    floating-point number. Where it vanishes (alpha_0 = 0 at t = 0, beta_1 = 0 at t = 1) the
    equations leave one unknown undetermined, and the conversions take the minimum-norm
    (Moore–Penrose) solution: the undetermined part is 0, so values stay finite at the ends.
    That 0 is the exact limit for a perfect model only when E[z] = 0 (at t = 0) or
    E[eps | x_1] = 0 (at t = 1); near the ends predictions are amplified by 1 / alpha_t or
    1 / beta_t, so samplers should stop short of a singular end.

    `min_scale` is the smallest beta_t by which the score-matching loss divides (its
    `weighting="uniform"`); the conversions do not use it.
    """

    def __init__(self, schedule: Schedule | str = "linear", min_scale: float = 1e-4) -> None:
        self.schedule = get_schedule(schedule)
        self.min_scale = min_scale

    def __repr__(self) -> str:
        return f"GaussianPath({self.schedule!r})"

    def config(self) -> dict:
        """Keyword arguments that rebuild this path."""
        return {"schedule": self.schedule.config(), "min_scale": self.min_scale}

    def values(self, t: torch.Tensor | float, x: torch.Tensor) -> ScheduleValues:
        """The schedule at t, shaped to broadcast against x."""
        return self.schedule(expand_time(t, x))

    def sample_noise(
        self, shape, generator: torch.Generator | None = None, device=None, dtype=None
    ) -> torch.Tensor:
        """Draw X_0 ~ p_init = N(0, I) of the given shape (on the generator's device, then moved)."""
        where = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=where, dtype=dtype).to(device)

    def sample(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> PathSample:
        """Draw x_t = alpha_t z + beta_t eps and its target velocity d_alpha z + d_beta eps."""
        if noise is None:
            noise = self.sample_noise(z.shape, generator, z.device, z.dtype)
        s = self.values(t, z)
        return PathSample(
            t=t,
            x_t=s.alpha * z + s.beta * noise,
            velocity=s.d_alpha * z + s.d_beta * noise,
            x1=z,
            noise=noise,
        )

    def conditional_velocity(self, x: torch.Tensor, z: torch.Tensor, t) -> torch.Tensor:
        """u_t(x|z) = d_alpha z + d_beta eps, eps = (x - alpha_t z) / beta_t (eps = 0 where beta_t = 0)."""
        s = self.values(t, x)
        return s.d_alpha * z + s.d_beta * _divide(x - s.alpha * z, s.beta)

    def conditional_score(self, x: torch.Tensor, z: torch.Tensor, t) -> torch.Tensor:
        """grad log p_t(x|z) = -(x - alpha_t z) / beta_t^2 (0 where beta_t = 0)."""
        s = self.values(t, x)
        return -_divide(_divide(x - s.alpha * z, s.beta), s.beta)

    def _to_x1_noise(self, value, x, s: ScheduleValues, source: str):
        """(z, eps) from x = alpha z + beta eps and the prediction `value` of kind `source`."""
        if source == "x1":
            return value, _divide(x - s.alpha * value, s.beta)
        if source == "noise":
            return _divide(x - s.beta * value, s.alpha), value
        if source == "score":
            noise = -s.beta * value
            return _divide(x - s.beta * noise, s.alpha), noise
        # velocity: [[alpha, beta], [d_alpha, d_beta]] (z, eps) = (x, v); where the determinant
        # vanishes the matrix has rank 1 and its pseudo-inverse is its transpose / |A|_F^2.
        det = s.alpha * s.d_beta - s.beta * s.d_alpha
        invertible = _invertible(det)
        safe_det = torch.where(invertible, det, torch.ones_like(det))
        z = (s.d_beta * x - s.beta * value) / safe_det
        noise = (s.alpha * value - s.d_alpha * x) / safe_det
        frobenius = s.alpha**2 + s.beta**2 + s.d_alpha**2 + s.d_beta**2
        z_min_norm = (s.alpha * x + s.d_alpha * value) / frobenius
        noise_min_norm = (s.beta * x + s.d_beta * value) / frobenius
        return torch.where(invertible, z, z_min_norm), torch.where(invertible, noise, noise_min_norm)

    def convert(
        self, value: torch.Tensor, x: torch.Tensor, t, source: str, target: str
    ) -> torch.Tensor:
        """Turn a prediction of kind `source` at (x, t) into one of kind `target`.

        Kinds: "velocity", "score", "x1" (the data point), "noise" (eps).
        """
        for kind in (source, target):
            if kind not in PREDICTIONS:
                raise InvalidInputError(f"unknown prediction {kind!r}; choose one of {PREDICTIONS}")
        if source == target:
            return value
        s = self.values(t, x)
        x1, noise = self._to_x1_noise(value, x, s, source)
        if target == "x1":
            return x1
        if target == "noise":
            return noise
        if target == "score":
            return -_divide(noise, s.beta)
        return s.d_alpha * x1 + s.d_beta * noise


def _invertible(divisor: torch.Tensor) -> torch.Tensor:
    """Where |divisor| is a normal number of its dtype (not 0, not subnormal): dividing is exact there."""
    return divisor.abs() >= torch.finfo(divisor.dtype).tiny


def _divide(numerator: torch.Tensor, divisor: torch.Tensor) -> torch.Tensor:
    """numerator / divisor where the divisor is invertible, else 0: the pseudo-inverse of a scalar."""
    invertible = _invertible(divisor)
    quotient = numerator / torch.where(invertible, divisor, torch.ones_like(divisor))
    return torch.where(invertible, quotient, torch.zeros_like(quotient))
