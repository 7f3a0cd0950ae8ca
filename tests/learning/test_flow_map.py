"""The flow-map abstraction: MLP, UNet and DiT with a second time r (u(x, r, t), r = None meaning r = t), the JVP
that MeanFlow takes of them against finite differences, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize

import flowdiff as fd
from flowdiff.errors import IncompatibleError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut, is_flow_map, jump
from flowdiff.learning.flowmaps.meanflow import average_velocity_and_derivative
from flowdiff.learning.models import MLP, DiT, UNet, build_model

NETWORKS = {
    "mlp": (lambda: MLP(2, hidden=(16, 16), time_dim=8, num_classes=3, flow_map=True), (2,)),
    "unet": (lambda: UNet(1, 8, base_channels=8, channel_mults=(1, 2), attention_resolutions=(4,), num_classes=3,
                          flow_map=True), (1, 8, 8)),
    "dit": (lambda: DiT(1, 8, patch_size=4, hidden=16, depth=1, heads=2, num_classes=3, flow_map=True), (1, 8, 8)),
}


def _network(name, dtype=torch.float32):
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    model = randomize(build()).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *shape, generator=g, dtype=dtype)
    t = torch.rand(3, generator=g, dtype=dtype) * 0.5
    return model, x, t, t + 0.4 * torch.rand(3, generator=g, dtype=dtype), torch.tensor([0, 2, 3])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_r_none_is_r_equal_t_and_the_second_time_moves_the_output(name):
    model, x, t, r, y = _network(name)
    with torch.no_grad():
        flow = model(x, t, y=y)
        assert torch.equal(flow, model(x, t, y=y, r=t))  # the one convention f(x, t, **cond) is the case r = t
        assert (model(x, t, y=y, r=r) - flow).abs().mean() > 1e-3 * flow.abs().mean()
    rebuilt = build_model(model.config())
    assert model.config()["flow_map"] is True and is_flow_map(rebuilt)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x, t, y=y, r=r), model(x, t, y=y, r=r))
    one_time = build_model({k: v for k, v in model.config().items() if k != "flow_map"})
    assert "flow_map" not in one_time.config() and not is_flow_map(one_time)  # old run directories load unchanged
    with pytest.raises(IncompatibleError, match="flow_map=True"):
        one_time(x, t, y=y, r=r)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_jvp_of_each_network_agrees_with_central_differences(name):
    """d/dt u(z_t, r, t) along the tangent (v, 0, 1) by one torch.func.jvp against (u(+h) - u(-h)) / 2h in
    float64: the difference's error is O(h^2) (h = 1e-6 with time features up to frequency 30) plus rounding."""
    model, x, t, r, y = _network(name, torch.float64)
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u, derivative = average_velocity_and_derivative(model, x, t, r, v, {"y": y})
    h = 1e-6
    with torch.no_grad():
        assert torch.allclose(u, model(x, t, y=y, r=r), atol=1e-12)
        central = (model(x + h * v, t + h, y=y, r=r) - model(x - h * v, t - h, y=y, r=r)) / (2 * h)
    scale = float(derivative.detach().abs().max())
    assert scale > 1e-3 and float((derivative.detach() - central).abs().max()) < 1e-6 * max(scale, 1.0)


def test_a_layer_without_forward_mode_derivatives_is_refused_in_one_line():
    class Clip(torch.autograd.Function):  # an old-style Function: no forward-mode rule
        @staticmethod
        def forward(ctx, x):
            return x.clamp(-1, 1)

        @staticmethod
        def backward(ctx, grad):
            return grad

    class Network(MLP):
        def forward(self, x, t, y=None, *, r=None):
            return Clip.apply(super().forward(x, t, y, r=r))

    model, x1 = Network(2, hidden=(8,), flow_map=True), torch.randn(16, 2)
    with pytest.raises(IncompatibleError, match="forward mode") as caught:
        MeanFlow()(model, fd.GaussianPath(), x1, generator=torch.Generator().manual_seed(0))
    assert "\n" not in str(caught.value) and "shortcut" in str(caught.value)
    Shortcut()(model, fd.GaussianPath(), x1, generator=torch.Generator().manual_seed(0)).backward()  # no JVP there


@pytest.mark.parametrize("loss", [MeanFlow(), Shortcut()], ids=["meanflow", "shortcut"])
def test_a_flow_map_loss_refuses_a_network_with_one_time_input(loss):
    with pytest.raises(IncompatibleError, match=f"the {'MeanFlow' if loss.name == 'meanflow' else 'shortcut'} loss"
                       " needs a flow map u\\(x, r, t\\).*flow_map=True"):
        loss(MLP(2, hidden=(8,)), fd.GaussianPath(), torch.randn(8, 2))


def test_the_few_step_sampler_jumps_once_per_step_and_counts_its_evaluations():
    torch.manual_seed(0)
    model, path = randomize(MLP(2, hidden=(16,), num_classes=3, flow_map=True)), fd.GaussianPath()
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    seen = []
    trajectory = fd.sample(model, path, x0=x0, steps=2, return_trajectory=True, callback=lambda i: seen.append(i))
    assert trajectory.nfe == 2 and [i["nfe"] for i in seen] == [1, 2]
    with torch.no_grad():
        middle = jump(model, x0, 0.0, 0.5)
        assert torch.equal(trajectory.states[1], middle)
        assert torch.equal(trajectory.final, jump(model, middle, 0.5, 1.0))
        # guidance mixes the average velocities: u^w = u(null) + w (u(y) - u(null)), one jump
        y, null = torch.full((5,), 1), torch.full((5,), 3)
        want = x0 + model(x0, 0.0, y=null, r=1.0) + 2.0 * (model(x0, 0.0, y=y, r=1.0) - model(x0, 0.0, y=null, r=1.0))
    assert torch.allclose(fd.sample(model, path, x0=x0, steps=1, y=1, guidance=2.0), want, atol=1e-6)
    # a named solver integrates the map's own velocity u(x, t, t) instead
    euler = fd.sample(model, path, x0=x0, steps=1, solver="euler")
    with torch.no_grad():
        assert torch.equal(euler, x0 + model(x0, torch.tensor(0.0)))
    with pytest.raises(IncompatibleError, match="flow map"):
        fd.sample(MLP(2, hidden=(8,)), path, n=4, steps=1, solver="flow_map")
    with pytest.raises(IncompatibleError, match="sigma = 0"):
        fd.sample(model, path, n=4, steps=2, solver="flow_map", sigma=1.0)
