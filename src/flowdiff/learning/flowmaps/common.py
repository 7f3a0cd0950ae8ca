"""What the flow-map losses share: their hyperparameter checks, the logit-normal time law and the draw of a time."""

from __future__ import annotations

import math

import torch

from flowdiff.errors import InvalidInputError


def check_share(name: str, value) -> float:
    """A probability in [0, 1] as a float, or an error naming the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise InvalidInputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


VELOCITIES = ("conditional", "stable")
"""The velocity v(z_t, t) a flow-map loss regresses on where it trains the lecture's velocity: the pair's conditional
velocity, or its average over the minibatch's posterior (`flowdiff.learning.stable_target`: less noise, independent
pairs only)."""


def check_velocity(velocity, loss: str) -> str:
    """One of `VELOCITIES`, or an error naming the loss."""
    if velocity not in VELOCITIES:
        raise InvalidInputError(f"unknown {loss} velocity {velocity!r}; choose one of: {', '.join(VELOCITIES)}")
    return velocity


LOGIT_NORMAL = "logit_normal"
"""MeanFlow's own time law (beside the registered ones): the paper's logit-normal law in flowdiff's direction."""


def logit_normal(u: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    """t = 1 - sigmoid(mu + sigma Phi^-1(u)): MeanFlow's logit-normal law on its time (data at 0), as flowdiff's t.

    The paper draws its time tau with logit(tau) ~ N(mu, sigma^2); flowdiff's t = 1 - tau (noise at t = 0), so
    P(t <= q) = Phi((mu + logit(q)) / sigma). Here by the inverse CDF of one uniform draw u.
    """
    normal = math.sqrt(2.0) * torch.erfinv(2 * u - 1)
    return torch.sigmoid(-(mu + sigma * normal))


def check_time_options(time_law: str, t_min: float, t_max: float, own_laws: tuple[str, ...] = ()) -> None:
    """The time law is registered (or one of the loss's `own_laws`) and 0 <= t_min < t_max <= 1."""
    from flowdiff.learning.losses import TIME_LAWS
    from flowdiff.registry import lookup

    lookup({**TIME_LAWS, **dict.fromkeys(own_laws)}, time_law, "time law")
    if not (isinstance(t_min, int | float) and isinstance(t_max, int | float) and 0.0 <= t_min < t_max <= 1.0):
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")


def draw_time(n: int, time_law, t_min: float, t_max: float, generator, device, dtype) -> torch.Tensor:
    """n times t_min + (t_max - t_min) F^-1(U) by a registered time law's name or a map F^-1 of U[0, 1] to [0, 1]
    (U drawn through `losses.draw`, so that the draw is the same whatever the number of ranks)."""
    from flowdiff.learning.losses import TIME_LAWS, draw

    law = TIME_LAWS[time_law] if isinstance(time_law, str) else time_law
    return t_min + (t_max - t_min) * law(draw("uniform", (n,), generator, device, dtype))


def per_example(error: torch.Tensor) -> torch.Tensor:
    """The mean of the squared error over each example's entries: shape (batch,)."""
    return error.pow(2).reshape(error.shape[0], -1).mean(dim=1)


def check_finite(name: str, value) -> float:
    """A finite number as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """A finite number > 0 as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
