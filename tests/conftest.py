"""Shared test set-up: one torch thread.

The suite's networks are small and its loops long: on the 2-core machines of CI one intra-op
thread is faster, and two spinning OpenMP threads per process under load made steps up to 30x
slower (measured by the helpers who wrote the slow tests). Subprocesses inherit the setting.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Run the whole session, and the commands it starts, on one CPU thread."""
    threads, previous = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if previous is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = previous


@pytest.fixture
def cli(capsys):
    """Run the CLI's `main` in this process; returns a CompletedProcess(args, code, stdout, stderr)."""
    from flowdiff.cli.app import main

    def run(*args) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as done:
            code = done.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run
