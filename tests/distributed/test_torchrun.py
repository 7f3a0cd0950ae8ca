"""`torchrun ... -m flowdiff train` as a user launches it: killed with SIGKILL and resumed, and two "nodes"
(stopped with SIGTERM and resumed).

Each launch starts torchrun and its workers afresh (about 10-20 s on 2 cores), so these are slow
checks: `pytest -m slow tests/distributed/test_torchrun.py`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flowdiff.runs.checkpoints import latest_checkpoint
from flowdiff.runs.layout import CHECKPOINTS_DIR, METRICS_FILE, MODEL_WEIGHTS
from flowdiff.runs.load import load

pytestmark = pytest.mark.slow

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
OPTIONS = ["--data", "moons", "--n-data", "512", "--batch", "32", "--hidden", "32,32", "--coupling", "ot",
           "--quiet", "--no-report"]


def _env() -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(*args: str, nodes: str | None = None, **popen) -> subprocess.Popen:
    where = ["--standalone"] if nodes is None else ["--nnodes", "2", "--node_rank", nodes, "--master_addr",
                                                     "127.0.0.1", "--master_port", str(popen.pop("port"))]
    per_node = "2" if nodes is None else "1"
    return subprocess.Popen([TORCHRUN, *where, "--nproc_per_node", per_node, "-m", "flowdiff", "--", "train", *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=240)
    assert process.returncode == 0, out
    return out


def _descendants(pid: int) -> list[int]:
    """The process ids below `pid` (from /proc)."""
    return [pid for child in _children(pid) for pid in (child, *_descendants(child))]


def _children(pid: int) -> list[int]:
    """The process ids directly below `pid` (from /proc)."""
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def _wait_for_checkpoint(run: Path, step: int, process: subprocess.Popen, timeout: float = 180) -> None:
    """Poll the run's checkpoint pointer until it reaches `step`; fail if the process ends or time runs out first."""
    pointer, deadline = run / CHECKPOINTS_DIR / "latest.json", time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(pointer.read_text())["step"] >= step:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{run} has no checkpoint of step {step} (launcher exit status {process.poll()})")


def _weights(run: Path) -> dict:
    return load_file(latest_checkpoint(run) / MODEL_WEIGHTS)


def test_a_run_killed_at_a_random_step_and_resumed_is_bitwise_the_uninterrupted_one(tmp_path):
    steps = ["--steps", "400", "--checkpoint-every", "20"]
    _finish(_launch(*OPTIONS, *steps, "--out", str(tmp_path / "straight")))
    run = tmp_path / "killed"
    process = _launch(*OPTIONS, *steps, "--out", str(run))
    _wait_for_checkpoint(run, random.Random(0).choice([40, 100, 160]), process)
    tree = _descendants(process.pid)  # torchrun starts each worker in a session of its own
    for pid in [process.pid, *tree]:  # all at once, as when the machine dies
        os.kill(pid, signal.SIGKILL)
    process.wait()
    killed_at = load(run).step  # the newest checkpoint loads
    assert 0 < killed_at < 400
    out = _finish(_launch("--out", str(run), "--resume"))
    assert f"trained {400 - killed_at} steps" in out
    want, got = _weights(tmp_path / "straight"), _weights(run)
    assert all(bool((got[k] == want[k]).all()) for k in want)


def test_two_nodes_on_localhost_train_stop_and_resume_to_the_single_process_weights(tmp_path, cli):
    """Two torchrun "nodes" (one worker each) train; SIGTERM to node 1's worker stops both ranks after the same
    step with a checkpoint; two nodes resume from it and end within 1e-5 of the single process's weights."""
    steps = 200
    options = [*OPTIONS, "--steps", str(steps), "--checkpoint-every", "10"]
    assert cli("train", *options, "--out", tmp_path / "one").returncode == 0
    run, port = tmp_path / "two", _free_port()
    nodes = [_launch(*options, "--out", str(run), nodes=str(rank), port=port) for rank in (0, 1)]
    _wait_for_checkpoint(run, 10, nodes[0])  # both workers are in `fit`, their signal handlers installed
    [worker] = _children(nodes[1].pid)  # rank 1's process, not its torchrun
    os.kill(worker, signal.SIGTERM)
    outputs = [node.communicate(timeout=240)[0] for node in nodes]
    stopped_at = load(run).step
    assert 10 <= stopped_at < steps, outputs
    for node, out in zip(nodes, outputs, strict=True):  # the stop flag is all-reduced: the same step on both
        assert node.returncode != 0 and f"stopped at step {stopped_at}; checkpoint saved" in out, out
    assert json.loads((run / CHECKPOINTS_DIR / "latest.json").read_text())["step"] == stopped_at

    port = _free_port()
    nodes = [_launch("--out", str(run), "--resume", nodes=str(rank), port=port) for rank in (0, 1)]
    outputs = [_finish(node) for node in nodes]
    assert f"trained {steps - stopped_at} steps" in outputs[0] and "trained" not in outputs[1]
    assert load(run).step == steps and not (run / ".lock").exists()
    logged = [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # one writer, each record once
    want, got = _weights(tmp_path / "one"), _weights(run)
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-5
