"""Mixed precision: bf16 / fp16 autocast trains a 2-D task to the quality of float32; weights stay float32."""

from __future__ import annotations

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.learning.losses import flow_matching_loss
from flowdiff.learning.models import MLP


def _mixture(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
    return centers[torch.randint(3, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g)


def _trained(precision: str) -> fd.Trainer:
    torch.manual_seed(0)
    trainer = fd.Trainer(MLP(2, hidden=(32, 32), time_dim=8), fd.GaussianPath(), _mixture(2048, 0), steps=100,
                         batch_size=128, lr=3e-3, warmup=10, ema_decay=None, device="cpu", precision=precision,
                         log_every=50)
    trainer.fit()
    return trainer


def _evaluation_loss(model) -> float:
    """The flow matching loss on 8192 fixed held-out points, noise and times, in float32."""
    with torch.no_grad():
        return float(flow_matching_loss(model, fd.GaussianPath(), _mixture(8192, 1),
                                        generator=torch.Generator().manual_seed(2)))


def test_bf16_and_fp16_autocast_train_to_the_float32_loss():
    reference = _trained("fp32")
    untrained = _evaluation_loss(MLP(2, hidden=(32, 32), time_dim=8))
    want = _evaluation_loss(reference.model)
    assert want < 0.85 * untrained  # learned (the untrained field is 0): the comparison means something
    for precision in ("bf16", "fp16"):
        trainer = _trained(precision)
        assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # weights and AdamW in fp32
        assert any(not torch.equal(a, b) for a, b in zip(trainer.model.parameters(), reference.model.parameters()))
        # bound: 1% of the loss — bf16 rounds each product to 8 significant bits (0.4%); the loss is a mean
        assert abs(_evaluation_loss(trainer.model) - want) <= 0.01 * want, precision
    assert trainer.state.scaler is not None and "grad_scaler" in trainer.state.state_dict()


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(InvalidInputError, match="unknown precision 'fp8'; choose one of: fp32, bf16, fp16"):
        fd.TrainConfig(precision="fp8")
