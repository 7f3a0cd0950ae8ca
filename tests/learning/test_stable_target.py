"""The stable-target flow matching loss: its target, its lower gradient noise, its refusals, the CLI."""

from __future__ import annotations

import json

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.losses import get_loss
from flowdiff.learning.models.mlp import MLP
from flowdiff.learning.stable_target import posterior_velocity

PATH = fd.GaussianPath("linear")


def eight_gaussians() -> fd.GaussianMixture:
    angles = torch.arange(8, dtype=torch.float64) * (torch.pi / 4)
    return fd.GaussianMixture(2.0 * torch.stack([angles.cos(), angles.sin()], dim=1), 0.2**2)


def test_a_kept_label_averages_over_its_class_and_a_dropped_one_over_the_batch():
    x1 = torch.tensor([[2.0, 0.0], [2.0, 2.0], [-2.0, 0.0], [-2.0, -4.0]])
    y = torch.tensor([0, 0, 1, 1])
    given = torch.tensor([0, 2, 1, 2])  # examples 1 and 3 had their label dropped (null label 2)
    sample = PATH.sample(x1, torch.zeros(4), noise=torch.zeros(4, 2))  # t = 0: x_t = 0, the prior alone
    target = posterior_velocity(PATH, sample, y, given)
    expected = torch.stack([x1[:2].mean(0), x1.mean(0), x1[2:].mean(0), x1.mean(0)])
    torch.testing.assert_close(target, expected)  # u_0(0) = E[z | class] (or E[z])


def test_other_couplings_are_refused_in_one_line():
    with pytest.raises(IncompatibleError, match="needs independent pairs.*'ot'"):
        get_loss("stable_target")(MLP(2), PATH, torch.randn(8, 2), coupling="ot")
    with pytest.raises(InvalidInputError, match="needs independent pairs, not the coupling 'ot'"):
        fd.TrainConfig(loss="stable_target", coupling="ot")


def gradient_noise(model, loss, mixture, batch: int = 128, draws: int = 30) -> float:
    """Total variance of the minibatch gradient over `draws` minibatches, at the model's weights."""
    g, grads = torch.Generator().manual_seed(1), []
    for _ in range(draws):
        model.zero_grad()
        loss(model, PATH, mixture.sample(batch, g).float(), generator=g).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    return float(torch.stack(grads).var(0).sum())


def test_near_a_fit_the_gradient_is_several_times_less_noisy_than_flow_matchings():
    """Where the residual is the target's own noise (after some training), the batch posterior cuts it (x0.21)."""
    mixture = eight_gaussians()
    torch.manual_seed(0)
    model = MLP(2, hidden=(64, 64))
    data = mixture.sample(800 * 128, torch.Generator().manual_seed(0)).float()
    fd.Trainer(model, PATH, data, steps=800, batch_size=128, lr=3e-3, seed=0, device="cpu", log_every=10**6).fit()
    model.requires_grad_(True)
    flow, stable = (gradient_noise(model, get_loss(name), mixture) for name in ("flow_matching", "stable_target"))
    assert stable < 0.5 * flow, (stable, flow)


def test_training_with_it_is_reproducible_and_moves_towards_the_marginal_velocity():
    from flowdiff.paths.marginals import MarginalField

    mixture = eight_gaussians()
    data = mixture.sample(4096, torch.Generator().manual_seed(2)).float()

    def fit(steps: int) -> MLP:
        torch.manual_seed(3)
        model = MLP(2, hidden=(32, 32))
        fd.Trainer(model, PATH, data, loss="stable_target", steps=steps, batch_size=64, lr=3e-3, seed=4,
                   device="cpu", log_every=10**6).fit()
        return model

    first, second = fit(150), fit(150)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    g = torch.Generator().manual_seed(5)
    t = torch.rand(2000, generator=g)
    x_t = PATH.sample(mixture.sample(2000, g).float(), t, generator=g).x_t
    exact = MarginalField(PATH, mixture)(x_t, t)
    with torch.no_grad():
        errors = [float((m(x_t, t) - exact).pow(2).sum(1).mean()) for m in (MLP(2, hidden=(32, 32)), first)]
    assert errors[1] < 0.5 * errors[0], errors


