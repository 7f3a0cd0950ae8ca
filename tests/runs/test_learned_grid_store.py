"""A learned grid stored with its run: `flowdiff sample --grid learned` learns it once, stores it in
RUN/grids.json, reuses it, and refuses what it cannot do in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import train_moons_run

from flowdiff.runs.learned_grids import GRIDS_FILE, find_grid, store_grid, stored_grids


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_moons_run(tmp_path_factory.mktemp("grid") / "moons", steps=10, n_data=500)


def test_sample_learns_stores_and_reuses_the_grid(run_dir, tmp_path, cli):
    args = ["sample", run_dir, "--n", "64", "--steps", "4", "--solver", "euler", "--grid", "learned", "--force"]
    first = cli(*args, "--out", tmp_path / "a.npz")
    assert first.returncode == 0, first.stderr
    assert "learned a 4-step grid for euler" in first.stdout and (run_dir / GRIDS_FILE).is_file()
    grid = find_grid(run_dir, "euler", 4)
    assert grid is not None and grid.loss <= grid.uniform_loss and len(grid.times) == 5
    again = cli(*args, "--out", tmp_path / "b.npz")
    assert again.returncode == 0 and "learned" not in again.stdout  # reloaded, not learned again
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["x"], np.load(tmp_path / "b.npz")["x"])
    store_grid(run_dir, grid)  # storing the same (solver, steps) replaces it: still one entry
    assert [(g.solver, g.steps) for g in stored_grids(run_dir)] == [("euler", 4)]
    assert find_grid(run_dir, "heun", 4) is None


@pytest.mark.parametrize("args, fragment", [
    (["--sigma", "1"], "fitted to the ODE"),
    (["--solver", "dopri5"], "fixed-step ODE solver"),
    (["--solver", "unipc"], "fixed-step ODE solver"),
])
def test_what_cannot_be_learned_is_one_line(run_dir, tmp_path, cli, args, fragment):
    result = cli("sample", run_dir, "--n", "8", "--steps", "3", "--grid", "learned", *args, "--out",
                 tmp_path / "s.npz")
    assert result.returncode == 2 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()


def test_a_corrupt_grids_file_is_one_line(tmp_path, cli, run_dir):
    broken = tmp_path / "copy"
    import shutil

    shutil.copytree(run_dir, broken)
    (broken / GRIDS_FILE).write_text(json.dumps({"grids": [{"solver": "euler"}]}))
    result = cli("sample", broken, "--n", "8", "--steps", "4", "--solver", "euler", "--grid", "learned")
    assert result.returncode == 2 and "malformed" in result.stderr


def test_eval_compares_solvers_and_grids_at_each_nfe(run_dir, tmp_path, cli):
    out = tmp_path / "eval"
    result = cli("eval", run_dir, "--n", "64", "--nfe", "4", "--solvers", "euler,unipc", "--grid", "rho,learned",
                 "--metrics", "w2", "--no-nll", "--quiet", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "eval.json").read_text())["rows"]
    # a learned grid is learned through fixed-step solvers only: no (multistep, learned) row
    assert sorted((r["solver"], r["grid"]) for r in rows) == [("euler", "learned"), ("euler", "rho"), ("unipc", "rho")]
    assert all(r["nfe"] == 4 and r["steps"] == 4 and r["metrics"]["w2"] > 0 for r in rows)
    assert "unipc (rho)" in result.stdout and "euler (learned)" in result.stdout
    assert find_grid(run_dir, "euler", 4) is not None
