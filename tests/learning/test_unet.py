"""The U-Net field u_t(x | y): shapes on 8x8 and 28x28, conditioning on t and y, the null label."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import check_time_and_label_conditioning, randomize

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models import MODELS, build_model, default_image_model
from flowdiff.learning.models.unet import UNet


@pytest.fixture(scope="module")
def small8() -> UNet:
    model = UNet(1, 8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), num_classes=10)
    return randomize(model)


@pytest.mark.parametrize(
    "size, mults, attention",
    [(8, (1, 2), (4,)), (28, (1, 2, 2), (7,)), (28, (1, 2, 2, 2), (4,)), ((12, 20), (1, 2), ())],
)
def test_output_has_the_input_shape(size, mults, attention):
    model = UNet(3, size, base_channels=8, channel_mults=mults, attention_resolutions=attention,
                 num_classes=4)
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, height, width)
    assert model.data_shape == (3, height, width)
    assert model(x, torch.tensor(0.3), y=torch.tensor([0, 3])).shape == x.shape
    assert model(x, torch.rand(2)).shape == x.shape


def test_starts_as_the_zero_field():
    """The last convolution starts at zero (the standard initialisation), so u = 0 before training."""
    model = UNet(1, 8, base_channels=8, num_classes=10)
    out = model(torch.randn(4, 1, 8, 8), torch.rand(4), y=torch.arange(4))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_time_and_label(small8):
    check_time_and_label_conditioning(small8, torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


def test_null_label_is_y_none(small8):
    x = torch.randn(3, 1, 8, 8)
    t = torch.rand(3)
    with torch.no_grad():
        unconditional = small8(x, t)
        null = small8(x, t, y=torch.full((3,), small8.num_classes))
        conditional = small8(x, t, y=torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(unconditional, null)
    assert not torch.allclose(unconditional, conditional)


def test_samples_do_not_interact(small8):
    """GroupNorm normalises each sample on its own: a sample's output ignores the rest of the batch."""
    x = torch.randn(5, 1, 8, 8)
    t = torch.rand(5)
    y = torch.arange(5)
    with torch.no_grad():
        batch = small8(x, t, y=y)
        single = small8(x[2:3], t[2:3], y=y[2:3])
    torch.testing.assert_close(batch[2:3], single, rtol=1e-4, atol=1e-5)


def test_config_rebuilds_the_same_network(small8):
    config = json.loads(json.dumps(small8.config()))
    assert config["name"] == "unet" and MODELS["unet"] is UNet
    rebuilt = build_model(config)
    rebuilt.load_state_dict(small8.state_dict())
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, t, y=y), small8(x, t, y=y))


def test_default_image_models():
    for shape, lowest in (((1, 8, 8), 4), ((1, 28, 28), 7)):
        model = default_image_model(shape, 10)
        assert model.data_shape == shape and model.num_classes == 10
        assert model.config()["attention_resolutions"] == [lowest]
    assert default_image_model((3, 32, 32), None).num_classes is None


def test_bad_input():
    conditional = UNet(1, 8, base_channels=8, num_classes=10)
    unconditional = UNet(1, 8, base_channels=8)
    with pytest.raises(IncompatibleError, match="num_classes=None"):
        unconditional(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([0, 1]))
    with pytest.raises(InvalidInputError, match=r"\(batch, 1, 8, 8\)"):
        conditional(torch.randn(2, 1, 9, 8), torch.rand(2))
    with pytest.raises(InvalidInputError, match="t must be"):
        conditional(torch.randn(2, 1, 8, 8), torch.rand(3))
    with pytest.raises(InvalidInputError, match="channel_mults"):
        UNet(1, 8, channel_mults=())
    with pytest.raises(InvalidInputError, match="dropout"):
        UNet(1, 8, dropout=1.5)
