"""MeanFlow through the Trainer: bitwise reproducible and exactly resumable steps, its time draws, and (slow) the
quality of a briefly trained 2-D model's one-step samples."""

from __future__ import annotations

import functools

import pytest
import torch
from helpers import energy_distance, recorded_meanflow_times, train_briefly

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut
from flowdiff.learning.flowmaps.meanflow import ImprovedMeanFlow
from flowdiff.learning.losses import METHODS, get_loss
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


@pytest.mark.parametrize("loss", ["meanflow", "imeanflow", "shortcut"])
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
    t, r = recorded_meanflow_times(monkeypatch, MeanFlow(flow_share=0.75), 4000)
    share = float((r == t).double().mean())
    assert bool((t <= r).all()) and bool((t >= 0).all()) and bool((r <= 1).all())
    assert abs(share - 0.75) < 4 * (0.75 * 0.25 / 4000) ** 0.5


class _Constant(torch.nn.Module):
    """A flow map whose average velocity is one learned vector c, whatever x, r and t (so d/dt u = 0)."""

    flow_map = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x, t, r=None):
        return self.c.expand_as(x)


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_the_default_loss_learns_the_conditional_mean_and_the_papers_weighting_does_not(power):
    """With r = t only, the loss of a constant u is minimised at the mean of the conditional velocity x1 - x0,
    E x1 = 0.7 (-3) + 0.3 (3) = -1.2 (the draws': -1.27), for plain L2 (the default, power 0); the paper's
    weighting 1 / (e + eps) is a robust loss whose minimiser sits near the larger mode of x1 - x0 instead
    (measured: -1.274, the draws' mean of x1 - x0, for power 0; -3.04 for power 1)."""
    x1 = torch.where(torch.rand(4000, 1, generator=torch.Generator().manual_seed(0)) < 0.7, -3.0, 3.0)
    loss, model = MeanFlow(flow_share=1.0, power=power), _Constant(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        loss(model, fd.GaussianPath(), x1, generator=torch.Generator().manual_seed(1)).backward()
        optimizer.step()
    mean = float(x1.mean())  # the draws' x1 - x0 averages -1.274, this -1.266: well inside the tolerance
    assert MeanFlow().power == 0.0
    if power == 0.0:
        assert abs(float(model.c.detach()) - mean) < 0.05, float(model.c.detach())
    else:
        assert float(model.c.detach()) < mean - 1.0, float(model.c.detach())


def test_loss_objects_rebuild_from_their_config_and_refuse_bad_hyperparameters():
    for loss in (MeanFlow(flow_share=0.5, power=0.0, time_law="early"), Shortcut(consistency_share=0.5, max_steps=8),
                 MeanFlow(variant="improved"), ImprovedMeanFlow(time_law="logit_normal")):
        assert get_loss(loss.config()).config() == loss.config() and loss.prediction == "velocity"
        assert type(get_loss(loss.config())) is type(loss)
    assert get_loss("meanflow", time_law="early").time_law == "early"  # what the Trainer asks for
    assert get_loss("imeanflow").variant == "improved" and METHODS["imeanflow"] == "imeanflow"
    with pytest.raises(InvalidInputError, match="unknown MeanFlow variant"):
        MeanFlow(variant="imf")
    with pytest.raises(InvalidInputError, match="improved variant"):
        ImprovedMeanFlow(variant="original")
    with pytest.raises(InvalidInputError, match="flow_share must be a probability"):
        MeanFlow(flow_share=1.5)
    with pytest.raises(InvalidInputError, match="power of 2"):
        Shortcut(max_steps=100)
    with pytest.raises(InvalidInputError, match="unknown time law"):
        MeanFlow(time_law="late")


@functools.cache
def _one_step_against_the_ode(loss: str, steps: int = 1500, **options) -> dict:
    """Train MLP 64x3 (`steps` steps, EMA; the loss `loss` with `options`) on MIXTURE; sample 2000 points in 1 jump,
    by 200 and by 1 Euler step(s) of the network's own velocity u(x, t, t) from the same noise; return the
    distances the slow tests read."""
    torch.manual_seed(0)
    data = MIXTURE.sample(8192, generator=torch.Generator().manual_seed(0))
    model = train_briefly(MLP(2, hidden=(64, 64, 64), flow_map=True), fd.GaussianPath(), data, steps=steps,
                          loss=get_loss(loss, **options))
    reference, spare = (MIXTURE.sample(2000, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    one = fd.sample(model, fd.GaussianPath(), x0=x0, steps=1)
    ode = fd.sample(model, fd.GaussianPath(), x0=x0, steps=200, solver="euler")
    euler = fd.sample(model, fd.GaussianPath(), x0=x0, steps=1, solver="euler")
    return {"baseline": energy_distance(reference, spare), "one": energy_distance(one, reference),
            "euler": energy_distance(euler, reference), "map_vs_ode": float((one - ode).norm(dim=1).mean()),
            "euler_vs_ode": float((euler - ode).norm(dim=1).mean())}


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["meanflow", "shortcut"])
def test_one_step_samples_are_near_the_mixture_and_the_map_lands_near_its_own_ode(loss):
    """After 1500 steps (MLP 64x3, EMA; ~60 s for MeanFlow, ~35 s for shortcut on one core) the 1-step samples lie
    within 10x the data-vs-data energy distance of the target, and the 1-step map lands within 0.3x the distance
    of one Euler step of the same network's u(x, t, t) from a 200-step Euler integration of it.

    Measured over seeds 0, 1, 2 (data, initialisation and training draws; this test runs seed 0); data-vs-data
    0.0031. 1-step energy distance: MeanFlow 0.020, 0.029, 0.028 (6.5x, 9.2x, 9.1x the baseline), shortcut
    0.025, 0.022, 0.018 (8.0x, 7.2x, 5.6x); the same networks' single Euler step: 1.42, 1.40, 1.44 and 1.38,
    1.34, 1.37 (~450x). Mean distance of the 1-step map to the 200-step ODE: MeanFlow 0.40, 0.45, 0.41, shortcut
    0.34, 0.34, 0.28, against 1.97, 1.95, 1.96 and 1.93, 1.90, 1.92 for one Euler step: ratios 0.21, 0.23, 0.21
    and 0.18, 0.18, 0.15. Margins over the worst seed: 1.1x for MeanFlow's energy distance (1.5x at seed 0, the
    one run here; 1.25x for shortcut) and 1.3x for the ratio.
    """
    got = _one_step_against_the_ode(loss)
    assert got["one"] < 10 * got["baseline"], got
    assert got["map_vs_ode"] < 0.3 * got["euler_vs_ode"], got


BOUND_SETTINGS = {"meanflow": ("meanflow", {}),
                  "imeanflow, stable velocity": ("imeanflow", {"steps": 10_000, "velocity": "stable"}),
                  "shortcut": ("shortcut", {"steps": 10_000, "consistency_share": 0.75})}
"""The loss and training each 0.15 test runs with (beyond the defaults of `_one_step_against_the_ode`)."""


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    pytest.param("meanflow", marks=pytest.mark.xfail(strict=True, reason=(
        "MeanFlow's 1-step map stays 0.40-0.45 from its own 200-step ODE after 1500 steps (mean distance, seeds "
        "0-2; improved MeanFlow 0.40-0.43), 0.25 after 6000 (seed 0); improved MeanFlow 0.19-0.22 after 6000 and "
        "0.137, 0.138, 0.179 after 12000 (~2 CPU min): not within 0.15 on every seed at a slow-test budget"))),
    "imeanflow, stable velocity", "shortcut"])
