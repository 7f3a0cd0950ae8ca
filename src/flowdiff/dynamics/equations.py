"""Differential equations: the ODE dX = u_t(X) dt and the SDE dX = u_t(X) dt + sigma_t dW."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError

Field = Callable[..., torch.Tensor]
"""A vector field called as `f(x, t, **cond)` returning a tensor shaped like (or broadcastable to) x."""


@dataclass
class ODE:
    """An ordinary differential equation dX_t = u_t(X_t) dt given by its drift u(x, t)."""

    drift: Field

    def __post_init__(self) -> None:
        if not callable(self.drift):
            raise IncompatibleError(f"ODE drift must be callable f(x, t), got {type(self.drift)}")


class ConstantDiffusion:
    """A diffusion coefficient sigma_t = sigma that is the same for every time and state."""

    additive = True  # sigma does not depend on x

    def __init__(self, sigma: float) -> None:
        sigma = float(sigma)
        if not sigma >= 0.0:
            raise InvalidInputError(f"diffusion coefficient must be >= 0, got {sigma}")
        self.sigma = sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> float:
        return self.sigma  # a Python number: no tensor built (or host sync) at every step

    def __repr__(self) -> str:
        return f"ConstantDiffusion({self.sigma})"


class SDE:
    """A stochastic differential equation dX_t = u_t(X_t) dt + sigma_t(X_t) dW_t (Itô).

    `diffusion` is a number or a callable `sigma(x, t)` returning a scalar or a tensor
    broadcastable to x (a per-dimension coefficient). The noise is *additive* when sigma does
    not depend on x; then Itô and Stratonovich calculus agree and the stochastic Heun method
    has strong order 1. `additive` says which: a number is additive; a callable is taken as
    additive when `additive=True` is passed here or the callable has an attribute
    `additive = True` (as `ConstantDiffusion` has), and as state-dependent otherwise. The
    declaration is trusted, not checked: checking would cost evaluations of sigma.
    """

    def __init__(self, drift: Field, diffusion: float | Field, additive: bool | None = None) -> None:
        if not callable(drift):
            raise IncompatibleError(f"SDE drift must be callable f(x, t), got {type(drift)}")
        if additive is not None and not isinstance(additive, bool):
            raise InvalidInputError(f"additive must be True, False or None, got {additive!r}")
        self.drift = drift
        if callable(diffusion):
            self.diffusion = diffusion
            declared = getattr(diffusion, "additive", False)
            self.additive = bool(declared) if additive is None else additive
        else:
            if additive is False:
                raise InvalidInputError(
                    f"a constant diffusion coefficient ({diffusion}) is additive noise; "
                    "pass additive=False only with a callable sigma(x, t) that depends on x"
                )
            self.diffusion = ConstantDiffusion(diffusion)
            self.additive = True

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(drift={self.drift!r}, diffusion={self.diffusion!r}, "
            f"additive={self.additive})"
        )
