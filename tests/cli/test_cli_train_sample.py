"""`flowdiff train` and `flowdiff sample` as a user runs them: real files, exit codes, one-line errors.

The main paths run as `python -m flowdiff` subprocesses; further bad-input cases call the same
entry point `flowdiff.cli.app.main` in-process (each subprocess pays seconds of torch import).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

TINY = ["--steps", "30", "--batch", "32", "--hidden", "16,16", "--warmup", "5", "--checkpoint-every", "20",
        "--quiet"]


def flowdiff(*args) -> subprocess.CompletedProcess:
    """Run `python -m flowdiff ARGS` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "flowdiff", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "moons"
    result = flowdiff("train", "--data", "moons", "--out", out, "--n-data", 256, *TINY)
    assert result.returncode == 0, result.stderr
    assert f"run directory: {out}" in result.stdout
    return out


def test_train_writes_a_complete_run_directory(moons_run):
    config = json.loads((moons_run / "config.json").read_text())
    assert config["training"]["data"] == "moons" and config["training"]["steps"] == 30
    assert config["model"]["hidden"] == [16, 16] and config["data"]["num_classes"] is None  # toy: unlabelled
    assert json.loads((moons_run / "checkpoints" / "latest.json").read_text())["step"] == 30
    for name in ("model.safetensors", "ema.safetensors", "state.pt"):
        assert (moons_run / "checkpoints" / "step_00000030" / name).stat().st_size > 0
    assert len((moons_run / "metrics.jsonl").read_text().splitlines()) >= 1


@pytest.mark.parametrize("args, message", [
    (["--n", "1000000000000"], "drawing 1000000000000 samples in 100 steps needs about"),
    (["--n", "10", "--steps", "100000000000000"], "drawing 10 samples in 100000000000000 steps needs about"),
])
def test_a_draw_that_cannot_fit_is_refused_up_front_with_the_estimate(moons_run, tmp_path, cli, args, message):
    result = cli("sample", moons_run, *args, "--out", tmp_path / "s.npz")
    assert_one_line_error(result, message, "draw fewer samples or take fewer steps")
    assert not (tmp_path / "s.npz").exists()


def test_report_and_eval_refuse_a_draw_that_cannot_fit_and_change_nothing(moons_run, cli):
    before = snapshot(moons_run)
    for command in (["report", moons_run, "--n", "1000000000"], ["eval", moons_run, "--n", "1000000000000"],
                    ["eval", moons_run, "--nfe", "100000000000"]):  # the other commands that draw samples
        assert_one_line_error(cli(*command), "samples in", "needs about", "draw fewer samples")
    assert snapshot(moons_run) == before


def test_sample_writes_npz_and_png_and_refuses_to_overwrite(moons_run, tmp_path, cli):
    out = tmp_path / "s.npz"
    result = flowdiff("sample", moons_run, "--n", 64, "--steps", 4, "--solver", "heun", "--out", out)
    assert result.returncode == 0, result.stderr
    x = np.load(out)["x"]
    assert x.shape == (64, 2) and np.isfinite(x).all()
    assert out.with_suffix(".png").stat().st_size > 0
    before = snapshot(tmp_path)
    again = cli("sample", moons_run, "--n", 8, "--steps", 2, "--sigma", 1.0, "--out", out)
    assert_one_line_error(again, "already exists", "--force")
    assert snapshot(tmp_path) == before


def test_train_refuses_to_overwrite_a_run_and_resume_keeps_its_settings(moons_run, cli):
    before = snapshot(moons_run)
    result = cli("train", "--data", "moons", "--out", moons_run, *TINY)
    assert_one_line_error(result, "already exists", "--resume")
    changed = cli("train", "--out", moons_run, "--resume", "--lr", "0.01")
    assert_one_line_error(changed, "--lr 0.01", "0.001")
    done = cli("train", "--out", moons_run, "--resume", "--quiet")
    assert done.returncode == 0 and "already trained" in done.stdout
    assert snapshot(moons_run) == before


