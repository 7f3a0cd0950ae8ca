"""MeanFlow (Geng et al. 2025): train a flow map u(z, r, t) through the MeanFlow identity, one JVP per step.

Differentiating (r - t) u(z_t, r, t) = int_t^r v(z_s, s) ds in t along the trajectory (r fixed) gives

    u(z_t, r, t) = v(z_t, t) + (r - t) d/dt u(z_t, r, t),   d/dt u = v . grad_z u + d_t u,

the MeanFlow identity. The paper runs time from data (0) to noise (1) and writes - (t - r); in flowdiff's
direction (noise at t = 0, data at t = 1, r >= t) the same average velocity gives the same identity, and
sampling jumps forward: z_r = z_t + (r - t) u(z_t, r, t). The loss regresses u_theta(z_t, r, t) on the
stop-gradient target v + (r - t) d/dt u_theta, where v is the conditional velocity of the path (its
expectation given z_t is the marginal velocity, and the target is linear in v) and d/dt u_theta is one
forward-mode JVP of the network with tangents (v, 0, 1) for (z, r, t).

Improved MeanFlow (Geng et al., "Improved Mean Flows", late 2025) solves the identity for the velocity instead:
the compound V = u_theta(z_t, r, t) - (r - t) sg(d/dt u_theta), whose JVP tangent is the network's own velocity
sg(u_theta(z_t, t, t)) (not the conditional v), is a prediction of v(z_t, t) from z_t alone and is regressed on
the conditional velocity, a target that does not depend on the network (the paper writes V = u + (t - r) sg(du/dt)
with its time reversed; at r = t both losses are flow matching).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.flowmaps.common import (
    LOGIT_NORMAL,
    check_finite,
    check_positive,
    check_share,
    check_time_options,
    check_velocity,
    draw_time,
    logit_normal,
    per_example,
)
from flowdiff.learning.flowmaps.maps import require_flow_map
from flowdiff.learning.stable_target import require_independent, stable_velocity


def _column(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(batch,) values shaped to broadcast against (batch, *shape)."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def meanflow_target(velocity: torch.Tensor, derivative: torch.Tensor, t: torch.Tensor,
                    r: torch.Tensor) -> torch.Tensor:
    """The right side of the MeanFlow identity in flowdiff's direction: v(z, t) + (r - t) d/dt u(z, r, t)."""
    return velocity + _column(r - t, velocity) * derivative


def improved_velocity(average: torch.Tensor, derivative: torch.Tensor, t: torch.Tensor,
                      r: torch.Tensor) -> torch.Tensor:
    """Improved MeanFlow's compound velocity in flowdiff's direction: V = u(z, r, t) - (r - t) d/dt u(z, r, t).

    The MeanFlow identity solved for the velocity: for the exact map V is v(z, t), whatever r.
    """
    return average - _column(r - t, average) * derivative


