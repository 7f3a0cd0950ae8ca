"""A U-Net vector field u_t(x | y) for images (batch, C, H, W).

Residual blocks read the time (and label) embedding as a per-channel scale and shift,
h <- GroupNorm(h) * (1 + scale) + shift; a down path halves the resolution at each level,
an up path doubles it back and concatenates the down path's activations (skip connections),
and optional self-attention runs at low resolutions. Images whose sides do not halve evenly
(28 -> 14 -> 7 -> ?) are zero-padded inside the network and cropped back on output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models.embeddings import FLOW_MAP_TIME_SCALE, LabelEmbedding, TimeEmbedding, embed_times


def _groups(channels: int) -> int:
    """The largest group count <= 8 that divides the channels (GroupNorm needs a divisor)."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so that its block starts as the identity (or the output as 0)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def image_shape(channels: int, image_size: int | tuple[int, int] | list[int]) -> tuple[int, int, int]:
    """(C, H, W) from a channel count and an int or (height, width) image size."""
    if isinstance(image_size, int):
        height = width = image_size
    else:
        height, width = (int(s) for s in image_size)
    if channels < 1 or height < 1 or width < 1:
        raise InvalidInputError(f"channels and image_size must be positive, got {channels}, {image_size}")
    return int(channels), int(height), int(width)


