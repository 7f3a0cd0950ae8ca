"""Random SIGKILLs during `flowdiff train`, each followed by `--resume`: the run ends bit-identical to one that
was never interrupted (weights, EMA), and the latest checkpoint is never torn. Slow: make test-slow."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["--data", "moons", "--steps", "3000", "--batch", "64", "--hidden", "32,32", "--checkpoint-every", "50",
        "--n-data", "5000", "--seed", "3", "--device", "cpu", "--quiet", "--no-report"]


def _train(out, *extra) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "flowdiff", "train", *ARGS, "--out", str(out), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _weights(out):
    root = out / "checkpoints"
    latest = (root / "latest.json").read_text()
    folder = root / json.loads(latest)["dir"]
    return {name: load_file(str(folder / name)) for name in ("model.safetensors", "ema.safetensors")}


def _wait_for_progress(out, process, timeout: float = 120.0) -> None:
    """Until the process has logged a new metrics line (it is training), or has ended."""
    metrics = out / "metrics.jsonl"
    before = metrics.stat().st_size if metrics.exists() else 0
    end = time.monotonic() + timeout
    while time.monotonic() < end and process.poll() is None:
        if metrics.exists() and metrics.stat().st_size > before:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_killed_at_random_moments_and_resumed_ends_bit_identical(tmp_path):
    straight = _train(tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    rng, kills, out = random.Random(0), 0, tmp_path / "killed"
    while True:  # five kills (the first during start-up, the others while it trains), then run to the end
        resume = (out / "config.json").is_file()
        process = _train(out, *(["--resume"] if resume else ["--force"] if out.exists() else []))
        if kills == 5:
            assert process.wait(timeout=600) == 0, process.stderr.read()
            break
        if kills > 0:
            _wait_for_progress(out, process)
        time.sleep(rng.uniform(0.0, 0.5) if kills else rng.uniform(0.2, 1.0))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read()
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills == 5  # the loop really interrupted the run, mostly while it trained
    want, got = _weights(tmp_path / "straight"), _weights(out)
    for file, tensors in want.items():
        for name, value in tensors.items():
            assert torch.equal(got[file][name], value), (file, name, kills)
