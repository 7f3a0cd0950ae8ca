"""Embeddings of the time t and the label y that condition every network in flowdiff."""

from __future__ import annotations

import math

import torch
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError

FLOW_MAP_TIME_SCALE = 30.0
"""Highest frequency of the time embeddings of a flow map (a flow model's is 1000). The MeanFlow target holds
(r - t) d/dt u, and features cos(1000 t) give d/dt of order 1000: on a 2-D mixture, 600 MeanFlow steps reached a
1-step energy distance of 1.11 with the scale 1000, 0.19 with 5 and 0.065 with 30 (docs/few_step.md)."""


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                         scale: float = 1000.0) -> torch.Tensor:
    """[cos(w_k t), sin(w_k t)] with frequencies w_k = scale / max_period^(k / half), shape (batch, dim).

    Times in [0, 1] are scaled by `scale` (1000) so that the lowest frequencies still vary across [0, 1].
    """
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32  # float64 times keep their precision
    k = torch.arange(half, device=t.device, dtype=dtype)
    freqs = scale * torch.exp(-math.log(max_period) * k / half)
    angles = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def batch_times(t: torch.Tensor | float, batch: int, device=None) -> torch.Tensor:
    """Turn t (a number, a 0-d tensor or shape (batch,)) into a (batch,) tensor."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    t = t.reshape(-1)
    if t.shape[0] == 1:
        return t.expand(batch)
    if t.shape[0] != batch:
        raise InvalidInputError(f"t must be 0-d or have {batch} entries, got shape {tuple(t.shape)}")
    return t


class TimeEmbedding(nn.Module):
    """t -> MLP(sinusoidal(t)): a learned (batch, dim) embedding of the time (highest frequency `scale`)."""

    def __init__(self, dim: int, frequencies: int | None = None, scale: float = 1000.0) -> None:
        super().__init__()
        self.frequencies, self.scale = frequencies or dim, float(scale)
        self.net = nn.Sequential(nn.Linear(self.frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Embed t (0-d or (batch,)) for a batch of the given size."""
        t = batch_times(t, batch, device=self.net[0].weight.device)
        emb = sinusoidal_embedding(t, self.frequencies, scale=self.scale)
        return self.net(emb.to(self.net[0].weight.dtype))


def embed_times(time_embedding: TimeEmbedding, interval_embedding: TimeEmbedding | None, t, r, batch: int,
                what: str) -> torch.Tensor:
    """The time condition e(t) of a flow model, or e(t) + e'(r - t) of a flow map u(x, r, t) (r = None: r = t).

    The interval h = r - t enters through its own learned embedding e', so that r = t (h = 0) is the
    flow model's case and the map's d/dt and d/dr reach the network through both inputs.
    """
    emb = time_embedding(t, batch)
    if interval_embedding is None:
        if r is not None:
            raise IncompatibleError(f"a second time r was given to a {what} with one time input; build it with "
                                    "flow_map=True to use it as a flow map u(x, r, t)")
        return emb
    device = interval_embedding.net[0].weight.device
    t = batch_times(t, batch, device=device)
    r = t if r is None else batch_times(r, batch, device=device)
    return emb + interval_embedding(r - t, batch)


class LabelEmbedding(nn.Module):
    """y -> a learned (batch, dim) vector; index `num_classes` is the null label (no condition).

    Classifier-free guidance trains with some labels replaced by the null label and mixes
    the conditional and unconditional fields at sampling time. `y=None` means all null.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.null_label = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Embed labels y (shape (batch,) or 0-d; None = the null label)."""
        device = self.table.weight.device
        if y is None:
            y = torch.full((batch,), self.null_label, device=device, dtype=torch.long)
        y = torch.as_tensor(y, device=device).long()
        y = y.expand(batch) if y.ndim == 0 else y
        if y.shape != (batch,):
            raise InvalidInputError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
        return self.table(y)


def check_labels(y: torch.Tensor, num_classes: int | None) -> None:
    """Raise unless labels lie in 0..num_classes (num_classes itself is the null label)."""
    if num_classes is None:
        raise InvalidInputError("labels were given to a model trained without labels (num_classes=None)")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise InvalidInputError(
            f"labels must lie in 0..{num_classes - 1} (or {num_classes}, the null label), "
            f"got values from {int(y.min())} to {int(y.max())}"
        )
