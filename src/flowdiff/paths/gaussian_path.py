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

    Conversions divide by alpha_t, beta_t or the determinant alpha d_beta - beta d_alpha;
    each divisor is clamped away from zero at `min_scale` (in absolute value, keeping its
    sign), so values stay finite at t = 0 and t = 1 instead of becoming inf/NaN.
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

    def _safe(self, v: torch.Tensor) -> torch.Tensor:
        sign = torch.where(v < 0, -torch.ones_like(v), torch.ones_like(v))
        return sign * v.abs().clamp_min(self.min_scale)

    def conditional_velocity(self, x: torch.Tensor, z: torch.Tensor, t) -> torch.Tensor:
        """u_t(x|z) = (d_alpha - d_beta alpha / beta) z + (d_beta / beta) x."""
        s = self.values(t, x)
        ratio = s.d_beta / self._safe(s.beta)
        return (s.d_alpha - ratio * s.alpha) * z + ratio * x

    def conditional_score(self, x: torch.Tensor, z: torch.Tensor, t) -> torch.Tensor:
        """grad log p_t(x|z) = -(x - alpha_t z) / beta_t^2."""
        s = self.values(t, x)
        return -(x - s.alpha * z) / self._safe(s.beta) ** 2

    def _to_x1_noise(self, value, x, s: ScheduleValues, source: str):
        if source == "x1":
            return value, (x - s.alpha * value) / self._safe(s.beta)
        if source == "noise":
            return (x - s.beta * value) / self._safe(s.alpha), value
        if source == "score":
            noise = -s.beta * value
            return (x - s.beta * noise) / self._safe(s.alpha), noise
        det = self._safe(s.alpha * s.d_beta - s.beta * s.d_alpha)
        return (s.d_beta * x - s.beta * value) / det, (s.alpha * value - s.d_alpha * x) / det

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
            return -noise / self._safe(s.beta)
        return s.d_alpha * x1 + s.d_beta * noise
