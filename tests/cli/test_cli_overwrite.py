"""One overwrite rule for every command that writes: existing outputs are kept unless --force."""

from __future__ import annotations


def test_simulate_keeps_its_figure_unless_forced(tmp_path, cli):
    args = ["simulate", "brownian", "--paths", "3", "--steps", "10", "--out", tmp_path / "figures"]
    assert cli(*args).returncode == 0
    figure = tmp_path / "figures" / "brownian.png"
    before = figure.read_bytes()
    again = cli(*args, "--seed", "1")
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert figure.read_bytes() == before
    forced = cli(*args, "--seed", "1", "--force")
    assert forced.returncode == 0 and figure.read_bytes() != before


def test_eval_keeps_its_results_unless_forced(tmp_path, cli):
    run = tmp_path / "run"
    trained = cli("train", "--data", "moons", "--out", run, "--steps", "10", "--batch", "16", "--hidden", "8",
                  "--warmup", "1", "--quiet", "--no-report")
    assert trained.returncode == 0, trained.stderr
    args = ["eval", run, "--n", "40", "--nfe", "2", "--solvers", "euler", "--no-nll", "--quiet"]
    assert cli(*args).returncode == 0
    before = (run / "eval.json").read_text()
    again = cli(*args, "--seed", "1")
    assert again.returncode == 2 and "eval.json" in again.stderr and "--force" in again.stderr
    assert (run / "eval.json").read_text() == before
    assert cli(*args, "--seed", "1", "--force").returncode == 0 and (run / "eval.json").read_text() != before