def average_velocity_and_derivative(model, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor,
                                    velocity: torch.Tensor, cond: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """u(z, r, t) and its total derivative d/dt u = v . grad_z u + d_t u by one `torch.func.jvp`.

    Attention runs on the math kernel inside the JVP (the fused kernels have no forward-mode
    derivative); any other layer without one is refused with an IncompatibleError.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def field(z_, r_, t_):
        return model(z_, t_, r=r_, **cond)

    try:
        with sdpa_kernel([SDPBackend.MATH]):
            return torch.func.jvp(field, (z, r, t), (velocity, torch.zeros_like(r), torch.ones_like(t)))
    except (NotImplementedError, RuntimeError) as error:
        text = str(error)
        if "forward AD" not in text and "forward-mode" not in text and "jvp" not in text.lower():
            raise
        raise IncompatibleError("the MeanFlow loss differentiates the network in forward mode (a JVP), but one of "
                                f"its layers cannot: {text.splitlines()[0]}; use layers with forward-mode support, "
                                "or the shortcut loss, which needs no JVP") from None


VARIANTS = ("original", "improved")
"""MeanFlow's losses: the original (regress u on the identity's target) and improved MeanFlow (regress the compound
velocity on the conditional velocity; see `MeanFlow`)."""

class MeanFlow:
    """The MeanFlow loss: E sg(w) |u_theta(z_t, r, t) - sg(v + (r - t) d/dt u_theta)|^2 (see the module docstring).

    Times: t and a second time are drawn by `time_law` on [t_min, t_max] and ordered (t <= r); a share
    `flow_share` of the pairs gets r = t, where the target is plain flow matching. `time_law` is a registered
    law ("uniform", "early") or "logit_normal": the paper's logit(tau) ~ N(time_mu, time_sigma^2) on its time
    tau (data at 0), drawn as flowdiff's t = 1 - tau (`common.logit_normal`; the paper's ImageNet -0.4, 1.0 are
    the defaults, read only by that law).

    Adaptive weighting: w = 1 / (e + eps)^power with e the example's mean squared error. The default power = 0 is
    plain L2, whose minimiser is the conditional mean; the paper's power = 1 is a robust (Cauchy-like) loss
    whose minimiser is not, so on low-dimensional data it biases even u(x, t, t) off the marginal velocity
    (docs/few_step.md: relative error 0.33 against 0.007 for flow matching on a 2-D mixture).

    `variant="improved"`: improved MeanFlow's loss E sg(w) |u_theta - (r - t) sg(d/dt u_theta) - v|^2, the tangent
    of d/dt u_theta being sg(u_theta(z_t, t, t)) (module docstring; one more forward pass, without gradients).

    `velocity="stable"`: v is the conditional velocity averaged over the minibatch's posterior instead of the pair's
    own (`common.VELOCITIES`); both targets are linear in v, so their expectation is unchanged up to the average's
    O(1/batch) bias, and their noise falls (docs/few_step.md).
    """

    name = "meanflow"
    prediction = "velocity"
    activation_passes = 2  # the JVP keeps the forward's and the tangent's activations (training memory estimate)
    flow_map = True

    def __init__(self, flow_share: float = 0.75, power: float = 0.0, eps: float = 1e-3, time_law: str = "uniform",
                 t_min: float = 0.0, t_max: float = 1.0, time_mu: float = -0.4, time_sigma: float = 1.0,
                 variant: str = "original", velocity: str = "conditional") -> None:
        check_time_options(time_law, t_min, t_max, own_laws=(LOGIT_NORMAL,))
        self.flow_share = check_share("flow_share", flow_share)
        self.power = 0.0 if power == 0 else check_positive("power", power)
        self.eps = check_positive("eps", eps)
        self.time_law, self.t_min, self.t_max = time_law, float(t_min), float(t_max)
        self.time_mu, self.time_sigma = check_finite("time_mu", time_mu), check_positive("time_sigma", time_sigma)
        if variant not in VARIANTS:
            raise InvalidInputError(f"unknown MeanFlow variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
        self.variant, self.velocity = variant, check_velocity(velocity, "MeanFlow")

    def _options(self) -> dict:
        return {"flow_share": self.flow_share, "power": self.power, "eps": self.eps, "time_law": self.time_law,
                "t_min": self.t_min, "t_max": self.t_max, "time_mu": self.time_mu, "time_sigma": self.time_sigma,
                "variant": self.variant, "velocity": self.velocity}

    def law(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The time law as a map of u ~ U[0, 1] to [0, 1]: a registered law's, or the logit-normal map."""
        from flowdiff.learning.losses import TIME_LAWS

        if self.time_law == LOGIT_NORMAL:
            return functools.partial(logit_normal, mu=self.time_mu, sigma=self.time_sigma)
        return TIME_LAWS[self.time_law]

    def times(self, first: torch.Tensor, generator, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r), t <= r: `first` (u ~ U[0, 1] from `path_batch`) and a second draw through the time law, ordered;
        r = t on a share `flow_share` (a coin per pair). All drawn by `losses.draw` on the loss's generator."""
        from flowdiff.learning.losses import draw

        n, law = first.shape[0], self.law()
        t = self.t_min + (self.t_max - self.t_min) * law(first)
        second = draw_time(n, law, self.t_min, self.t_max, generator, device, dtype)
        same = draw("uniform", (n,), generator, device, dtype) < self.flow_share
        t, r = torch.minimum(t, second), torch.maximum(t, second)
        return t, torch.where(same, t, r)

    def __call__(self, model, path, x1: torch.Tensor, y=None, coupling=None, label_dropout: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The loss on the minibatch x1 (the coupling pairs noise and data; labels are dropped for guidance)."""
        from flowdiff.learning.losses import path_batch

        require_flow_map(model, "the MeanFlow loss")
        if self.velocity == "stable":
            require_independent(coupling)
        first, cond = path_batch(model, path, x1, y, coupling, label_dropout, generator)  # first.t ~ U[0, 1]
        t, r = self.times(first.t, generator, x1.device, x1.dtype)
        s = path.sample(first.x1, t, noise=first.noise)
        velocity = s.velocity if self.velocity == "conditional" else stable_velocity(path, s, y, cond.get("y"))
        if self.variant == "improved":
            error = per_example(self._improved_prediction(model, s.x_t, t, r, cond) - velocity)
        else:
            u, derivative = average_velocity_and_derivative(model, s.x_t, t, r, velocity, cond)
            error = per_example(u - meanflow_target(velocity, derivative, t, r).detach())
        weight = (error.detach() + self.eps).pow(-self.power) if self.power else 1.0
        return (weight * error).mean()

    @staticmethod
    def _improved_prediction(model, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, cond: dict) -> torch.Tensor:
        """u(z, r, t) - (r - t) sg(d/dt u), the JVP's tangent being the network's own velocity sg(u(z, t, t))."""
        with torch.no_grad():
            velocity = model(z, t, **cond)
        u, derivative = average_velocity_and_derivative(model, z, t, r, velocity, cond)
        return improved_velocity(u, derivative.detach(), t, r)

    def config(self) -> dict:
        """A JSON-ready description: {"name": "meanflow", hyperparameters}."""
        return {"name": self.name, **self._options()}

    def __repr__(self) -> str:
        return f"MeanFlow({', '.join(f'{k}={v!r}' for k, v in self._options().items())})"


class ImprovedMeanFlow(MeanFlow):
    """Improved MeanFlow (Geng et al., late 2025) under its own name: `MeanFlow(variant="improved")`."""

    name = "imeanflow"

    def __init__(self, **options: object) -> None:
        if options.setdefault("variant", "improved") != "improved":
            raise InvalidInputError(f"the imeanflow loss is MeanFlow's improved variant, got variant="
                                    f"{options['variant']!r}; use the meanflow loss for the original")
        super().__init__(**options)