def test_labelled_csv_trains_standardised_and_samples_a_class_in_data_units(tmp_path, cli):
    rng = np.random.default_rng(0)
    centres = {"low": [100.0, -50.0, 0.0], "high": [130.0, -20.0, 5.0]}
    names = rng.choice(list(centres), size=300)
    x = np.array([centres[k] for k in names]) + rng.normal(size=(300, 3))
    rows = ["a,b,kind,c"] + [f"{u},{v},{k},{w}" for (u, v, w), k in zip(x, names)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    result = cli("train", "--data", tmp_path / "data.csv", "--label-column", "kind", "--out", run, *TINY)
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["class_names"] == ["high", "low"] and config["model"]["num_classes"] == 2
    assert config["data"]["mean"][0] == pytest.approx(x[:, 0].mean(), rel=1e-5)
    result = cli("sample", run, "--n", 32, "--steps", 4, "--label", "high", "--guidance", 2.0)
    assert result.returncode == 0, result.stderr
    samples = np.load(run / "samples.npz")
    assert samples["x"].shape == (32, 3) and samples["y"].tolist() == [0] * 32
    assert not (run / "samples.png").exists()  # 3-D data: no scatter plot
    # samples come back in the units of the data (standardised coordinates would be near 0)
    assert 80 < samples["x"][:, 0].mean() < 150


@pytest.mark.parametrize("case", ["unknown", "nan", "dims", "labels"])
def test_bad_training_data_is_one_line_and_creates_nothing(tmp_path, case, cli):
    x = np.random.default_rng(0).normal(size=(20, 2))
    if case == "unknown":
        spec, fragments = "mooons", ["unknown data set 'mooons'", "moons"]
    elif case == "nan":
        x[3, 1] = np.nan
        np.save(tmp_path / "nan.npy", x)
        spec, fragments = tmp_path / "nan.npy", ["nan.npy", "NaN or inf", "row indices 3"]
    elif case == "dims":
        np.save(tmp_path / "flat.npy", x[:, 0])
        spec, fragments = tmp_path / "flat.npy", ["flat.npy", "2-D array (n, d)"]
    else:
        np.savez(tmp_path / "lab.npz", x=x, y=np.arange(7))
        spec, fragments = tmp_path / "lab.npz", ["lab.npz", "20 data rows but 7 labels"]
    # one case as a real process (exit status and no traceback at the process level), the others in-process
    run = flowdiff if case == "nan" else cli
    result = run("train", "--data", spec, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_guidance_needs_a_label_conditioned_model(moons_run, tmp_path, cli):
    result = cli("sample", moons_run, "--n", 8, "--label", 1, "--guidance", 3.0, "--out", tmp_path / "g.npz")
    assert_one_line_error(result, "--guidance needs a label-conditioned model", "without labels")
    assert not (tmp_path / "g.npz").exists()


def test_sampling_a_missing_or_incompatible_run_directory(tmp_path, cli):
    result = flowdiff("sample", tmp_path / "nowhere", "--n", 4)
    assert_one_line_error(result, "nowhere", "does not exist")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "mine.txt").write_text("keep me")
    result = cli("sample", tmp_path / "notarun", "--n", 4)
    assert_one_line_error(result, "not a flowdiff run directory", "config.json")
    assert [p.name for p in (tmp_path / "notarun").iterdir()] == ["mine.txt"]
    run = tmp_path / "broken"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": {"name": "mlp", "dim": 2}, "path": {}, "data": {}}))
    result = cli("sample", run, "--n", 4)
    assert_one_line_error(result, "has no checkpoint")


def test_sample_sde_with_a_chosen_solver_and_grid(moons_run, tmp_path, cli):
    out = tmp_path / "sde.npz"
    result = cli("sample", moons_run, "--n", 16, "--steps", 5, "--sigma", 0.5, "--solver", "stochastic_heun",
                 "--grid", "shifted", "--seed", 3, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"sampled 16 points with the SDE in 5 steps; wrote {out} and {out.with_suffix('.png')}" in result.stdout
    x = np.load(out)["x"]
    assert x.shape == (16, 2) and np.isfinite(x).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sde.npz", "sde.png"]  # no temporary files


@pytest.mark.parametrize("args, fragments", [
    (["--solver", "rk7"], ["'--solver'", "unknown solver 'rk7'", "euler_maruyama"]),
    (["--grid", "cosine"], ["unknown grid 'cosine'", "uniform, shifted, rho"]),
    (["--n", "0"], ["'--n'"]),
    (["--steps", "0"], ["'--steps'"]),
    (["--sigma", "-1"], ["'--sigma'"]),
    (["--out", "samples.txt"], [".npz", "samples.txt"]),
    (["--solver", "heun", "--sigma", "1"], ["'heun' integrates an ODE", "euler_maruyama"]),
    (["--label", "all"], ["--label needs a label-conditioned model"]),
    (["--guidance", "2"], ["--guidance needs a label-conditioned model"]),
])
def test_bad_sample_options_are_one_line_and_write_nothing(moons_run, tmp_path, monkeypatch, cli, args, fragments):
    monkeypatch.chdir(tmp_path)
    before = snapshot(moons_run)
    result = cli("sample", moons_run, "--out", tmp_path / "s.npz", *args)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == [] and snapshot(moons_run) == before


def test_sample_help_lists_the_registered_solvers_and_grids(cli):
    from flowdiff.dynamics.solvers import SOLVERS
    from flowdiff.learning.sampling import GRIDS

    result = cli("sample", "--help")
    text = " ".join(result.stdout.replace("│", " ").split())
    assert result.returncode == 0 and all(name in text for name in [*SOLVERS, *GRIDS])


def test_labels_and_files_of_an_image_run(tmp_path):
    from types import SimpleNamespace

    import torch

    from flowdiff.data.info import DataInfo
    from flowdiff.errors import InvalidInputError
    from flowdiff.plots.samples import labels_for, sample_files, write_samples

    info = DataInfo(kind="images", shape=(1, 8, 8), num_classes=3, class_names=["a", "b", "c"])
    run = SimpleNamespace(data_info=info, num_classes=3, directory=tmp_path)
    assert labels_for(run, None, 4) is None
    assert labels_for(run, "all", 2).tolist() == [0, 0, 1, 1, 2, 2]
    assert labels_for(run, "c", 2).tolist() == [2, 2] and labels_for(run, "1", 1).tolist() == [1]
    with pytest.raises(InvalidInputError, match="unknown label 'd'"):
        labels_for(run, "d", 1)
    out = tmp_path / "grid.npz"
    assert sample_files(run, out) == [out, tmp_path / "grid.png"]
    y = labels_for(run, "all", 2)
    written = write_samples(run, torch.rand(6, 1, 8, 8) * 2 - 1, y, out, per_row=2)
    assert written == [out, tmp_path / "grid.png"]
    saved = np.load(out)
    assert saved["x"].shape == (6, 1, 8, 8) and saved["y"].tolist() == y.tolist()
    assert saved["class_names"].tolist() == ["a", "b", "c"]
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.npz", "grid.png"]
    unlabelled = SimpleNamespace(data_info=DataInfo(shape=(3,)), num_classes=None, directory=tmp_path)
    assert sample_files(unlabelled, out) == [out]  # 3-D vectors: no picture
    with pytest.raises(InvalidInputError, match="no classes"):
        labels_for(unlabelled, "all", 1)
    with pytest.raises(InvalidInputError, match=".npz"):
        sample_files(unlabelled, tmp_path / "x.csv")
