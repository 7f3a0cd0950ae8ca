"""Trainer: the loss falls, metrics.jsonl is written, the LR schedule, input checks, memory estimates."""

from __future__ import annotations

import json
import math

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.devices import pick_device
from flowdiff.learning.losses import flow_matching_loss
from flowdiff.learning.models import MLP
from flowdiff.learning.training.state import learning_rate
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.train import run_hooks


def _target(n=4096, seed=0):
    """A two-mode mixture in 2-D."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    return centres[torch.randint(2, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g)


def _per_sample_loss(model, path, x1, seed):
    """Per-sample squared error of the flow matching regression, with fixed t and noise (common draws)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(x1.shape[0], generator=g)
    noise = torch.randn(x1.shape, generator=g)
    s = path.sample(x1, t, noise=noise)
    with torch.no_grad():
        return (model(s.x_t, t) - s.velocity).pow(2).mean(dim=1)


def test_training_lowers_the_flow_matching_loss(tmp_path):
    path = fd.GaussianPath()
    torch.manual_seed(0)
    model = MLP(2, hidden=(64, 64), time_dim=16)
    held_out = _target(4096, seed=1)
    before = _per_sample_loss(model, path, held_out, seed=2)
    result = Trainer(model, path, _target(), steps=400, batch_size=256, lr=3e-3, warmup=20, seed=0,
                     device="cpu", log_every=50).fit()
    after = _per_sample_loss(result.sampling_model, path, held_out, seed=2)
    # Paired comparison on the same 4096 (t, noise, x1) draws: the mean drop must exceed 5 standard errors
    # of the mean of the per-sample differences (a one-sided z-test at far beyond 99.99%).
    diff = before - after
    standard_error = diff.std() / math.sqrt(diff.numel())
    assert diff.mean() > 5 * standard_error
    # the logged training loss falls as well: last window below the first
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_metrics_jsonl_has_one_line_per_logging_step(tmp_path):
    trainer = Trainer(MLP(2, hidden=(16,), time_dim=8), fd.GaussianPath(), _target(256), steps=30,
                      batch_size=32, lr=1e-3, warmup=5, log_every=10, checkpoint_every=100,
                      hooks=run_hooks(tmp_path / "run"), device="cpu")
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]
    for r in records:
        assert set(r) == {"step", "loss", "lr", "grad_norm", "steps_per_s", "elapsed_s"}
        assert math.isfinite(r["loss"]) and r["steps_per_s"] > 0 and r["grad_norm"] >= 0
        # the lr logged at step k is the one used by step k (0-based index k - 1)
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, 1e-3, 30, 5, "cosine"))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["steps"] == 30 and config["model"]["name"] == "mlp"
    assert config["path"]["schedule"]["name"] == "linear" and config["data"]["shape"] == [2]


def test_learning_rate_schedule():
    lr, steps, warmup = 1e-2, 1100, 100
    assert learning_rate(0, lr, steps, warmup) == pytest.approx(lr / warmup)
    assert learning_rate(49, lr, steps, warmup) == pytest.approx(lr / 2)
    assert learning_rate(99, lr, steps, warmup) == pytest.approx(lr)
    assert learning_rate(100, lr, steps, warmup) == pytest.approx(lr)  # cosine starts at the peak
    assert learning_rate(600, lr, steps, warmup) == pytest.approx(lr / 2)  # half way: (1 + cos(pi/2)) / 2
    assert learning_rate(1100, lr, steps, warmup) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(600, lr, steps, warmup, "constant") == lr
    assert learning_rate(0, lr, steps, 0) == lr  # no warm-up


