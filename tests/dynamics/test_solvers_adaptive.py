"""Native Dormand–Prince 5(4): agreement with torchdiffeq's dopri5 and with exact solutions, error against
tolerance, step counts, the per-sample norm, and its failure paths."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint

import flowdiff as fd
from flowdiff.dynamics.adaptive import Controller
from flowdiff.dynamics.solvers import Dopri5
from flowdiff.errors import InvalidInputError

ROTATION = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
RATE = 50.0


def linear(x, t):
    """x' = A x, a damped rotation: x(t) = exp(A t) x0."""
    return x @ ROTATION.T


def linear_exact(x0, ts):
    return torch.stack([x0 @ torch.linalg.matrix_exp(ROTATION * t).T for t in ts])


def stiff(x, t):
    """Prothero–Robinson x' = -50 (x - cos t) - sin t: x(t) = cos t + (x0 - 1) e^{-50 t} (stiff-ish)."""
    return -RATE * (x - torch.cos(t)) - torch.sin(t)


def stiff_exact(x0, ts):
    return torch.stack([torch.cos(t) + (x0 - 1) * torch.exp(-RATE * t) for t in ts])


def random_mlp():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
                              torch.nn.Linear(64, 2)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)  # a field that bends: tens of steps at tol 1e-6

    def field(x, t):
        return net(torch.cat([x, t.expand(x.shape[0], 1)], 1))

    return field


def mlp_exact(field):
    @torch.no_grad()
    def exact(x0, ts):  # torchdiffeq far tighter than the tolerances tested
        return odeint(lambda t, x: field(x, t), x0, ts, rtol=1e-12, atol=1e-12)

    return exact


X0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
MLP = random_mlp()
CASES = {
    "linear": (linear, linear_exact, X0, torch.linspace(0.0, 3.0, 4, dtype=torch.float64)),
    "stiff": (stiff, stiff_exact, torch.tensor([[2.0], [0.0], [-1.0]], dtype=torch.float64),
              torch.linspace(0.0, 2.0, 3, dtype=torch.float64)),
    "mlp": (MLP, mlp_exact(MLP), X0, torch.linspace(0.0, 1.0, 3, dtype=torch.float64)),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_agrees_with_torchdiffeq_and_the_exact_solution(case, tol):
    drift, exact, x0, ts = CASES[case]
    expected = exact(x0, ts)
    with torch.no_grad():
        native = fd.simulate(fd.ODE(drift), x0, ts, solver=Dopri5(rtol=tol, atol=tol), save="all")
        peer = odeint(lambda t, x: drift(x, t), x0, ts, rtol=tol, atol=tol, method="dopri5")
    scale = tol * (1 + float(expected.abs().max()))  # the tolerance scale atol + rtol |x|
    # Global errors within twice the tolerance scale (measured: at most 1.55 of it, on the MLP, whose flow
    # spreads points from |x| ~ 1 to ~ 25 and so amplifies local errors; torchdiffeq's: up to 4.2 of it;
    # the two apart by at most 2.6 of it).
    assert float((native.states - expected).abs().max()) < 2 * scale
    assert float((native.states - peer).abs().max()) < 4 * scale
    assert torch.equal(native.times, ts)


def test_error_shrinks_with_the_tolerance():
    drift, exact, x0, ts = CASES["linear"]
    errors, calls = [], []
    for tol in (1e-4, 1e-6, 1e-8):
        traj = fd.simulate(fd.ODE(drift), x0, ts, solver=Dopri5(rtol=tol, atol=tol), save="all")
        errors.append(float((traj.states - exact(x0, ts)).abs().max()))
        calls.append(traj.nfe)
    # a 5th-order method: 100x tighter tolerance, ~100x smaller error (measured 114x and 102x), for more work
    assert errors[1] < errors[0] / 20 and errors[2] < errors[1] / 20
    assert calls[0] < calls[1] < calls[2]


def test_step_counts_are_reported_and_add_up():
    drift, _, x0, ts = CASES["stiff"]
    seen = []
    traj = fd.simulate(fd.ODE(drift), x0, ts, solver=Dopri5(rtol=1e-6, atol=1e-6), callback=seen.append)
    accepted, rejected = traj.steps["accepted"], traj.steps["rejected"]
    assert rejected >= 1  # the stiff decay at the start forces the controller back at least once
    assert traj.nfe == 6 * (accepted + rejected) + 2  # FSAL: 6 calls a step, plus k1 and the starting-step probe
    assert [info["accepted"] for info in seen] == list(range(1, accepted + 1))
    assert seen[-1]["rejected"] == rejected and seen[-1]["nfe"] == traj.nfe
    assert float(seen[-1]["t"]) == float(ts[-1])


def test_per_sample_norm_holds_every_sample_to_the_tolerance():
    rates = torch.tensor([[0.1], [0.1], [0.1], [0.1], [0.1], [0.1], [0.1], [8.0]], dtype=torch.float64)
    x0 = torch.ones(8, 1, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    exact = torch.exp(-rates * ts[-1]) * x0  # x' = -r x per sample: one fast sample among slow ones

    def run(norm):
        return fd.simulate(fd.ODE(lambda x, t: -rates * x), x0, ts, solver=Dopri5(1e-5, 1e-5, norm=norm))

    batch, sample = run("batch"), run("sample")
    worst = [float((traj.final - exact).abs().max()) for traj in (batch, sample)]
    assert worst[1] < worst[0] and sample.nfe > batch.nfe


def test_backwards_and_controller():
    drift, exact, x0, ts = CASES["linear"]
    end = exact(x0, ts)[-1]
    back = fd.simulate(fd.ODE(drift), end, ts.flip(0), solver=Dopri5(1e-8, 1e-8)).final
    assert float((back - x0).abs().max()) < 1e-6
    control = Controller()
    assert control.factor(0.0, 1.0, True) == control.highest
    assert control.factor(float("nan"), 1.0, False) == control.lowest
    assert control.factor(4.0, 1.0, False) < 1.0 < control.factor(0.01, 1.0, True)


def test_failures_are_refused_with_a_reason():
    drift, _, x0, ts = CASES["stiff"]
    with pytest.raises(InvalidInputError, match="max_steps"):
        fd.simulate(fd.ODE(drift), x0, ts, solver=Dopri5(1e-8, 1e-8, max_steps=20))
    for bad in ({"rtol": 0.0}, {"norm": "mean"}, {"max_steps": 0}):
        with pytest.raises(InvalidInputError):
            Dopri5(**bad)
    with pytest.raises(InvalidInputError, match="shape"):
        fd.simulate(fd.ODE(lambda x, t: torch.zeros(1)), x0, ts, solver="dopri5")
    with pytest.raises(InvalidInputError, match="NaN"):
        fd.simulate(fd.ODE(lambda x, t: x * torch.nan), x0, ts, solver="dopri5")
    with pytest.raises(InvalidInputError, match="step size"):  # finite at first, NaN past t = 0.5
        fd.simulate(fd.ODE(lambda x, t: x * torch.where(t < 0.5, 1.0, torch.nan)), x0, ts, solver="dopri5")
