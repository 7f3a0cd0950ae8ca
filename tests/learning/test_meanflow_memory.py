"""The training memory estimate counts MeanFlow's JVP: its step keeps two passes' activations (forward and
tangent), so a batch that cannot fit is refused up front, in one line, as for flow matching."""

from __future__ import annotations

import pytest
import torch

from flowdiff.errors import InvalidInputError
from flowdiff.learning.flowmaps import MeanFlow, Shortcut
from flowdiff.learning.losses import FlowMatching
from flowdiff.learning.models import MLP
from flowdiff.learning.training.memory import (
    activation_floats,
    activation_passes,
    available_bytes,
    check_step_fits,
    step_bytes,
)


def test_meanflow_step_is_estimated_with_twice_the_activations_of_flow_matching():
    model, x = MLP(2, hidden=(32, 32), flow_map=True), torch.randn(4, 2)
    assert activation_passes(MeanFlow()) == 2
    assert activation_passes(FlowMatching()) == activation_passes(Shortcut()) == activation_passes(None) == 1
    data = 4 * 1000 * 6 * 2  # the six data-shaped tensors per example are the same for both losses
    flow = step_bytes(model, x, 1000, {}, activation_passes(FlowMatching()))
    meanflow = step_bytes(model, x, 1000, {}, activation_passes(MeanFlow()))
    assert meanflow - data == 2 * (flow - data) == 2 * 4 * 1000 * 2 * activation_floats(model, x, {}) // 4


def test_a_batch_that_fits_for_flow_matching_but_not_for_meanflow_is_refused_for_meanflow_only():
    model, x = MLP(2, hidden=(32, 32), flow_map=True), torch.randn(4, 2)
    device = torch.device("cpu")
    per_example_flow = step_bytes(model, x, 1, {}) / 1
    batch = int(0.35 * available_bytes(device) / per_example_flow)  # flow: ~35% of memory, MeanFlow: ~65%
    check_step_fits(model, x, batch, {}, device, FlowMatching())
    with pytest.raises(InvalidInputError, match="2 passes, as the meanflow loss keeps"):
        check_step_fits(model, x, batch, {}, device, MeanFlow())


def test_cli_refuses_an_absurd_meanflow_batch_in_one_line(cli, tmp_path):
    done = cli("train", "--data", "moons", "--method", "meanflow", "--batch", "2000000000", "--steps", "2",
               "--out", tmp_path / "mf", "--quiet", "--no-report")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done
    assert "meanflow loss keeps" in done.stderr and "smaller batch size" in done.stderr, done.stderr
    assert not (tmp_path / "mf" / "checkpoints").exists()
