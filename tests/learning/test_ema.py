"""EMA weights: the exact recursion theta_ema <- d theta_ema + (1 - d) theta, its warm-up, and the wrapper."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowdiff.errors import InvalidInputError
from flowdiff.learning.models import MLP
from flowdiff.learning.training.ema import EMA


def _set(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_constant_decay_follows_the_closed_form():
    """With the live weights held at theta, theta_ema after k updates is theta + d^k (theta_0 - theta)."""
    model = MLP(2, hidden=(8,), time_dim=4)
    _set(model, 1.0)
    ema = EMA(model, decay=0.9, warmup=False)
    _set(model, 3.0)
    for _ in range(7):
        ema.update(model)
    want = 3.0 + 0.9**7 * (1.0 - 3.0)
    for p in ema.module.parameters():
        torch.testing.assert_close(p, torch.full_like(p, want), rtol=1e-6, atol=1e-6)
    assert int(ema.num_updates) == 7


def test_warmup_decay_is_min_of_decay_and_one_plus_k_over_ten_plus_k():
    ema = EMA(MLP(2, hidden=(4,), time_dim=4), decay=0.999)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(ema.module)
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.num_updates.fill_(100_000)
    assert ema.current_decay() == 0.999
    assert EMA(MLP(2, hidden=(4,), time_dim=4), decay=0.5, warmup=False).current_decay() == 0.5


def test_the_wrapper_has_the_call_signature_and_attributes_of_the_network():
    model = MLP(3, hidden=(16,), num_classes=4, time_dim=8)
    ema = EMA(model, decay=0.99)
    x, t, y = torch.randn(5, 3), torch.rand(5), torch.tensor([0, 1, 2, 3, 4])
    torch.testing.assert_close(ema(x, t, y=y), model(x, t, y=y))
    assert ema.data_shape == (3,) and ema.num_classes == 4 and ema.config() == model.config()
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    ema.train()
    assert not ema.module.training  # the shadow network stays in eval mode


def test_state_dict_round_trip_and_independence_from_the_live_network():
    model = MLP(2, hidden=(8,), time_dim=4)
    ema = EMA(model, decay=0.9)
    _set(model, 2.0)
    ema.update(model)
    copy = EMA(MLP(2, hidden=(8,), time_dim=4), decay=0.9)
    copy.load_state_dict(ema.state_dict())
    for a, b in zip(copy.module.parameters(), ema.module.parameters()):
        assert torch.equal(a, b)
    assert int(copy.num_updates) == 1
    _set(model, 5.0)  # changing the live network does not touch the shadow weights
    assert not any(torch.equal(p, torch.full_like(p, 5.0)) for p in ema.module.parameters())


def test_bad_decay_and_mismatched_models_are_refused():
    with pytest.raises(InvalidInputError, match=r"decay must lie in \[0, 1\)"):
        EMA(MLP(2, hidden=(4,)), decay=1.0)
    ema = EMA(MLP(2, hidden=(4,)), decay=0.9)
    with pytest.raises(InvalidInputError, match="different set of parameters"):
        ema.update(MLP(2, hidden=(4, 4)))