def test_one_step_map_agrees_with_its_own_ode_within_the_stated_bound(method):
    """The bound this acceptance test was written with: the 1-step map within 0.15 (mean distance) of a 200-step
    Euler integration of the same network's u(x, t, t) (MLP 64x3, EMA 0.999, lr 3e-3, batch 256).

    Shortcut, trained with `BOUND_SETTINGS` (10000 steps, consistency share 0.75; ~50 CPU s on one thread):
    measured 0.116, 0.129, 0.117 over seeds 0, 1, 2 (this test runs seed 0; margin 1.16x over the worst); with
    6000 steps 0.140, 0.132, 0.145 (margin 1.03x); with the defaults (1500 steps, share 0.25) 0.34, 0.34, 0.28.
    Improved MeanFlow with the stable velocity (v from the batch posterior, `MeanFlow(velocity="stable")`) and
    10000 steps (~110 CPU s): 0.120, 0.131, 0.140 over seeds 0, 1, 2 (margin 1.07x over the worst; 0.153, 0.150,
    0.169 after 6000), where the conditional velocity needed 12000 steps and still missed at seed 2 (0.179).
    The original MeanFlow keeps the 1500-step training of the test above and is a strict xfail: its long jumps
    to the data end are the weak part (docs/few_step.md, "Where a 1-step map leaves its own ODE")."""
    loss, settings = BOUND_SETTINGS[method]
    assert _one_step_against_the_ode(loss, **settings)["map_vs_ode"] < 0.15
