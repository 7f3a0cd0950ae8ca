"""Helpers shared by the tests: quick training through the library's own `Trainer`, and small statistics."""

from __future__ import annotations

import torch

import flowdiff as fd


def train_briefly(model, path, data: torch.Tensor, labels: torch.Tensor | None = None, steps: int = 3000,
                  batch_size: int = 256, lr: float = 3e-3, **settings):
    """Fit `model` with `fd.Trainer` (AdamW, 5% warm-up then cosine, clipping, EMA); return the EMA weights."""
    settings = {"warmup": max(1, steps // 20), "device": "cpu", "seed": 0, "log_every": max(1, steps // 10),
                **settings}
    trainer = fd.Trainer(model, path, data, labels=labels, steps=steps, batch_size=batch_size, lr=lr, **settings)
    return trainer.fit().sampling_model


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic): zero iff the distributions agree."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def check_time_and_label_conditioning(model, x: torch.Tensor) -> None:
    """The network's output moves with its time and with its label (relative change above 1e-3)."""
    n = x.shape[0]
    with torch.no_grad():
        base = model(x, torch.tensor(0.5), y=torch.full((n,), 3))
        other_label = model(x, torch.tensor(0.5), y=torch.full((n,), 7))
        other_time = model(x, torch.tensor(0.9), y=torch.full((n,), 3))
    assert (base - other_label).abs().mean() > 1e-3 * base.abs().mean()
    assert (base - other_time).abs().mean() > 1e-3 * base.abs().mean()


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace every weight (the zero-initialised output layers included) by random ones, so that the output
    depends on x, t and y; in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def recorded_meanflow_times(monkeypatch, loss, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The (t, r) a MeanFlow loss asks the network for on a batch of n points (the JVP replaced by a plain call)."""
    from flowdiff.learning.flowmaps import meanflow
    from flowdiff.learning.models import MLP

    seen = {}

    def record(model, z, t, r, velocity, cond):
        seen.update(t=t, r=r)
        return model(z, t, r=r), torch.zeros_like(z)

    monkeypatch.setattr(meanflow, "average_velocity_and_derivative", record)
    model = MLP(2, hidden=(8,), flow_map=True)
    loss(model, fd.GaussianPath(), torch.randn(n, 2), generator=torch.Generator().manual_seed(seed))
    return seen["t"], seen["r"]


def train_moons_run(out, steps: int, n_data: int, hidden: str = "32,32", batch_size: int = 128):
    """A small moons run written to `out` by the library's `build_trainer` (as `flowdiff train` does); returns out."""
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.runs.build import build_trainer

    config = TrainConfig(data="moons", steps=steps, hidden=hidden, batch_size=batch_size, device="cpu", n_data=n_data)
    build_trainer(config, out).fit()
    return out