def test_out_none_writes_nothing_and_the_ema_is_optional(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = Trainer(MLP(2, hidden=(8,), time_dim=4), fd.GaussianPath(), _target(64), steps=3, batch_size=8,
                     ema_decay=None, grad_clip=None, device="cpu").fit()
    assert result.ema is None and result.sampling_model is result.model and result.step == 3
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_refused():
    model = MLP(2, hidden=(8,), time_dim=4)
    path = fd.GaussianPath()
    x = _target(64)
    bad = x.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        Trainer(model, path, bad, device="cpu")
    with pytest.raises(InvalidInputError, match=r"labels must have shape \(64,\)"):
        Trainer(MLP(2, hidden=(8,), num_classes=2), path, x, labels=torch.zeros(10, dtype=torch.long),
                device="cpu")
    with pytest.raises(IncompatibleError, match="no label embedding"):
        Trainer(model, path, x, labels=torch.zeros(64, dtype=torch.long), device="cpu")
    with pytest.raises(InvalidInputError, match=r"labels must lie in 0\.\.1"):
        Trainer(MLP(2, hidden=(8,), num_classes=2), path, x, labels=torch.full((64,), 2), device="cpu")
    with pytest.raises(InvalidInputError, match="lr_schedule"):
        Trainer(model, path, x, lr_schedule="linear", device="cpu")
    with pytest.raises(InvalidInputError, match="batch_size"):
        Trainer(model, path, x, batch_size=0, device="cpu")
    with pytest.raises(InvalidInputError, match="unknown device"):
        Trainer(model, path, x, device="gpu0")
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            pick_device("cuda")


def test_time_law_reaches_the_loss_and_the_config(tmp_path):
    x = _target(512)
    seen = []

    def loss(model, path, x1, **kwargs):
        seen.append(kwargs.get("time_law"))
        return flow_matching_loss(model, path, x1, **kwargs)

    trainer = Trainer(MLP(dim=2, hidden=(16,)), fd.GaussianPath(), x, loss=loss, time_law="early", steps=2,
                      batch_size=32, hooks=run_hooks(tmp_path / "run"), device="cpu")
    trainer.fit()
    assert seen == ["early", "early"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["time_law"] == "early"
    with pytest.raises(InvalidInputError, match="unknown time law 'late'"):
        Trainer(MLP(dim=2, hidden=(16,)), fd.GaussianPath(), x, time_law="late")


def test_a_batch_that_cannot_fit_in_memory_is_refused_up_front_with_the_estimate():
    from flowdiff.learning.training.memory import activation_floats, sampling_bytes, step_bytes

    class Small(torch.nn.Module):
        data_shape = (2,)

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))

        def forward(self, x, t):
            return self.net(x)

    x = torch.randn(3, 2)
    assert activation_floats(Small(), x, {}) == 3 * (16 + 16 + 2)  # the three leaf layers' outputs
    # per example: activations and their gradients, and six data-shaped tensors, at 4 bytes a number
    assert step_bytes(Small(), x, 1000, {}) == 4 * 1000 * (2 * 34 + 6 * 2)
    # sampling keeps no gradients: the largest leaf output, twice (in and out), per network call
    assert activation_floats(Small(), x, {}, largest=True) == 3 * 16
    assert sampling_bytes(Small(), x, 1000, {}, steps=9) == 4 * (1000 * (9 * 2 + 2 * 16) + 10)
    assert sampling_bytes(Small(), x, 1000, {}, steps=9, saved_states=10, batched_calls=2) == \
        4 * (1000 * (18 * 2 + 4 * 16) + 10)
    assert activation_floats(lambda x, t: x, x, {}) == 0  # a plain function: only the sampler's states count
    with pytest.raises(InvalidInputError, match=r"batches of 10000000000 needs about .* GiB .* use a smaller batch"):
        Trainer(MLP(2, hidden=(16,), time_dim=4), fd.GaussianPath(), _target(64), batch_size=10**10, device="cpu")


def test_data_of_another_shape_than_the_network_is_refused_when_the_trainer_is_built():
    from flowdiff.learning.models import UNet

    expected = r"data points have shape \(1, 12, 12\) but the model expects \(1, 8, 8\)"
    with pytest.raises(InvalidInputError, match=expected):
        Trainer(UNet(1, 8, base_channels=8), fd.GaussianPath(), torch.randn(10, 1, 12, 12), device="cpu")