def test_cli_trains_with_it_and_refuses_it_with_ot_pairs(tmp_path, cli):
    tiny = ["--data", "moons", "--steps", "20", "--batch", "32", "--hidden", "16,16", "--quiet"]
    done = cli("train", *tiny, "--loss", "stable_target", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["loss"] == "stable_target"
    refused = cli("train", *tiny, "--loss", "stable_target", "--coupling", "ot", "--out", tmp_path / "ot")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "needs independent pairs" in refused.stderr and not (tmp_path / "ot").exists()


def test_meanflow_with_the_stable_velocity_rebuilds_refuses_ot_and_has_less_gradient_noise_near_a_fit():
    from flowdiff.learning.flowmaps import MeanFlow

    loss = MeanFlow(velocity="stable", variant="improved")
    assert get_loss(loss.config()).config() == loss.config() and MeanFlow().velocity == "conditional"
    with pytest.raises(InvalidInputError, match="unknown MeanFlow velocity 'posterior'"):
        MeanFlow(velocity="posterior")
    with pytest.raises(IncompatibleError, match="needs independent pairs.*'ot'"):
        MeanFlow(velocity="stable")(MLP(2, flow_map=True), PATH, torch.randn(8, 2), coupling="ot")
    mixture = eight_gaussians()
    torch.manual_seed(0)
    model = MLP(2, hidden=(64, 64), flow_map=True)  # its diagonal u(x, t, t) fitted by flow matching
    data = mixture.sample(800 * 128, torch.Generator().manual_seed(0)).float()
    fd.Trainer(model, PATH, data, steps=800, batch_size=128, lr=3e-3, seed=0, device="cpu", log_every=10**6).fit()
    model.requires_grad_(True)
    noise = {velocity: gradient_noise(model, MeanFlow(velocity=velocity), mixture, draws=20)
             for velocity in ("conditional", "stable")}
    assert noise["stable"] < 0.7 * noise["conditional"], noise  # measured 0.51: the JVP term keeps some noise


def test_the_shortcut_with_the_stable_velocity_is_stable_flow_matching_when_it_trains_no_jumps():
    """With consistency_share 0 the shortcut loss is flow matching on the same draws: with the stable velocity, the
    stable-target loss (equal to 1e-6), and not flow matching's own target."""
    from flowdiff.learning.flowmaps import Shortcut

    torch.manual_seed(0)
    model, x1 = MLP(2, hidden=(32, 32), flow_map=True), eight_gaussians().sample(256, torch.Generator()).float()

    def value(loss) -> float:
        with torch.no_grad():
            return float(loss(model, PATH, x1, generator=torch.Generator().manual_seed(7)))

    stable = value(Shortcut(consistency_share=0.0, velocity="stable"))
    assert stable == pytest.approx(value(get_loss("stable_target")), rel=1e-6)
    assert abs(stable - value(get_loss("flow_matching"))) > 0.1 * stable
    loss = Shortcut(velocity="stable")
    assert get_loss(loss.config()).config() == loss.config() and Shortcut().velocity == "conditional"
    with pytest.raises(InvalidInputError, match="unknown shortcut velocity 'posterior'"):
        Shortcut(velocity="posterior")
    with pytest.raises(IncompatibleError, match="needs independent pairs.*'ot'"):
        loss(model, PATH, x1, coupling="ot")


def test_the_config_gives_the_velocity_to_flow_map_methods_only_and_with_independent_pairs():
    data = eight_gaussians().sample(64, torch.Generator().manual_seed(0)).float()
    for method in ("meanflow", "imeanflow", "shortcut"):
        trainer = fd.Trainer(MLP(2, hidden=(8,), flow_map=True), PATH, data, method=method, velocity="stable",
                             steps=1, batch_size=16, device="cpu")
        assert trainer.loss.velocity == "stable", method
    assert fd.Trainer(MLP(2, hidden=(8,)), PATH, data, steps=1, device="cpu").loss.config()["name"] == "flow_matching"
    with pytest.raises(InvalidInputError, match="is for the flow-map methods.*loss='stable_target'"):
        fd.TrainConfig(velocity="stable")
    with pytest.raises(InvalidInputError, match="needs independent pairs, not the coupling 'ot'"):
        fd.TrainConfig(method="shortcut", velocity="stable", coupling="ot")
    with pytest.raises(InvalidInputError, match="unknown flow-map velocity 'fast'"):
        fd.TrainConfig(method="meanflow", velocity="fast")


def test_cli_trains_a_flow_map_with_the_stable_velocity_and_refuses_it_for_a_flow(tmp_path, cli):
    tiny = ["--data", "moons", "--steps", "10", "--batch", "32", "--hidden", "16,16", "--quiet", "--no-report"]
    done = cli("train", *tiny, "--method", "shortcut", "--velocity", "stable", "--out", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["velocity"] == "stable"
    refused = cli("train", *tiny, "--velocity", "stable", "--out", tmp_path / "flow")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "is for the flow-map methods" in refused.stderr and not (tmp_path / "flow").exists()
