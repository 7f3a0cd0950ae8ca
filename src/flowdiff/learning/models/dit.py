"""A small diffusion transformer (DiT) vector field u_t(x | y) for images (batch, C, H, W).

The image is cut into p x p patches (patchify), each patch becomes a token with a fixed
2-D sine-cosine position embedding, transformer blocks run on the tokens with adaptive
layer norm: the conditioning c = emb(t) + emb(y) gives each block a shift, scale and gate,
h <- h + gate * f(LN(h) * (1 + scale) + shift), with the gates initialised to zero
(adaLN-zero) so that every block starts as the identity; a last layer maps tokens back to
patches (unpatchify). Sides that are not multiples of p are zero-padded and cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models.embeddings import FLOW_MAP_TIME_SCALE, LabelEmbedding, TimeEmbedding, embed_times
from flowdiff.learning.models.unet import image_shape


def sincos_position_embedding(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2-D position embedding (rows * cols, dim): [sin/cos(row w_k), sin/cos(col w_k)]."""
    quarter = dim // 4
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(quarter, dtype=torch.float64) / max(quarter, 1))
    row, col = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                              torch.arange(cols, dtype=torch.float64), indexing="ij")
    parts = []
    for position in (row.reshape(-1), col.reshape(-1)):
        angles = position[:, None] * freqs[None]
        parts += [torch.sin(angles), torch.cos(angles)]
    emb = torch.cat(parts, dim=-1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, torch.zeros(emb.shape[0], dim - emb.shape[1], dtype=emb.dtype)], dim=-1)
    return emb.float()


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive layer-norm modulation h * (1 + scale) + shift, per sample."""
    return h * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """h += gate_a * Attn(mod(LN(h))); h += gate_m * MLP(mod(LN(h))); shifts, scales, gates from c."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        inner = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, hidden)
        )
        self.adaptive = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.adaptive.weight)
        nn.init.zeros_(self.adaptive.bias)

    def attention(self, h: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = h.shape
        qkv = self.qkv(h).reshape(batch, tokens, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, hidden))

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaptive(F.silu(c)).chunk(6, dim=-1)
        h = h + gate_a[:, None] * self.attention(modulate(self.norm1(h), shift_a, scale_a))
        return h + gate_m[:, None] * self.mlp(modulate(self.norm2(h), shift_m, scale_m))


class DiT(nn.Module):
    """Diffusion transformer field u_t(x | y): patchify, adaLN-zero blocks conditioned on t and y, unpatchify.

    `num_classes` adds a label embedding whose index num_classes is the null label (y=None);
    `flow_map=True` adds a second time r (the flow map u(x, r, t | y), called as model(x, t, r=r)).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        patch_size: int = 2,
        hidden: int = 128,
        depth: int = 4,
        heads: int = 4,
        num_classes: int | None = None,
        flow_map: bool = False,
    ) -> None:
        super().__init__()
        self.data_shape = image_shape(channels, image_size)
        if patch_size < 1 or hidden < 1 or depth < 1 or heads < 1:
            raise InvalidInputError(
                "patch_size, hidden, depth and heads must be >= 1, "
                f"got {patch_size}, {hidden}, {depth}, {heads}"
            )
        if hidden % heads:
            raise InvalidInputError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.flow_map = bool(flow_map)
        self.patch_size = int(patch_size)
        self._kwargs = {
            "channels": int(channels),
            "image_size": image_size if isinstance(image_size, int) else list(image_size),
            "patch_size": self.patch_size,
            "hidden": int(hidden),
            "depth": int(depth),
            "heads": int(heads),
            "num_classes": self.num_classes,
            **({"flow_map": True} if self.flow_map else {}),
        }
        _, height, width = self.data_shape
        p = self.patch_size
        self.rows, self.cols = math.ceil(height / p), math.ceil(width / p)
        pad_h, pad_w = self.rows * p - height, self.cols * p - width
        self._padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)

        self.patch_embedding = nn.Linear(channels * p * p, hidden)
        position = sincos_position_embedding(self.rows, self.cols, hidden)
        self.register_buffer("position", position, persistent=False)
        scale = FLOW_MAP_TIME_SCALE if self.flow_map else 1000.0
        self.time_embedding = TimeEmbedding(hidden, scale=scale)
        self.interval_embedding = TimeEmbedding(hidden, scale=scale) if self.flow_map else None
        self.label_embedding = LabelEmbedding(self.num_classes, hidden) if self.num_classes else None
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_adaptive = nn.Linear(hidden, 2 * hidden)
        self.final_linear = nn.Linear(hidden, channels * p * p)
        for layer in (self.final_adaptive, self.final_linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def config(self) -> dict:
        """JSON-ready keyword arguments that rebuild this network, with "name": "dit"."""
        return {"name": "dit", **self._kwargs}

    def condition(self, t: torch.Tensor, y: torch.Tensor | None, batch: int, r: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """The (batch, hidden) conditioning vector c = emb(t) + emb(y)."""
        c = embed_times(self.time_embedding, self.interval_embedding, t, r, batch, "DiT")
        if self.label_embedding is not None:
            c = c + self.label_embedding(y, batch)
        elif y is not None:
            raise IncompatibleError(
                "labels y were given to a DiT built without classes (num_classes=None); "
                "build it with num_classes=K or call it without y"
            )
        return c

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> (batch, rows * cols, C * p * p) tokens, after padding."""
        if any(self._padding):
            x = F.pad(x, self._padding)
        batch, channels = x.shape[:2]
        p = self.patch_size
        x = x.reshape(batch, channels, self.rows, p, self.cols, p)
        return x.permute(0, 2, 4, 1, 3, 5).reshape(batch, self.rows * self.cols, channels * p * p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(batch, rows * cols, C * p * p) -> (batch, C, H, W), cropping the padding."""
        batch = tokens.shape[0]
        channels, height, width = self.data_shape
        p = self.patch_size
        x = tokens.reshape(batch, self.rows, self.cols, channels, p, p).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(batch, channels, self.rows * p, self.cols * p)
        left, _, top, _ = self._padding
        return x[..., top : top + height, left : left + width]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                r: torch.Tensor | None = None) -> torch.Tensor:
        """u_t(x | y) for x (batch, C, H, W), t 0-d or (batch,), labels y (batch,) or None (null label);
        with flow_map=True, the average velocity u(x, r, t | y) from t to r (r = None: r = t)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise InvalidInputError(
                f"DiT expects images of shape (batch, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        c = self.condition(t, y, x.shape[0], r).to(x.dtype)
        h = self.patch_embedding(self.patchify(x)) + self.position.to(x.dtype)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_adaptive(F.silu(c)).chunk(2, dim=-1)
        return self.unpatchify(self.final_linear(modulate(self.final_norm(h), shift, scale)))
