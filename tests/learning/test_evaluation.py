"""`flowdiff.learning.evaluation`: the NFE of each setting is the sampler's own count of network calls,
progress goes through a callback, and settings that no solver can meet are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.evaluation import Reference, VectorMetrics, evaluate, settings_for


class Counting(nn.Module):
    """A network that counts its calls: the NFE measured from outside the sampler."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.data_shape, self.calls = network, network.data_shape, 0

    def forward(self, x, t, **cond):
        self.calls += 1
        return self.network(x, t, **cond)


def reference(n: int = 64) -> Reference:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2 * n, 2, generator=generator)
    return Reference(x=x[:n], spare=x[n:], y=None, spare_y=None, held_out=True, description="N(0, I)")


@pytest.fixture(scope="module")
def counted():
    torch.manual_seed(0)
    return Counting(fd.models.MLP(dim=2, hidden=(16,))).eval()


@pytest.mark.parametrize("solver, sigma, budget, steps, nfe", [
    ("heun", 0.0, 8, 4, 8), ("euler", 0.0, 3, 3, 3), ("rk4", 0.0, 9, 2, 8), ("midpoint", 0.0, 6, 3, 6),
    # the SDE sampler ends with one Euler step of the ODE: stages * (steps - 1) + 1
    ("euler_maruyama", 1.0, 4, 4, 4), ("stochastic_heun", 1.0, 5, 3, 5), ("stochastic_heun", 1.0, 6, 3, 5),
])
def test_evaluate_reports_the_network_calls_the_sampler_made(counted, solver, sigma, budget, steps, nfe):
    settings = settings_for([solver], [budget], [], sigma)
    assert [(s.solver, s.steps) for s in settings] == [(solver, steps)]
    ref = reference()
    counted.calls = 0
    result = evaluate(counted, fd.GaussianPath("linear"), ref, VectorMetrics(ref, ["sliced_w2"]), settings,
                      sigma=sigma, nll=False)
    (row,) = result["rows"]
    assert row["nfe"] == nfe == counted.calls  # what was spent (not the budget), exactly what the network saw
    assert row["steps"] == steps and math.isfinite(row["metrics"]["sliced_w2"])


def test_adaptive_nfe_is_the_solvers_own_count(counted):
    ref = reference()
    counted.calls = 0
    result = evaluate(counted, fd.GaussianPath("linear"), ref, VectorMetrics(ref, ["w2"]),
                      settings_for(["dopri5"], [1], [1e-3], 0.0), nll=False)
    (row,) = result["rows"]
    assert row["tol"] == 1e-3 and row["nfe"] == counted.calls >= 6


def test_evaluate_reports_progress_through_its_callback(counted):
    ref, seen = reference(16), []
    settings = settings_for(["euler", "heun"], [2, 4], [], 0.0)
    result = evaluate(counted, fd.GaussianPath("linear"), ref, VectorMetrics(ref, ["w2", "mmd"]), settings,
                      nll=True, nll_steps=2, callback=seen.append)
    total = len(settings) + 2  # the baseline, each setting, the likelihood
    assert [info["done"] for info in seen] == list(range(total + 1))
    assert {info["total"] for info in seen} == {total}
    assert [info["task"] for info in seen[1:-2]] == ["euler, 2 steps", "euler, 4 steps", "heun, 1 steps",
                                                     "heun, 2 steps"]
    assert seen[0]["task"] == "baseline" and "log-likelihood" in seen[-2]["task"]
    assert result["nll"]["n"] == 16 and math.isfinite(result["nll"]["mean"])
    json.dumps(result)  # JSON-ready


def test_settings_refuse_what_no_solver_can_do():
    with pytest.raises(InvalidInputError, match="no NFE budget in \\[1\\] is reachable by heun"):
        settings_for(["heun"], [1], [], 0.0)
    with pytest.raises(InvalidInputError, match="SDE sampler needs at least two steps"):
        settings_for(["euler_maruyama"], [1], [], 1.0)
    with pytest.raises(IncompatibleError, match="'heun' cannot sample an SDE") as error:
        settings_for(["heun"], [4], [], 0.5)
    assert "--" not in str(error.value)  # no CLI flag below the CLI
    with pytest.raises(InvalidInputError, match="NFE budgets must be integers >= 1"):
        settings_for(["euler"], [0, 4], [], 0.0)
    with pytest.raises(InvalidInputError, match="tolerances must be positive"):
        settings_for(["dopri5"], [4], [0.0], 0.0)
