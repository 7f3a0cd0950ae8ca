"""`flowdiff simulate`: writes its pictures, and turns bad input into one line on stderr with exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowdiff.cli.app import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "flowdiff", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd)


def call(argv: list[str]) -> int:
    """Run the command line in this process; return its exit status (whether main returns or exits)."""
    try:
        main(argv)
    except SystemExit as done:
        return 0 if done.code is None else done.code
    return 0


def test_subprocess_writes_a_png_under_runs_by_default(tmp_path):
    done = run_cli("simulate", "ou", "--theta", "0.25", "--sigma", "1.0", "--paths", "4", "--steps", "50",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "simulate"
    png = out / "ou.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing else in the current directory
    assert "runs/simulate/ou.png" in done.stdout
    assert "Traceback" not in done.stderr
    assert [p.name for p in out.iterdir()] == ["ou.png"]  # no temporary files left behind


def test_bad_input_is_one_line_and_exit_2(tmp_path, cli):
    done = cli("simulate", "ou", "--sigma", "-1", "--out", tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "sigma" in lines[0], done.stderr
    assert not (tmp_path / "ou.png").exists()


def test_a_terminal_shows_the_progress_of_every_simulation(tmp_path, cli, monkeypatch):
    import rich.console

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    done = cli("simulate", "ou", "--sigma", "0.5", "--sigma", "1", "--paths", "2", "--steps", "30", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ou sigma=1" in done.stderr and "60/60" in done.stderr  # the bar reached the end of both simulations
    assert f"wrote {tmp_path / 'ou.png'}" in done.stdout


@pytest.mark.parametrize(
    "process, extra",
    [
        ("brownian", ["--sigma", "0.5", "--paths", "5", "--steps", "40", "--t-end", "2"]),
        ("langevin", ["--paths", "200", "--steps", "100", "--t-end", "5", "--modes", "3"]),
        ("flow", ["--theta", "0.3", "--omega", "2", "--paths", "6", "--steps", "50", "--solver", "heun"]),
        ("ou", ["--sigma", "0.5", "--sigma", "2", "--paths", "3", "--steps", "30",
                "--solver", "stochastic_heun"]),
    ],
)
def test_each_process_draws(process, extra, tmp_path, capsys):
    assert call(["simulate", process, *extra, "--seed", "3", "--out", str(tmp_path)]) == 0
    png = tmp_path / f"{process}.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 1000
    assert f"wrote {png}" in capsys.readouterr().out


def test_animate_writes_a_gif(tmp_path, capsys):
    args = ["simulate", "flow", "--paths", "3", "--steps", "20", "--animate", "--out", str(tmp_path)]
    assert call(args) == 0
    gif = tmp_path / "flow.gif"
    assert gif.read_bytes()[:4] == b"GIF8"
    assert f"wrote {gif}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.gif", "flow.png"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["simulate", "wiener"], ["unknown process 'wiener'", "brownian, ou, langevin, flow"]),
        (["simulate", "ou", "--steps", "0"], ["'--steps'", "greater than or equal to 1"]),
        (["simulate", "ou", "--theta", "-0.5"], ["'--theta'", "greater than or equal to 0"]),
        (["simulate", "brownian", "--paths", "0"], ["--paths"]),
        (["simulate", "brownian", "--t-end", "-1"], ["--t-end"]),
        (["simulate", "brownian", "--t-end", "0"], ["t_end must be a positive number"]),
        (["simulate", "ou", "--solver", "rk7"], ["unknown solver 'rk7'", "euler_maruyama, stochastic_heun"]),
        (["simulate", "flow", "--solver", "euler_maruyama"], ["integrates an SDE", "rk4"]),
        (["simulate", "langevin", "--sigma", "1", "--sigma", "2"], ["takes one sigma", "'ou'"]),
    ],
)
def test_bad_input_one_line_exit_2(args, words, tmp_path, capsys):
    assert call([*args, "--out", str(tmp_path / "figures")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "figures").exists()


def test_out_must_be_a_directory(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert call(["simulate", "flow", "--steps", "5", "--out", str(target)]) == 2
    assert "directory" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_usage_errors_exit_2(capsys):
    assert call(["simulate", "ou", "--steps", "many"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_help_lists_the_processes_and_the_registered_solvers(capsys):
    from flowdiff.dynamics.solvers import SOLVERS

    assert call(["simulate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    for name in ["brownian", "langevin", *SOLVERS]:
        assert name in text


def test_one_simulation_per_sigma_reports_every_step_to_the_callback():
    import torch

    import flowdiff as fd
    from flowdiff.plots.lecture1_run import resolve, simulate_process

    settings = resolve("ou", sigmas=[0.5, 2.0], paths=3, steps=40, t_end=2.0, seed=5)
    seen = []
    simulation = simulate_process(settings, callback=seen.append)
    assert [info["done"] for info in seen] == list(range(1, 81)) and {info["total"] for info in seen} == {80}
    assert [info["task"] for info in seen[::40]] == ["ou sigma=0.5", "ou sigma=2"]
    assert torch.equal(seen[-1]["x"], simulation.runs[-1][1][-1])  # the callback sees the states simulated
    # each sigma is one call of flowdiff.simulate, consuming the generator in turn
    generator, ts = torch.Generator().manual_seed(5), fd.grids.uniform(0.0, 2.0, 40)
    starts = torch.linspace(-10.0, 10.0, 3)[:, None]
    for sigma, states in simulation.runs:
        expected = fd.simulate(fd.OrnsteinUhlenbeck(0.25, sigma), starts, ts, "euler_maruyama", save="all",
                               generator=generator)
        assert torch.equal(states, expected.states)


@pytest.mark.parametrize("settings, words", [
    ({"steps": 0}, ["steps must be an integer >= 1"]),
    ({"paths": 2.5}, ["paths must be an integer >= 1"]),
    ({"t_end": float("inf")}, ["t_end must be a positive number"]),
    ({"omega": float("nan")}, ["omega must be a finite rotation rate"]),
    ({"modes": 0}, ["modes must be between 1 and 64"]),
    ({"sigmas": [1.0, -1.0]}, ["sigma must be a finite number >= 0"]),
])
def test_library_errors_name_settings_not_flags(settings, words):
    from flowdiff.errors import InvalidInputError
    from flowdiff.plots.lecture1_run import resolve

    with pytest.raises(InvalidInputError) as error:
        resolve("ou", **settings)
    for word in words:
        assert word in str(error.value)
    assert "--" not in str(error.value)


def test_a_solver_registered_later_is_accepted(tmp_path, cli, monkeypatch):
    from flowdiff.dynamics import solvers

    monkeypatch.setitem(solvers.SOLVERS, "trapezoid", solvers.heun)
    done = cli("simulate", "flow", "--solver", "trapezoid", "--paths", "3", "--steps", "5", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "flow.png").read_bytes()[:8] == PNG_MAGIC
