"""A multilayer perceptron vector field u_theta(x, t, y) for vector data (any dimension)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models.embeddings import FLOW_MAP_TIME_SCALE, LabelEmbedding, TimeEmbedding, embed_times

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "selu": nn.SELU, "tanh": nn.Tanh}
"""Activation functions by name."""


class MLP(nn.Module):
    """u_theta(x, t, y) = MLP([x, e(t) + e(y)]): the input concatenated with time (and label) embeddings.

    e(t) is a learned map of a sinusoidal embedding of t; with `num_classes`, e(y) is a learned
    label embedding whose extra index `num_classes` is the null label used for classifier-free
    guidance (y=None means the null label). Output has the shape of x.

    `flow_map=True` adds a second time: u_theta(x, r, t, y) = MLP([x, e(t) + e'(r - t) + e(y)]), the
    average velocity of a flow map (called as model(x, t, r=r); r = None means r = t, the velocity).
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        num_classes: int | None = None,
        time_dim: int = 64,
        activation: str = "silu",
        flow_map: bool = False,
    ) -> None:
        super().__init__()
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        if not (isinstance(dim, int) and dim >= 1):
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
            raise InvalidInputError(f"hidden must be one or more positive layer widths, got {hidden!r}")
        if not (isinstance(time_dim, int) and time_dim >= 2):
            raise InvalidInputError(f"time_dim must be an integer >= 2, got {time_dim!r}")
        if activation not in ACTIVATIONS:
            raise InvalidInputError(
                f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}"
            )
        if num_classes is not None and not (isinstance(num_classes, int) and num_classes >= 1):
            raise InvalidInputError(f"num_classes must be None or a positive integer, got {num_classes!r}")
        self.dim, self.hidden, self.time_dim, self.activation = dim, tuple(hidden), time_dim, activation
        self.num_classes = num_classes
        self.flow_map = bool(flow_map)
        self.data_shape = (dim,)
        scale = FLOW_MAP_TIME_SCALE if self.flow_map else 1000.0
        self.time_embedding = TimeEmbedding(time_dim, scale=scale)
        self.interval_embedding = TimeEmbedding(time_dim, scale=scale) if self.flow_map else None
        self.label_embedding = None if num_classes is None else LabelEmbedding(num_classes, time_dim)
        layers: list[nn.Module] = []
        width = dim + time_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    @property
    def null_label(self) -> int | None:
        """The label index meaning "no condition" (None for an unconditional model)."""
        return self.num_classes

    def config(self) -> dict:
        """The registered name and the keyword arguments that rebuild this model."""
        return {
            "name": "mlp",
            "dim": self.dim,
            "hidden": list(self.hidden),
            "num_classes": self.num_classes,
            "time_dim": self.time_dim,
            "activation": self.activation,
            **({"flow_map": True} if self.flow_map else {}),
        }

    def forward(
        self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None, *,
        r: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The vector field at x (batch, dim), times t (0-d or (batch,)), labels y (batch,) or None;
        a flow map's average velocity from t to r (r = None: r = t)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InvalidInputError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        batch = x.shape[0]
        cond = embed_times(self.time_embedding, self.interval_embedding, t, r, batch, "MLP")
        if self.label_embedding is not None:
            cond = cond + self.label_embedding(y, batch)
        elif y is not None:
            raise IncompatibleError("labels y were given to an unconditional model (num_classes=None)")
        return self.net(torch.cat([x, cond.to(x.dtype)], dim=-1))
