"""Evaluation: `flowdiff.learning.evaluation` (NFE counted by the sampler, progress through a callback)
and `flowdiff eval` as a user runs it (eval.json and eval.png for a tiny run; bad input is one line, exit 2)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.evaluation import Reference, VectorMetrics, evaluate, settings_for

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_evaluation_figure_has_a_panel_per_metric():
    from flowdiff.plots.evaluation import evaluation_figure

    rows = [{"solver": "euler", "nfe": k, "metrics": {"w2": 1.0 / k, "mmd": 0.1 / k, "energy": -0.01}}
            for k in (1, 2, 4)]
    figure = evaluation_figure({"rows": rows, "baseline": {"w2": 0.2, "mmd": 0.0, "energy": 0.0}}, "title")
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["w2", "mmd", "energy"]
    assert visible[0].get_yscale() == "log" and visible[2].get_yscale() == "linear"  # negative values: linear


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.runs.build import build_trainer

    out = tmp_path_factory.mktemp("eval") / "moons"
    config = TrainConfig(data="moons", steps=50, hidden="32,32", batch_size=128, device="cpu", n_data=2000)
    build_trainer(config, out).fit()
    return out


def test_eval_writes_json_and_plot(run_dir, tmp_path, cli):
    out = tmp_path / "report"
    done = cli("eval", run_dir, "--n", "200", "--nfe", "2,8", "--solvers", "euler,heun,dopri5", "--tol", "1e-3",
               "--nll-steps", "20", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar off a terminal
    assert "data vs data" in done.stdout and "NLL of 200 held-out points" in done.stdout
    assert f"wrote {out / 'eval.json'} and {out / 'eval.png'}" in done.stdout
    result = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.png"]  # no temporary files
    assert result["n"] == 200 and result["held_out"] is True and result["run"] == str(run_dir)
    rows = {(r["solver"], r["steps"]): r for r in result["rows"]}
    assert rows[("euler", 2)]["nfe"] == 2 and rows[("euler", 8)]["nfe"] == 8
    assert rows[("heun", 1)]["nfe"] == 2 and rows[("heun", 4)]["nfe"] == 8
    adaptive = [r for r in result["rows"] if r["solver"] == "dopri5"]
    assert len(adaptive) == 1 and adaptive[0]["tol"] == 1e-3 and adaptive[0]["nfe"] >= 6
    for row in result["rows"]:
        assert set(row["metrics"]) == {"w2", "sliced_w2", "mmd", "energy"}
        assert row["metrics"]["w2"] > 0
    assert set(result["baseline"]) == {"w2", "sliced_w2", "mmd", "energy"}
    nll = result["nll"]
    assert nll["n"] == 200 and math.isfinite(nll["mean"]) and nll["standard_error"] > 0


def test_missing_run_dir_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "flowdiff", "eval", str(tmp_path / "nowhere"), "--n", "100"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nfe", "0,4"], "NFE budgets must each be >= 1"),
        (["--solvers", "euler,rk45"], "unknown solver 'rk45'"),
        (["--nll-solver", "euler_maruyama"], "unknown ODE solver 'euler_maruyama'; choose one of: euler,"),
        (["--solvers", "euler_maruyama"], "cannot sample the ODE"),
        (["--metrics", "w2,fid"], "unknown metric 'fid'"),
        (["--nfe", "two"], "comma-separated list"),
        (["--grid", "cosine"], "unknown grid 'cosine'; choose one of: uniform, shifted, rho"),
        (["--n", "3"], "'--n'"),
        (["--sigma", "-1"], "'--sigma'"),
        (["--tol", "0"], "tolerances must be positive"),
        (["--sigma", "1", "--solvers", "euler_maruyama", "--nfe", "1"], "at least two steps"),
        (["--out", "eval.json"], "is a file"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(run_dir, tmp_path, monkeypatch, cli, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.json").write_text("mine")
    done = cli("eval", run_dir, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr and done.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"] and not (run_dir / "eval.json").exists()


def test_help_lists_the_registered_names(cli):
    from flowdiff.dynamics.solvers import SOLVERS
    from flowdiff.learning.metrics import METRICS

    done = cli("eval", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.replace("│", " ").split())
    for name in [*SOLVERS, *METRICS, "shifted", "rho"]:
        assert name in text
