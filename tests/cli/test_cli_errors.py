"""The command line's failure paths: one line `error: ...` on stderr, exit status 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.cli.app import main


def run_main(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--batch-size", "3"], "No such option: --batch-size"),
        (["train", "--data", "moons", "--out", "x", "--steps", "abc"], "Invalid value for '--steps'"),
        (["sample"], "Missing argument"),
        (["no-such-command"], "No such command"),
        (["demo", "--sigma", "0"], "--sigma"),
        (["simulate", "flow", "--omega", "nan"], "--omega"),
        (["simulate", "langevin", "--modes", "100000"], "--modes"),
        (["train", "--data", "moons", "--out", "run", "--label-dropout", "1.5"], "--label-dropout"),
        (["train", "--data", "moons", "--out", "run", "--image-size", "0"], "--image-size"),
        (["train", "--data", "moons", "--out", "run", "--time-law", "late"], "unknown time law"),
    ],
)
def test_usage_and_value_errors_are_one_line(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_path_through_a_file_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("mine")
    code, err = run_main(capsys, "simulate", "ou", "--steps", "5", "--out", str(blocker / "figs"))
    assert code == 2 and err.startswith("error: ") and "Not a directory" in err
    assert blocker.read_text() == "mine"


def test_complex_data_is_refused(capsys, tmp_path):
    data = tmp_path / "complex.npy"
    np.save(data, np.ones((10, 2), dtype=np.complex64))
    code, err = run_main(capsys, "train", "--data", str(data), "--out", str(tmp_path / "run"))
    assert code == 2 and "complex" in err and not (tmp_path / "run").exists()


def test_score_and_noise_fields_start_after_zero():
    path = fd.GaussianPath("linear")
    net = fd.models.MLP(dim=2, hidden=(8,))
    from flowdiff.learning.predictions import START_AFTER_ZERO, as_velocity

    assert as_velocity(net, path, "score").t_min == START_AFTER_ZERO
    assert as_velocity(net, path, "x1").t_min == 0.0
    traj = fd.sample(as_velocity(net, path, "noise"), path, n=3, steps=4, return_trajectory=True)
    assert float(traj.times[0]) == pytest.approx(START_AFTER_ZERO)
    traj = fd.sample(net, path, n=3, steps=4, return_trajectory=True)
    assert float(traj.times[0]) == 0.0
    assert torch.isfinite(traj.final).all()


def test_demo_into_an_existing_run_names_its_own_options(tmp_path, cli):
    first = cli("demo", "--out", tmp_path / "d", "--steps", "5", "--batch", "16", "--hidden", "8", "--n", "16",
                "--n-eval", "16", "--quality-steps", "1", "--quiet")
    assert first.returncode == 0, first.stderr
    again = cli("demo", "--out", tmp_path / "d", "--steps", "5", "--quiet")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "--force" in again.stderr and "--resume" not in again.stderr
