"""`torchrun ... -m flowdiff train` as a user launches it: killed with SIGKILL and resumed, and two "nodes".

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
from flowdiff.runs.layout import CHECKPOINTS_DIR, MODEL_WEIGHTS
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
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _weights(run: Path) -> dict:
    return load_file(latest_checkpoint(run) / MODEL_WEIGHTS)


def test_a_run_killed_at_a_random_step_and_resumed_is_bitwise_the_uninterrupted_one(tmp_path):
    steps = ["--steps", "400", "--checkpoint-every", "20"]
    _finish(_launch(*OPTIONS, *steps, "--out", str(tmp_path / "straight")))
    run = tmp_path / "killed"
    process = _launch(*OPTIONS, *steps, "--out", str(run))
    pointer, wanted = run / CHECKPOINTS_DIR / "latest.json", random.Random(0).choice([40, 100, 160])
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        try:
            if json.loads(pointer.read_text())["step"] >= wanted:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
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


def test_two_nodes_on_localhost_train_the_single_process_weights(tmp_path, cli):
    options = [*OPTIONS, "--steps", "30", "--checkpoint-every", "10"]
    assert cli("train", *options, "--out", tmp_path / "one").returncode == 0
    port = _free_port()
    nodes = [_launch(*options, "--out", str(tmp_path / "two"), nodes=str(rank), port=port) for rank in (0, 1)]
    outputs = [_finish(node) for node in nodes]
    assert "trained 30 steps" in outputs[0] and "trained" not in outputs[1]
    want, got = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-5
