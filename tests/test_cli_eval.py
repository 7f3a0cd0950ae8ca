"""`flowdiff eval`: eval.json and eval.png for a tiny trained run; bad input is one line and exit 2."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny networks: one thread per process on shared cores


def flowdiff(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowdiff", *args],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "moons"
    done = flowdiff(
        "train", "--data", "moons", "--steps", "50", "--hidden", "32,32", "--batch", "128",
        "--out", str(out), "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def test_eval_writes_json_and_plot(run_dir, tmp_path):
    out = tmp_path / "report"
    done = flowdiff(
        "eval", str(run_dir), "--n", "200", "--nfe", "2,8", "--solvers", "euler,heun,dopri5", "--tol", "1e-3",
        "--nll-steps", "20", "--out", str(out), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "data vs data" in done.stdout and "NLL of 200 held-out points" in done.stdout
    result = json.loads((out / "eval.json").read_text())
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["n"] == 200 and result["held_out"] is True
    rows = {(r["solver"], r["steps"]): r for r in result["rows"]}
    # NFE = steps x stages for fixed-step solvers, counted by calls of the network
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
    done = flowdiff("eval", str(tmp_path / "nowhere"), "--n", "100")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "does not exist" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--nfe", "0,4"], "--nfe values must be >= 1"),
        (["--solvers", "euler,rk45"], "unknown solver 'rk45'"),
        (["--nll-solver", "euler_maruyama"], "is an SDE solver"),
        (["--solvers", "euler_maruyama"], "cannot sample the ODE"),
        (["--metrics", "w2,fid"], "unknown metrics"),
        (["--nfe", "two"], "comma-separated list"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(run_dir, capsys, args, message):
    from flowdiff.cli.app import main

    with pytest.raises(SystemExit) as stop:
        main(["eval", str(run_dir), *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.strip().count("\n") == 0
