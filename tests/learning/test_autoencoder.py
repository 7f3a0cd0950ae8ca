"""The autoencoder: shapes and crops, the Gaussian KL against Monte Carlo, forward-mode derivatives, training."""

from __future__ import annotations

import math

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.learning.models import Autoencoder, AutoencoderLoss
from flowdiff.learning.models.autoencoder import gaussian_kl


@pytest.mark.parametrize("size, latent", [(8, (2, 4, 4)), (28, (2, 7, 7)), ((10, 12), (2, 3, 3))])
def test_shapes_codes_and_crops(size, latent):
    model = Autoencoder(image_size=size, latent_channels=2, base_channels=8).eval()
    x = torch.randn(3, *model.data_shape)
    mean, log_var = model.encode(x)
    assert model.latent_shape == latent and mean.shape == log_var.shape == (3, *latent)
    assert model.decode(mean).shape == x.shape and model(x, torch.tensor(0.5)).shape == x.shape
    config = model.config()
    assert config.pop("name") == "autoencoder"
    rebuilt = Autoencoder(**config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.eval()(x), model(x))


def test_wrong_shapes_and_bad_beta_are_refused_in_one_line():
    model = Autoencoder(image_size=8, latent_channels=2, base_channels=8)
    with pytest.raises(InvalidInputError, match=r"images of shape \(batch, 1, 8, 8\)"):
        model.encode(torch.randn(2, 1, 9, 9))
    with pytest.raises(InvalidInputError, match=r"codes of shape \(batch, 2, 4, 4\)"):
        model.decode(torch.randn(2, 4, 4, 4))
    with pytest.raises(InvalidInputError, match="beta"):
        AutoencoderLoss(beta=-1.0)


def test_kl_closed_form_matches_a_monte_carlo_estimate():
    """KL(q || N(0, I)) = E_q[log q(z) - log p(z)], estimated from 20000 draws; within 4 standard errors."""
    generator = torch.Generator().manual_seed(0)
    mean = torch.randn(1, 6, generator=generator, dtype=torch.float64)
    log_var = 0.8 * torch.randn(1, 6, generator=generator, dtype=torch.float64)
    std = (0.5 * log_var).exp()
    z = mean + std * torch.randn(20000, 6, generator=generator, dtype=torch.float64)
    log_q = (-0.5 * ((z - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)
    log_p = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    values = log_q - log_p
    standard_error = float(values.std() / math.sqrt(len(values)))
    assert abs(float(gaussian_kl(mean, log_var)) - float(values.mean())) < 4 * standard_error
    assert float(gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max()) == 0.0  # q = p


def test_groupnorm_network_has_forward_mode_derivatives():
    """torch.func.jvp of the decoder and encoder equals a central finite difference (float64)."""
    model = Autoencoder(image_size=8, latent_channels=2, base_channels=8).double().eval()
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(2, *model.latent_shape, generator=generator, dtype=torch.float64)
    v = torch.randn(z.shape, generator=generator, dtype=torch.float64)
    _, tangent = torch.func.jvp(model.decode, (z,), (v,))
    h = 1e-6
    difference = (model.decode(z + h * v) - model.decode(z - h * v)) / (2 * h)
    torch.testing.assert_close(tangent, difference, rtol=1e-5, atol=1e-7)
    x = torch.randn(2, *model.data_shape, generator=generator, dtype=torch.float64)
    _, (mean_tangent, _) = torch.func.jvp(model.encode, (x,), (x,))
    assert torch.isfinite(mean_tangent).all()


def test_the_loss_is_the_reconstruction_error_plus_beta_kl_and_ignores_the_path():
    model = Autoencoder(image_size=8, latent_channels=2, base_channels=8)
    x = torch.randn(4, 1, 8, 8)
    loss = AutoencoderLoss(beta=0.5)
    error, kl = loss.terms(model, x, torch.Generator().manual_seed(3))
    total = loss(model, None, x, y=None, coupling="independent", label_dropout=0.0,
                 generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(total, error + 0.5 * kl)
    assert float(kl.detach()) > 0 and loss.config() == {"name": "autoencoder", "beta": 0.5}


def test_reconstruction_error_falls_on_digits():
    """After 100 AdamW steps the error is below half the data's per-pixel variance (the mean image's error)."""
    images = fd.load_images("digits").images
    torch.manual_seed(0)
    model = Autoencoder(image_size=8, latent_channels=2, base_channels=8)
    trainer = fd.Trainer(model, None, images, loss=AutoencoderLoss(1e-3), steps=100, batch_size=32, lr=3e-3,
                         warmup=10, device="cpu", ema_decay=None, log_every=25)
    result = trainer.fit()
    with torch.no_grad():
        error = float((model(images) - images).pow(2).mean())
    variance = float(images.var(dim=0).mean())
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert error < 0.5 * variance
    assert trainer.describe()["resolved"]["loss"] == {"name": "autoencoder", "beta": 1e-3}
