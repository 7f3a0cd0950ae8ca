"""Shortcut models (Frans et al. 2025): a step-size-conditioned network trained by self-consistency, no JVP.

The shortcut s(x_t, t, d) is the flow map's average velocity over a step d: s(x, t, d) = u(x, t + d, t),
so x_{t+d} = x_t + d s(x_t, t, d), and the paper's time direction is flowdiff's (noise at t = 0). The
exact map is consistent under composition: one step of size 2d equals two steps of size d,

    u(x, t + 2d, t) = (u(x, t + d, t) + u(x', t + 2d, t + d)) / 2,   x' = x + d u(x, t + d, t).

Training regresses u_theta(x_t, t, t) on the conditional velocity (flow matching, d = 0) on part of the
batch and u_theta(x_t, t + 2d, t) on the stop-gradient right side above on the rest, with d drawn from
the dyadic sizes 1/M, 2/M, ..., 1/2 (M = `max_steps`) and t uniform on [0, 1 - 2d]; at the finest d = 1/M
the two half steps use the velocity u(x, t, t), the level flow matching trains (the paper's choice).
With `velocity="stable"` the flow-matching part regresses on the conditional velocity averaged over the
minibatch's posterior (flowdiff.learning.stable_target) instead of the pair's own.
"""

from __future__ import annotations

import math

import torch

from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps.common import check_share, check_time_options, check_velocity, per_example
from flowdiff.learning.flowmaps.maps import require_flow_map
from flowdiff.learning.stable_target import require_independent, stable_velocity


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def shortcut_target(model, x: torch.Tensor, t: torch.Tensor, d: torch.Tensor, finest: float = 0.0,
                    **cond) -> torch.Tensor:
    """(u(x, t + d, t) + u(x + d u(x, t + d, t), t + 2d, t + d)) / 2: two steps of size d as one of 2d.

    Steps d <= `finest` query the network at r = t (its velocity, the level flow matching trains) instead of
    at the never-trained interval d, as the paper does for its smallest step 1/M.
    """
    h = torch.where(d <= finest, torch.zeros_like(d), d)
    first = model(x, t, r=t + h, **cond)
    middle = x + _column(d, x) * first
    return 0.5 * (first + model(middle, t + d, r=t + d + h, **cond))


class Shortcut:
    """The shortcut loss: flow matching at d = 0 plus self-consistency on a share of the batch (module docstring).

    `consistency_share` of each batch trains the two-steps-equal-one target (the rest flow matching,
    whose times follow `time_law` on [t_min, t_max]); `max_steps` M (a power of 2) is the finest step 1/M.
    `velocity` is flow matching's target: the pair's conditional velocity or the batch posterior's average
    ("stable", independent pairs only; `common.VELOCITIES`).
    """

    name = "shortcut"
    prediction = "velocity"
    flow_map = True

    def __init__(self, consistency_share: float = 0.25, max_steps: int = 128, time_law: str = "uniform",
                 t_min: float = 0.0, t_max: float = 1.0, velocity: str = "conditional") -> None:
        check_time_options(time_law, t_min, t_max)
        self.velocity = check_velocity(velocity, "shortcut")
        self.consistency_share = check_share("consistency_share", consistency_share)
        whole = isinstance(max_steps, int) and not isinstance(max_steps, bool)
        if not whole or max_steps < 2 or max_steps & (max_steps - 1):
            raise InvalidInputError(f"max_steps must be a power of 2 >= 2 (the finest step is 1/max_steps), "
                                    f"got {max_steps!r}")
        self.max_steps = max_steps
        self.time_law, self.t_min, self.t_max = time_law, float(t_min), float(t_max)

    def _options(self) -> dict:
        return {"consistency_share": self.consistency_share, "max_steps": self.max_steps, "time_law": self.time_law,
                "t_min": self.t_min, "t_max": self.t_max, "velocity": self.velocity}

    def step_sizes(self, n: int, generator, device, dtype) -> torch.Tensor:
        """n step sizes d = 2^k / M, k uniform on 0 .. log2(M) - 1 (so that 2d <= 1)."""
        from flowdiff.learning.losses import draw

        levels = int(math.log2(self.max_steps))
        k = (draw("uniform", (n,), generator, device, dtype) * levels).floor().clamp(max=levels - 1)
        return torch.exp2(k) / self.max_steps

    def __call__(self, model, path, x1: torch.Tensor, y=None, coupling=None, label_dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss on the minibatch x1 (the coupling pairs noise and data; labels are dropped for guidance)."""
        from flowdiff.learning.losses import draw, path_batch

        require_flow_map(model, "the shortcut loss")
        if self.velocity == "stable":
            require_independent(coupling)
        s, cond = path_batch(model, path, x1, y, coupling, label_dropout, generator, self.t_min, self.t_max,
                             self.time_law)
        k = round(self.consistency_share * x1.shape[0])
        velocity = s.velocity if self.velocity == "conditional" else stable_velocity(path, s, y, cond.get("y"))
        x_t, t, r, target = s.x_t, s.t, s.t, velocity
        if k:
            d = self.step_sizes(k, generator, x1.device, x1.dtype)
            t_k = (1 - 2 * d) * draw("uniform", (k,), generator, x1.device, x1.dtype)
            part = path.sample(s.x1[:k], t_k, noise=s.noise[:k])
            with torch.no_grad():
                bootstrap = shortcut_target(model, part.x_t, t_k, d, 1 / self.max_steps,
                                            **{key: v[:k] for key, v in cond.items()})
            x_t, t = torch.cat([part.x_t, x_t[k:]]), torch.cat([t_k, t[k:]])
            r, target = torch.cat([t_k + 2 * d, r[k:]]), torch.cat([bootstrap, target[k:]])
        return per_example(model(x_t, t, r=r, **cond) - target).mean()

    def config(self) -> dict:
        """A JSON-ready description: {"name": "shortcut", hyperparameters}."""
        return {"name": self.name, **self._options()}

    def __repr__(self) -> str:
        return f"Shortcut({', '.join(f'{k}={v!r}' for k, v in self._options().items())})"
