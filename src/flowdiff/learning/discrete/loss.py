"""Discrete flow matching losses on the mixture path: cross-entropy on the data token, and generalized KL.

A training step draws t ~ U[0, 1), x_t ~ p_t(. | x1) and asks the network for p_{1|t}(. | x_t):

- "cross_entropy": mean over tokens of -log p_{1|t}(x1_i | x_t) (Gat et al. 2024);
- "generalized_kl": the Bregman divergence of the rates, D = sum_{a != x_i} u log(u / v) - u + v between the
  conditional rate u = c (delta_{x1_i} - delta_{x_i}) and the model's v = c (p_{1|t} - delta_{x_i}),
  c = d kappa_t / (1 - kappa_t). Written out per token:
  D_i = c (-log p(x1_i) - p(x_i)) if x_i != x1_i, and c (1 - p(x_i)) if x_i = x1_i.
  Its integral over t is minus the ELBO (`learning.discrete.elbo`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.discrete.posterior import log_posterior
from flowdiff.learning.losses import draw, drop_labels
from flowdiff.paths.discrete import MixturePath, MixtureSample
from flowdiff.registry import lookup


def token_divergence(log_p: torch.Tensor, sample: MixtureSample, scale: torch.Tensor) -> torch.Tensor:
    """The generalized KL D_i of the rates at every token, shape (batch, L) (module docstring)."""
    at_data = log_p.gather(-1, sample.x1.long().unsqueeze(-1)).squeeze(-1)
    at_here = log_p.gather(-1, sample.x_t.long().unsqueeze(-1)).squeeze(-1).exp()
    moved = sample.x_t != sample.x1
    divergence = torch.where(moved, -torch.where(moved, at_data, 0.0) - at_here, 1 - at_here)
    return scale.reshape(-1, 1) * divergence


def _cross_entropy(log_p, sample: MixtureSample, path: MixturePath) -> torch.Tensor:
    return -log_p.gather(-1, sample.x1.long().unsqueeze(-1)).mean()


def _generalized_kl(log_p, sample: MixtureSample, path: MixturePath) -> torch.Tensor:
    return token_divergence(log_p, sample, path.rate_scale(sample.t)).mean()


DISCRETE_LOSSES: dict[str, Callable] = {"cross_entropy": _cross_entropy, "generalized_kl": _generalized_kl}
"""Per-batch discrete losses by name."""


class DiscreteFlowMatching:
    """The discrete flow matching loss as an object: its kind and time range; the network learns the posterior.

    `loss(model, path, x1, y=..., label_dropout=..., generator=...)` draws t, x_t and dropped labels and
    returns the loss of `kind` ("cross_entropy" or "generalized_kl", module docstring).
    """

    name = "discrete"
    prediction = "posterior"

    def __init__(self, kind: str = "cross_entropy", t_max: float = 0.999) -> None:
        lookup(DISCRETE_LOSSES, kind, "discrete loss")
        if not 0.0 < t_max <= 1.0:
            raise InvalidInputError(f"t_max must lie in (0, 1], got {t_max!r}")
        self.kind, self.t_max = kind, float(t_max)

    def config(self) -> dict:
        """A JSON-ready description: {"name": ..., hyperparameters}."""
        return {"name": self.name, "kind": self.kind, "t_max": self.t_max}

    def __call__(self, model, path: MixturePath, x1: torch.Tensor, y: torch.Tensor | None = None,
                 coupling=None, label_dropout: float = 0.0, generator: torch.Generator | None = None,
                 time_law: str = "uniform") -> torch.Tensor:
        """The loss on the minibatch of token sequences x1 (batch, L)."""
        if time_law != "uniform":
            raise IncompatibleError(f"discrete flow matching draws t uniformly; the time law {time_law!r} is for "
                                    "Gaussian paths")
        if not isinstance(path, MixturePath):
            raise IncompatibleError(f"discrete flow matching needs a MixturePath, got {type(path).__name__}")
        if coupling is not None and getattr(coupling, "name", "independent") != "independent":
            raise IncompatibleError("discrete flow matching pairs source and data independently; "
                                    f"the coupling {getattr(coupling, 'name', coupling)!r} is for Gaussian paths")
        if y is not None and getattr(model, "num_classes", None) is None:
            raise IncompatibleError("labels y were given but the model is unconditional (num_classes=None)")
        n = x1.shape[0]
        t = self.t_max * draw("uniform", (n,), generator, x1.device, torch.float32)
        uniform = draw("uniform", x1.shape, generator, x1.device, torch.float32)
        x0 = path.source_from_uniform(draw("uniform", x1.shape, generator, x1.device, torch.float32))
        sample = path.sample(x1, t, x0=x0, uniform=uniform)  # checks the tokens (once a step: a host sync)
        if y is not None:
            y = drop_labels(y, model.num_classes, label_dropout, generator)
        log_p = log_posterior(model, path, sample.x_t, t, y)
        return DISCRETE_LOSSES[self.kind](log_p, sample, path)

    def __repr__(self) -> str:
        return f"DiscreteFlowMatching(kind={self.kind!r}, t_max={self.t_max})"
