"""`flowdiff train` and `flowdiff sample` on 2 ranks of a gloo group (what torchrun starts) against one process."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file
from scenarios import SAMPLE_OPTIONS, TRAIN_OPTIONS, command_line, spawn_gloo

from flowdiff.runs.checkpoints import latest_checkpoint
from flowdiff.runs.layout import EMA_WEIGHTS, MODEL_WEIGHTS


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A single-process run with its ODE and SDE samples, and the 2-rank results of `command_line`."""
    from flowdiff.cli.app import main

    one = tmp_path_factory.mktemp("one")
    main(["train", *TRAIN_OPTIONS, "--out", str(one / "run1")])
    main(["sample", str(one / "run1"), *SAMPLE_OPTIONS, "--out", str(one / "ode.npz")])
    main(["sample", str(one / "run1"), *SAMPLE_OPTIONS, "--sigma", "0.5", "--out", str(one / "sde.npz")])
    two = tmp_path_factory.mktemp("two")
    return one, two, spawn_gloo(2, two, command_line, one / "run1")


def test_train_on_two_ranks_writes_the_single_process_weights(runs):
    one, two, ranks = runs
    for file in (MODEL_WEIGHTS, EMA_WEIGHTS):
        want = load_file(latest_checkpoint(one / "run1") / file)
        got = load_file(latest_checkpoint(two / "run2") / file)
        assert want.keys() == got.keys()
        assert max(float((got[k] - want[k]).abs().max()) for k in want) <= 1e-5
    assert "trained 8 steps" in ranks[0]["printed"] and ranks[1]["printed"] == ""  # rank 0 alone prints


@pytest.mark.parametrize("kind", ["ode", "sde"])
def test_sample_on_two_ranks_writes_exactly_the_single_process_samples(runs, kind):
    one, two, _ = runs
    want, got = np.load(one / f"{kind}.npz"), np.load(two / f"{kind}.npz")
    assert got["x"].shape == (51, 2)
    assert np.array_equal(got["x"], want["x"])
