"""ODE solvers: measured convergence orders, Dopri5 accuracy, backwards integration, shapes, registry, nfe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.dynamics.solvers import SOLVERS, Dopri5, RungeKutta, Solver, get_solver, solver_names

T0, T1 = 0.0, 2.0


def exact(x0: torch.Tensor, t: float) -> torch.Tensor:
    """The solution x(t) = x0 exp(sin t) of x' = cos(t) x (non-autonomous, so c_i of the tableau matter)."""
    return x0 * math.exp(math.sin(t))


def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.cos(t) * x


X0 = torch.tensor([[1.0], [-0.5], [2.0]], dtype=torch.float64)


def global_error(solver: str, steps: int) -> float:
    ts = fd.grids.uniform(T0, T1, steps, dtype=torch.float64)
    final = fd.simulate(ODE(drift), X0, ts, solver=solver).final
    return float((final - exact(X0, T1)).abs().max())


def measured_order(solver: str, steps: list[int]) -> float:
    """The least-squares slope of log(error) against log(step size)."""
    h = np.log([(T1 - T0) / n for n in steps])
    err = np.log([global_error(solver, n) for n in steps])
    return float(np.polyfit(h, err, 1)[0])


@pytest.mark.parametrize(
    "name, theory, steps",
    [
        ("euler", 1, [32, 64, 128, 256, 512]),
        ("midpoint", 2, [32, 64, 128, 256, 512]),
        ("heun", 2, [32, 64, 128, 256, 512]),
        ("rk4", 4, [8, 16, 32, 64]),  # errors 1e-5 .. 1e-9: far above float64 round-off
    ],
)
def test_measured_convergence_order(name, theory, steps):
    order = measured_order(name, steps)
    assert abs(order - theory) < 0.15, f"{name}: measured order {order:.3f}, theory {theory}"
    assert get_solver(name).order == theory


def test_dopri5_reaches_1e6_against_exact_solution():
    ts = fd.grids.uniform(T0, T1, 4, dtype=torch.float64)
    expected = torch.stack([exact(X0, float(t)) for t in ts])
    # torchdiffeq's own default tolerances (rtol 1e-7, atol 1e-9): every saved state within 1e-6.
    traj = fd.simulate(ODE(drift), X0, ts, solver=Dopri5(rtol=1e-7, atol=1e-9), save="all")
    assert float((traj.states - expected).abs().max()) < 1e-6
    tight = fd.simulate(ODE(drift), X0, ts, solver=Dopri5(rtol=1e-10, atol=1e-10))
    assert float((tight.final - exact(X0, T1)).abs().max()) < 1e-9
    # The registered "dopri5" (rtol = atol = 1e-5) keeps the error within ten local tolerances
    # atol + rtol max|x| (measured: 4.6e-5), with fewer drift calls than the tight runs.
    loose = fd.simulate(ODE(drift), X0, ts, solver="dopri5", save="all")
    assert float((loose.states - expected).abs().max()) < 10 * (1e-5 + 1e-5 * float(expected.abs().max()))
    assert loose.nfe < traj.nfe < tight.nfe


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "rk4", "dopri5"])
def test_backwards_integration_returns_to_the_start(name):
    steps = {"euler": 2000, "midpoint": 200, "heun": 200, "rk4": 50, "dopri5": 1}[name]
    forward = fd.grids.uniform(T0, T1, steps, dtype=torch.float64)
    backward = forward.flip(0)
    x1 = exact(X0, T1)
    traj = fd.simulate(ODE(drift), x1, backward, solver=name, save="all")
    assert torch.equal(traj.times, backward)
    # Global errors of order h^p with the constants of the forward runs above stay below 2e-3.
    assert float((traj.final - X0).abs().max()) < 2e-3
    # Forward then backward with the same method: a round trip.
    there = fd.simulate(ODE(drift), X0, forward, solver=name).final
    back = fd.simulate(ODE(drift), there, backward, solver=name).final
    assert float((back - X0).abs().max()) < 2e-3


@pytest.mark.parametrize("name", ["euler", "midpoint", "heun", "rk4", "dopri5"])
def test_image_shaped_states(name):
    x0 = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = fd.grids.uniform(0.0, 1.0, 100, dtype=torch.float64)
    traj = fd.simulate(ODE(lambda x, t: -x), x0, ts, solver=name, save="all")
    assert traj.states.shape == (101, 3, 1, 4, 4)
    assert traj.final.shape == x0.shape
    assert torch.allclose(traj.final, x0 * math.exp(-1.0), atol=5e-3)


def test_per_sample_times_reach_the_drift_as_tensors():
    seen = []

    def recording(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    fd.simulate(ODE(recording), torch.zeros(2, 3), fd.grids.uniform(0, 1, 4), solver="heun")
    assert all(isinstance(t, torch.Tensor) and t.ndim == 0 for t in seen)
    assert [round(float(t), 6) for t in seen] == [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0]


def test_registry_names_and_orders():
    assert set(SOLVERS) >= {"euler", "midpoint", "heun", "rk4", "dopri5", "euler_maruyama", "stochastic_heun"}
    assert solver_names(ODE) == ["euler", "midpoint", "heun", "rk4", "dopri5"]
    assert solver_names(SDE) == ["euler_maruyama", "stochastic_heun"]
    orders = {name: get_solver(name).order for name in SOLVERS}
    assert orders == {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4, "dopri5": 5,
                      "euler_maruyama": 0.5, "stochastic_heun": 1.0}
    solver = get_solver("heun")
    assert isinstance(solver, RungeKutta) and solver.name == "heun"
    assert get_solver(solver) is solver
    assert isinstance(fd.get_solver("rk4"), Solver)


@pytest.mark.parametrize("name, per_step", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_nfe_counts_drift_calls(name, per_step):
    calls = [0]

    def counting(x, t):
        calls[0] += 1
        return -x

    traj = fd.simulate(ODE(counting), torch.ones(4, 2), fd.grids.uniform(0, 1, 10), solver=name)
    assert traj.nfe == calls[0] == 10 * per_step
    assert get_solver(name).stages == per_step


def test_nfe_of_dopri5_and_sde_solvers():
    calls = [0]

    def counting(x, t):
        calls[0] += 1
        return -x

    traj = fd.simulate(ODE(counting), torch.ones(4, 2), fd.grids.uniform(0, 1, 10), solver="dopri5")
    assert traj.nfe == calls[0] > 0
    for name, per_step in [("euler_maruyama", 1), ("stochastic_heun", 2)]:
        calls[0] = 0
        traj = fd.simulate(SDE(counting, 0.1), torch.ones(4, 2), fd.grids.uniform(0, 1, 10), solver=name,
                           generator=torch.Generator().manual_seed(0))
        assert traj.nfe == calls[0] == 10 * per_step


def test_save_final_keeps_one_state_and_the_last_time():
    ts = fd.grids.uniform(0, 1, 5)
    traj = fd.simulate(ODE(lambda x, t: -x), torch.ones(2, 3), ts)
    assert traj.states.shape == (1, 2, 3) and torch.equal(traj.times, ts[-1:])
    full = fd.simulate(ODE(lambda x, t: -x), torch.ones(2, 3), ts, save="all")
    assert torch.equal(full.final, traj.final) and torch.equal(full.states[0], torch.ones(2, 3))
