"""A small convolutional variational autoencoder (beta-VAE) whose codes a flow can be trained on.

The encoder maps an image x (C, H, W) to the mean mu and log-variance log s^2 of a diagonal
Gaussian q(z | x) over codes z of shape (latent_channels, H / 2^k, W / 2^k); the decoder maps a
code back to an image. Training minimises the beta-VAE objective (`AutoencoderLoss`)

    E_q |x - D(z)|^2 / D  +  beta * KL(q(z | x) || N(0, I)) / D,     z = mu + s * eps,

with D the number of pixels. Normalisation is GroupNorm (no running statistics, so the network
is a pure function of its input: `torch.func.jvp` and `vmap` work, unlike with BatchNorm).
Image sides that do not halve evenly are zero-padded inside the encoder and cropped by the decoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flowdiff.errors import InvalidInputError
from flowdiff.learning.models.unet import image_shape


def _groups(channels: int) -> int:
    """The largest group count <= 8 that divides the channels."""
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _Block(nn.Module):
    """Residual block x + conv(SiLU(GN(conv(SiLU(GN(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def default_downsamples(image_size: int | tuple[int, int]) -> int:
    """Halvings of the default autoencoder: 1 for images up to 8 pixels across, else 2 (28 -> 7)."""
    side = image_size if isinstance(image_size, int) else min(int(s) for s in image_size)
    return 1 if side <= 8 else 2


class Autoencoder(nn.Module):
    """Convolutional beta-VAE: `encode` x -> (mu, log s^2), `decode` z -> x; forward(x, t) reconstructs x.

    `downsamples` stride-2 stages (each with `base_channels * 2^k` channels and a residual block)
    shrink H and W by 2^downsamples; the code has `latent_channels` channels.
    """

    def __init__(self, channels: int = 1, image_size: int | tuple[int, int] = 28, latent_channels: int = 4,
                 base_channels: int = 32, downsamples: int | None = None) -> None:
        super().__init__()
        self.data_shape = image_shape(channels, image_size)
        downsamples = default_downsamples(image_size) if downsamples is None else int(downsamples)
        if latent_channels < 1 or base_channels < 1 or downsamples < 0:
            raise InvalidInputError(f"latent_channels and base_channels must be >= 1 and downsamples >= 0, got "
                                    f"{latent_channels}, {base_channels}, {downsamples}")
        self.num_classes = None
        self._kwargs = {"channels": int(channels),
                        "image_size": image_size if isinstance(image_size, int) else [int(s) for s in image_size],
                        "latent_channels": int(latent_channels), "base_channels": int(base_channels),
                        "downsamples": downsamples}
        _, height, width = self.data_shape
        factor = 2**downsamples
        padded_h, padded_w = (math.ceil(s / factor) * factor for s in (height, width))
        top, left = (padded_h - height) // 2, (padded_w - width) // 2
        self._padding = (left, padded_w - width - left, top, padded_h - height - top)
        self.latent_shape = (int(latent_channels), padded_h // factor, padded_w // factor)
        widths = [base_channels * 2**k for k in range(downsamples + 1)]
        self.encoder = self._encoder(channels, widths, latent_channels)
        self.decoder = self._decoder(channels, widths, latent_channels)

    @staticmethod
    def _encoder(channels: int, widths: list[int], latent_channels: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1), _Block(widths[0])]
        for before, after in zip(widths, widths[1:]):
            layers += [nn.Conv2d(before, after, 3, stride=2, padding=1), _Block(after)]
        last = widths[-1]
        layers += [nn.GroupNorm(_groups(last), last), nn.SiLU(), nn.Conv2d(last, 2 * latent_channels, 3, padding=1)]
        return nn.Sequential(*layers)

    @staticmethod
    def _decoder(channels: int, widths: list[int], latent_channels: int) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(latent_channels, widths[-1], 3, padding=1), _Block(widths[-1])]
        for before, after in zip(widths[::-1], widths[-2::-1]):
            layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(before, after, 3, padding=1),
                       _Block(after)]
        layers += [nn.GroupNorm(_groups(widths[0]), widths[0]), nn.SiLU(),
                   nn.Conv2d(widths[0], channels, 3, padding=1)]
        return nn.Sequential(*layers)

    def config(self) -> dict:
        """JSON-ready keyword arguments that rebuild this network, with "name": "autoencoder"."""
        return {"name": "autoencoder", **self._kwargs}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean mu and log-variance log s^2 of q(z | x), each (batch, *latent_shape)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise InvalidInputError(f"the autoencoder expects images of shape (batch, "
                                    f"{', '.join(map(str, self.data_shape))}), got {tuple(x.shape)}")
        h = F.pad(x, self._padding) if any(self._padding) else x
        mean, log_var = self.encoder(h).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def encode_sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A code z = mu + s * eps ~ q(z | x), eps ~ N(0, I) drawn with `generator`."""
        mean, log_var = self.encode(x)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * log_var).exp() * eps

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The image D(z) of codes z (batch, *latent_shape)."""
        if z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            raise InvalidInputError(f"the decoder expects codes of shape (batch, "
                                    f"{', '.join(map(str, self.latent_shape))}), got {tuple(z.shape)}")
        out = self.decoder(z)
        if any(self._padding):
            left, right, top, bottom = self._padding
            out = out[..., top : out.shape[-2] - bottom, left : out.shape[-1] - right]
        return out

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, **cond) -> torch.Tensor:
        """The reconstruction D(mu(x)) (t and labels are ignored: the call convention f(x, t, **cond))."""
        return self.decode(self.encode(x)[0])


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, s^2) || N(0, 1)) = (mu^2 + s^2 - 1 - log s^2) / 2 per entry, summed over all but the batch."""
    kl = 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)
    return kl.flatten(1).sum(dim=1)


class AutoencoderLoss:
    """The beta-VAE loss mean |x - D(mu + s eps)|^2 + beta * KL(q(z | x) || N(0, I)) / D, D pixels per image.

    It has the loss-object call shape of the `Trainer` (`loss(model, path, x1, generator=...)`); the
    path, labels, coupling and label dropout have no role in it and are ignored. eps is drawn with
    `flowdiff.learning.losses.draw` from the trainer's loss generator.
    """

    name = "autoencoder"
    prediction = "reconstruction"

    def __init__(self, beta: float = 1e-3) -> None:
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not (math.isfinite(beta) and beta >= 0):
            raise InvalidInputError(f"beta (the KL weight) must be a finite number >= 0, got {beta!r}")
        self.beta = float(beta)

    def terms(self, model: Autoencoder, x1: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction error (mean over entries) and the KL per pixel (mean over the batch)."""
        from flowdiff.learning.losses import draw

        if not isinstance(model, Autoencoder) and not hasattr(model, "encode"):
            raise InvalidInputError(f"the autoencoder loss needs a model with encode/decode, got "
                                    f"{type(model).__name__}")
        mean, log_var = model.encode(x1)
        eps = draw("normal", mean.shape, generator, mean.device, mean.dtype)
        reconstruction = model.decode(mean + (0.5 * log_var).exp() * eps)
        pixels = x1[0].numel()
        return (reconstruction - x1).pow(2).mean(), gaussian_kl(mean, log_var).mean() / pixels

    def __call__(self, model, path, x1: torch.Tensor, generator: torch.Generator | None = None,
                 **ignored) -> torch.Tensor:
        """The loss on the minibatch x1 (path, y, coupling and label_dropout are ignored)."""
        error, kl = self.terms(model, x1, generator)
        return error + self.beta * kl

    def config(self) -> dict:
        """A JSON-ready description: {"name": "autoencoder", "beta": ...}."""
        return {"name": self.name, "beta": self.beta}

    def __repr__(self) -> str:
        return f"AutoencoderLoss(beta={self.beta!r})"
