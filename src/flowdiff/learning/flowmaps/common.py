"""What the flow-map losses share: their hyperparameter checks and the draw of a second training time."""

from __future__ import annotations

import math

import torch

from flowdiff.errors import InvalidInputError


def check_share(name: str, value) -> float:
    """A probability in [0, 1] as a float, or an error naming the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_time_options(time_law: str, t_min: float, t_max: float) -> None:
    """The time law is registered and 0 <= t_min < t_max <= 1."""
    from flowdiff.learning.losses import TIME_LAWS
    from flowdiff.registry import lookup

    lookup(TIME_LAWS, time_law, "time law")
    if not (isinstance(t_min, int | float) and isinstance(t_max, int | float) and 0.0 <= t_min < t_max <= 1.0):
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")


def draw_time(n: int, time_law: str, t_min: float, t_max: float, generator, device, dtype) -> torch.Tensor:
    """n times t_min + (t_max - t_min) F^-1(U) by the registered time law (drawn through `losses.draw`)."""
    from flowdiff.learning.losses import TIME_LAWS, draw

    return t_min + (t_max - t_min) * TIME_LAWS[time_law](draw("uniform", (n,), generator, device, dtype))


def per_example(error: torch.Tensor) -> torch.Tensor:
    """The mean of the squared error over each example's entries: shape (batch,)."""
    return error.pow(2).reshape(error.shape[0], -1).mean(dim=1)


def check_positive(name: str, value) -> float:
    """A finite number > 0 as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
