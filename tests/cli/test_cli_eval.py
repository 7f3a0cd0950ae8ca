"""`flowdiff eval` as a user runs it: eval.json and eval.png for a tiny run, the figure of a result, and bad
input as one line with exit 2 (the computation is tested in tests/learning/test_evaluation.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from helpers import train_moons_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
    return train_moons_run(tmp_path_factory.mktemp("eval") / "moons", steps=50, n_data=2000)


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


def test_threads_as_given_else_one_for_vectors(run_dir, tmp_path, cli):
    import torch

    before = torch.get_num_threads()
    try:
        for given, expected in ((["--threads", "2"], 2), ([], 1)):
            done = cli("eval", run_dir, "--n", "8", "--nfe", "1", "--solvers", "euler", "--no-nll", "--metrics", "w2",
                       "--out", tmp_path / f"threads{expected}", *given)
            assert done.returncode == 0, done.stderr
            assert torch.get_num_threads() == expected
    finally:
        torch.set_num_threads(before)


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
        (["--threads", "0"], "'--threads'"),
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
