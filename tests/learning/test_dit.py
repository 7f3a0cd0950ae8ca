"""The diffusion transformer u_t(x | y): patchify round trip, shapes, conditioning, the null label."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import check_time_and_label_conditioning, randomize

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models import MODELS, build_model
from flowdiff.learning.models.dit import DiT


@pytest.fixture(scope="module")
def small8() -> DiT:
    return randomize(DiT(1, 8, patch_size=2, hidden=32, depth=2, heads=4, num_classes=10))


@pytest.mark.parametrize("size, patch", [(8, 2), (28, 4), (28, 3), ((6, 10), 4)])
def test_patchify_round_trip_and_shapes(size, patch):
    model = DiT(2, size, patch_size=patch, hidden=32, depth=1, heads=2, num_classes=3)
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(3, 2, height, width)
    tokens = model.patchify(x)
    assert tokens.shape == (3, model.rows * model.cols, 2 * patch * patch)
    torch.testing.assert_close(model.unpatchify(tokens), x)
    assert model(x, torch.tensor(0.2), y=torch.tensor([0, 1, 2])).shape == x.shape


def test_adaln_zero_starts_as_the_zero_field():
    model = DiT(1, 8, patch_size=2, hidden=32, depth=2, heads=4, num_classes=10)
    out = model(torch.randn(2, 1, 8, 8), torch.rand(2), y=torch.tensor([1, 2]))
    assert torch.equal(out, torch.zeros_like(out))


def test_output_depends_on_time_and_label(small8):
    check_time_and_label_conditioning(small8, torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)))


def test_null_label_is_y_none(small8):
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    with torch.no_grad():
        torch.testing.assert_close(small8(x, t), small8(x, t, y=torch.full((3,), 10)))
        assert not torch.allclose(small8(x, t), small8(x, t, y=torch.zeros(3, dtype=torch.long)))


def test_samples_do_not_interact(small8):
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.arange(4)
    with torch.no_grad():
        torch.testing.assert_close(small8(x, t, y=y)[1:2], small8(x[1:2], t[1:2], y=y[1:2]),
                                   rtol=1e-4, atol=1e-5)


def test_config_rebuilds_the_same_network(small8):
    config = json.loads(json.dumps(small8.config()))
    assert config["name"] == "dit" and MODELS["dit"] is DiT
    rebuilt = build_model(config)
    rebuilt.load_state_dict(small8.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x, t), small8(x, t))


def test_bad_input():
    with pytest.raises(IncompatibleError, match="num_classes=None"):
        DiT(1, 8, hidden=32, heads=4)(torch.randn(1, 1, 8, 8), torch.rand(1), y=torch.tensor([0]))
    with pytest.raises(InvalidInputError, match="multiple of heads"):
        DiT(1, 8, hidden=30, heads=4)
    with pytest.raises(InvalidInputError, match=r"\(batch, 1, 8, 8\)"):
        DiT(1, 8, hidden=32, heads=4)(torch.randn(1, 3, 8, 8), torch.rand(1))