class ResidualBlock(nn.Module):
    """h = conv(SiLU(GN(x))); h = conv(SiLU(GN(h) * (1 + scale) + shift)); out = skip(x) + h."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.modulation = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.modulation(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions: x + proj(softmax(q k^T / sqrt(d)) v)."""

    def __init__(self, channels: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        qkv = self.qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (batch, heads, HW, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        return x + self.proj(out)


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _check_arguments(channel_mults, attention_resolutions, base_channels, num_res_blocks,
                     dropout) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The U-Net's level multipliers and attention heights as int tuples, after checking every argument."""
    channel_mults = tuple(int(m) for m in channel_mults)
    attention_resolutions = tuple(int(r) for r in attention_resolutions)
    if not channel_mults or min(channel_mults) < 1:
        raise InvalidInputError(f"channel_mults must be positive integers, got {channel_mults}")
    if base_channels < 1 or num_res_blocks < 1:
        raise InvalidInputError(f"base_channels and num_res_blocks must be >= 1, got {base_channels}, {num_res_blocks}")
    if not 0.0 <= dropout < 1.0:
        raise InvalidInputError(f"dropout must lie in [0, 1), got {dropout}")
    return channel_mults, attention_resolutions


class UNet(nn.Module):
    """U-Net field u_t(x | y): residual blocks conditioned on t (and y) by scale/shift, skips, attention.

    `channel_mults[i] * base_channels` channels at level i (resolution halved per level);
    attention at every feature-map height listed in `attention_resolutions`;
    `num_classes` adds a label embedding whose index num_classes is the null label (y=None);
    `flow_map=True` adds a second time r (the flow map u(x, r, t | y), called as model(x, t, r=r)).
    """

    def __init__(
        self,
        channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: tuple[int, ...] = (),
        num_classes: int | None = None,
        dropout: float = 0.0,
        flow_map: bool = False,
    ) -> None:
        super().__init__()
        self.data_shape = image_shape(channels, image_size)
        channel_mults, attention_resolutions = _check_arguments(channel_mults, attention_resolutions,
                                                                base_channels, num_res_blocks, dropout)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.flow_map = bool(flow_map)
        self._kwargs = {
            "channels": int(channels),
            "image_size": image_size if isinstance(image_size, int) else list(image_size),
            "base_channels": int(base_channels),
            "channel_mults": list(channel_mults),
            "num_res_blocks": int(num_res_blocks),
            "attention_resolutions": list(attention_resolutions),
            "num_classes": self.num_classes,
            "dropout": float(dropout),
            **({"flow_map": True} if self.flow_map else {}),
        }

        # pad H and W up to multiples of 2^(levels - 1) so that every downsampling halves exactly
        _, height, width = self.data_shape
        factor = 2 ** (len(channel_mults) - 1)
        padded_h, padded_w = (math.ceil(s / factor) * factor for s in (height, width))
        top, left = (padded_h - height) // 2, (padded_w - width) // 2
        self._padding = (left, padded_w - width - left, top, padded_h - height - top)

        emb_dim = 4 * base_channels
        scale = FLOW_MAP_TIME_SCALE if self.flow_map else 1000.0
        self.time_embedding = TimeEmbedding(emb_dim, frequencies=base_channels, scale=scale)
        self.interval_embedding = TimeEmbedding(emb_dim, base_channels, scale) if self.flow_map else None
        self.label_embedding = LabelEmbedding(self.num_classes, emb_dim) if self.num_classes else None
        self.input_conv = nn.Conv2d(channels, base_channels, 3, padding=1)

        widths, current, resolution = self._build_down(base_channels, channel_mults, num_res_blocks,
                                                       attention_resolutions, emb_dim, dropout, padded_h)
        self.middle = nn.ModuleList([
            ResidualBlock(current, current, emb_dim, dropout),
            SelfAttention(current) if attention_resolutions else nn.Identity(),
            ResidualBlock(current, current, emb_dim, dropout),
        ])
        current = self._build_up(base_channels, channel_mults, num_res_blocks, attention_resolutions, emb_dim,
                                 dropout, widths, current, resolution)

        self.output = nn.Sequential(
            nn.GroupNorm(_groups(current), current), nn.SiLU(),
            _zero(nn.Conv2d(current, channels, 3, padding=1)),
        )

    def _build_down(self, base_channels, channel_mults, num_res_blocks, attention_resolutions, emb_dim, dropout,
                    resolution) -> tuple[list[int], int, int]:
        """The encoder: residual blocks (with attention at the listed heights) and downsamplings."""
        widths, current = [base_channels], base_channels
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                layers = [ResidualBlock(current, base_channels * mult, emb_dim, dropout)]
                current = base_channels * mult
                if resolution in attention_resolutions:
                    layers.append(SelfAttention(current))
                self.down.append(nn.ModuleList(layers))
                widths.append(current)
            if level < len(channel_mults) - 1:
                self.down.append(nn.ModuleList([Downsample(current)]))
                widths.append(current)
                resolution //= 2
        return widths, current, resolution

    def _build_up(self, base_channels, channel_mults, num_res_blocks, attention_resolutions, emb_dim, dropout,
                  widths, current, resolution) -> int:
        """The decoder: residual blocks on the skips (with attention at the listed heights) and upsamplings."""
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for block in range(num_res_blocks + 1):
                layers = [ResidualBlock(current + widths.pop(), base_channels * mult, emb_dim, dropout)]
                current = base_channels * mult
                if resolution in attention_resolutions:
                    layers.append(SelfAttention(current))
                if level > 0 and block == num_res_blocks:
                    layers.append(Upsample(current))
                    resolution *= 2
                self.up.append(nn.ModuleList(layers))
        return current

    def config(self) -> dict:
        """JSON-ready keyword arguments that rebuild this network, with "name": "unet"."""
        return {"name": "unet", **self._kwargs}

    def condition(self, t: torch.Tensor, y: torch.Tensor | None, batch: int, r: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """The (batch, emb_dim) conditioning vector: time embedding + label embedding."""
        emb = embed_times(self.time_embedding, self.interval_embedding, t, r, batch, "UNet")
        if self.label_embedding is not None:
            emb = emb + self.label_embedding(y, batch)
        elif y is not None:
            raise IncompatibleError(
                "labels y were given to a UNet built without classes (num_classes=None); "
                "build it with num_classes=K or call it without y"
            )
        return emb

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                r: torch.Tensor | None = None) -> torch.Tensor:
        """u_t(x | y) for x (batch, C, H, W), t 0-d or (batch,), labels y (batch,) or None (null label);
        with flow_map=True, the average velocity u(x, r, t | y) from t to r (r = None: r = t)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise InvalidInputError(
                f"UNet expects images of shape (batch, {', '.join(map(str, self.data_shape))}), "
                f"got {tuple(x.shape)}"
            )
        emb = self.condition(t, y, x.shape[0], r).to(x.dtype)
        h = F.pad(x, self._padding) if any(self._padding) else x
        h = self.input_conv(h)
        skips = [h]
        for layers in self.down:
            for layer in layers:
                h = layer(h, emb) if isinstance(layer, (ResidualBlock, SelfAttention)) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb) if isinstance(layer, (ResidualBlock, SelfAttention)) else layer(h)
        for layers in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in layers:
                h = layer(h, emb) if isinstance(layer, (ResidualBlock, SelfAttention)) else layer(h)
        out = self.output(h)
        if any(self._padding):
            left, right, top, bottom = self._padding
            out = out[..., top : out.shape[-2] - bottom, left : out.shape[-1] - right]
        return out
