"""Networks u_theta(x, t, y): every model is called as model(x, t, y=None).

Each model exposes `data_shape` (the shape of one point), `num_classes` (None when
unconditional; index num_classes is the null label) and `config()`, a dict with "name" and the
keyword arguments that rebuild it through `build_model`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from flowdiff.errors import InvalidInputError
from flowdiff.learning.models.autoencoder import Autoencoder, AutoencoderLoss
from flowdiff.learning.models.dit import DiT
from flowdiff.learning.models.embeddings import LabelEmbedding, TimeEmbedding
from flowdiff.learning.models.mlp import MLP
from flowdiff.learning.models.tokens import TokenDiT, TokenMLP
from flowdiff.learning.models.unet import UNet
from flowdiff.registry import build

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "unet": UNet,
    "dit": DiT,
    "token_mlp": TokenMLP,
    "token_dit": TokenDiT,
}
"""Model classes by name (the "name" entry of a model's config). The `Autoencoder` is not a vector field and is
not among them: its runs rebuild it themselves (`flowdiff.runs.autoencoder`)."""


def build_model(config: dict) -> nn.Module:
    """Build a model from its `config()` dict: {"name": ..., **keyword arguments}."""
    if not isinstance(config, dict) or "name" not in config:
        raise InvalidInputError(f"a model config must be a dict with a 'name', got {config!r}")
    return build(MODELS, config, "model")


def default_image_model(data_shape: tuple[int, int, int], num_classes: int | None = None) -> nn.Module:
    """A UNet sized to train on a CPU in minutes: one level per halving down to about 4-8 pixels."""
    channels, height, width = (int(s) for s in data_shape)
    side = min(height, width)
    levels = 2 if side <= 8 else 3 if side <= 32 else 4
    base = 32 if side <= 8 else 16 if side <= 32 else 32
    mults = (1, 2, 2, 2)[:levels]
    factor = 2 ** (levels - 1)
    lowest = -(-height // factor)
    return UNet(channels=channels, image_size=(height, width) if height != width else height,
                base_channels=base, channel_mults=mults, num_res_blocks=1,
                attention_resolutions=(lowest,) if lowest <= 8 else (), num_classes=num_classes)


__all__ = ["MLP", "UNet", "DiT", "TokenMLP", "TokenDiT", "Autoencoder", "AutoencoderLoss", "MODELS", "build_model",
           "default_image_model",
           "TimeEmbedding", "LabelEmbedding"]
