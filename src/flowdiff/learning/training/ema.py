"""Exponential moving average (EMA) of a network's weights, the weights used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn

from flowdiff.errors import InvalidInputError


class EMA(nn.Module):
    """Shadow weights theta_ema <- d_k theta_ema + (1 - d_k) theta, with warm-up d_k = min(d, (1+k)/(10+k)).

    A wrapper with the call signature of the network it averages, `f(x, t, **cond)`. The
    warm-up (k = number of updates so far) lets the average forget the random
    initialisation within the first few hundred steps instead of ~1/(1-d) steps; pass
    `warmup=False` for the plain constant decay. Buffers (e.g. normalisation statistics)
    are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise InvalidInputError(f"EMA decay must lie in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay d_k used by the next update."""
        if not self.warmup:
            return self.decay
        k = int(self.num_updates)
        return min(self.decay, (1.0 + k) / (10.0 + k))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards the weights of `model` (the network being trained)."""
        weight = 1.0 - self.current_decay()
        shadow = [p for p in self.module.parameters()]
        live = [p.detach() for p in model.parameters()]
        if len(shadow) != len(live):
            raise InvalidInputError("EMA.update got a model with a different set of parameters")
        floating = [(s, p) for s, p in zip(shadow, live) if s.is_floating_point()]
        if floating:
            torch._foreach_lerp_([s for s, _ in floating], [p for _, p in floating], weight)
        for s, p in zip(self.module.buffers(), model.buffers()):
            s.copy_(p)
        self.num_updates += 1

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        """Evaluate the averaged network at (x, t)."""
        return self.module(x, t, **cond)

    def train(self, mode: bool = True) -> EMA:
        """The shadow network always stays in eval mode."""
        super().train(mode)
        self.module.eval()
        return self

    @property
    def data_shape(self):
        """Shape of one sample, taken from the wrapped network."""
        return getattr(self.module, "data_shape", None)

    @property
    def num_classes(self):
        """Number of labels of the wrapped network (None when unconditional)."""
        return getattr(self.module, "num_classes", None)

    def config(self) -> dict:
        """Configuration of the wrapped network."""
        return self.module.config()
