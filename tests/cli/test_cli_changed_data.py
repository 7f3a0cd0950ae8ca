"""A data file replaced after training: `eval` and `train --resume` refuse it instead of using it silently."""

from __future__ import annotations

import numpy as np


def test_eval_and_resume_refuse_a_data_file_that_changed(tmp_path, cli):
    rng = np.random.default_rng(0)
    data = tmp_path / "points.npy"
    np.save(data, rng.normal(size=(300, 2)))
    run = tmp_path / "run"
    trained = cli("train", "--data", data, "--out", run, "--steps", "10", "--batch", "16", "--hidden", "8",
                  "--warmup", "1", "--checkpoint-every", "5", "--quiet", "--no-report")
    assert trained.returncode == 0, trained.stderr
    evaluated = cli("eval", run, "--n", "50", "--nfe", "2", "--solvers", "euler", "--no-nll", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    np.save(data, rng.normal(size=(300, 2)))  # the user replaces the file
    evaluated = cli("eval", run, "--n", "50", "--nfe", "2", "--solvers", "euler", "--no-nll", "--quiet",
                    "--out", tmp_path / "again")
    assert evaluated.returncode == 2 and evaluated.stderr.count("\n") == 1
    assert "changed since" in evaluated.stderr and not (tmp_path / "again" / "eval.json").exists()
    resumed = cli("train", "--out", run, "--resume", "--steps", "10", "--quiet")
    assert resumed.returncode == 2 and "the training data changed" in resumed.stderr
