"""MeanFlow through the Trainer: bitwise reproducible and exactly resumable steps, its time draws, and (slow) the
quality of a briefly trained 2-D model's one-step samples."""

from __future__ import annotations

import pytest
import torch
from helpers import energy_distance, train_briefly

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut
from flowdiff.learning.losses import get_loss
from flowdiff.learning.models import MLP
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.train import run_hooks

MIXTURE = fd.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), 0.1)


def _trainer(loss, out=None, resume=False, steps=12):
    x = MIXTURE.sample(512, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = MLP(2, hidden=(16, 16), time_dim=8, flow_map=True)
    return Trainer(model, fd.GaussianPath(), x, loss=loss, steps=steps, batch_size=32, lr=3e-3, warmup=2,
                   checkpoint_every=5, log_every=3, seed=4, device="cpu",
                   hooks=run_hooks(out, resume=resume) if out is not None else ())


@pytest.mark.parametrize("loss", ["meanflow", "shortcut"])
def test_flow_map_training_is_bitwise_reproducible_and_resumes_exactly(tmp_path, loss):
    straight = _trainer(loss, tmp_path / "a").fit()
    again = _trainer(loss).fit()
    first = _trainer(loss, tmp_path / "b")
    first.fit(until=7)
    resumed = _trainer(loss, tmp_path / "b", resume=True).fit()
    for other in (again, resumed):
        for key, value in straight.model.state_dict().items():
            assert torch.equal(value, other.model.state_dict()[key]), key
    assert straight.history[-1]["loss"] == resumed.history[-1]["loss"]


def test_the_time_pairs_are_ordered_with_the_stated_share_of_r_equal_t(monkeypatch):
    """Record the (t, r) the loss asks the network for: t <= r, and r = t with probability flow_share
    (binomial standard error over 4000 pairs: 0.007; the check allows 4 of them)."""
    from flowdiff.learning.flowmaps import meanflow

    seen = {}

    def record(model, z, t, r, velocity, cond):
        seen.update(t=t, r=r)
        return model(z, t, r=r), torch.zeros_like(z)

    monkeypatch.setattr(meanflow, "average_velocity_and_derivative", record)
    model = MLP(2, hidden=(8,), flow_map=True)
    x1, generator = torch.randn(4000, 2), torch.Generator().manual_seed(0)
    MeanFlow(flow_share=0.75)(model, fd.GaussianPath(), x1, generator=generator)
    t, r = seen["t"], seen["r"]
    share = float((r == t).double().mean())
    assert bool((t <= r).all()) and bool((t >= 0).all()) and bool((r <= 1).all())
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5


def test_loss_objects_rebuild_from_their_config_and_refuse_bad_hyperparameters():
    for loss in (MeanFlow(flow_share=0.5, power=0.0, time_law="early"), Shortcut(consistency_share=0.5, max_steps=8)):
        assert get_loss(loss.config()).config() == loss.config() and loss.prediction == "velocity"
    assert get_loss("meanflow", time_law="early").time_law == "early"  # what the Trainer asks for
    with pytest.raises(InvalidInputError, match="flow_share must be a probability"):
        MeanFlow(flow_share=1.5)
    with pytest.raises(InvalidInputError, match="power of 2"):
        Shortcut(max_steps=100)
    with pytest.raises(InvalidInputError, match="unknown time law"):
        MeanFlow(time_law="late")


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["meanflow", "shortcut"])
def test_one_step_samples_are_near_the_mixture_and_agree_with_the_maps_own_ode(loss):
    """After 1500 steps (64x64x64 MLP) the 1-step samples lie within 10 times the data-vs-data energy distance of
    the target (measured: shortcut ~3x, MeanFlow ~6x), and the 1-step map stays within 0.15 (mean distance) of a
    200-step Euler integration of the same network's velocity u(x, t, t); a flow model's one Euler step is at
    ~100x."""
    torch.manual_seed(0)
    data = MIXTURE.sample(8192, generator=torch.Generator().manual_seed(0))
    model = train_briefly(MLP(2, hidden=(64, 64, 64), flow_map=True), fd.GaussianPath(), data, steps=1500, loss=loss)
    reference, spare = (MIXTURE.sample(2000, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    baseline = energy_distance(reference, spare)
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    one = fd.sample(model, fd.GaussianPath(), x0=x0, steps=1)
    ode = fd.sample(model, fd.GaussianPath(), x0=x0, steps=200, solver="euler")
    assert energy_distance(one, reference) < 10 * baseline
    assert float((one - ode).norm(dim=1).mean()) < 0.15
