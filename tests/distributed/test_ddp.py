"""DDP on 2 CPU processes (gloo) against one process on the same global batch.

One module-scoped spawn runs every scenario on both ranks (tests/distributed/scenarios.py); each
test below compares one of its results with the single-process computation.
"""

from __future__ import annotations

import json

import pytest
import torch
from scenarios import GLOBAL_BATCH, run_scenarios, spawn_gloo, trainer

from flowdiff.paths.couplings import MinibatchOT
from flowdiff.runs.layout import CHECKPOINTS_DIR, METRICS_FILE


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """(single-process results, [rank 0 results, rank 1 results])."""
    one = run_scenarios(tmp_path_factory.mktemp("one"))
    folder = tmp_path_factory.mktemp("two")
    trainer(out=folder / "from_one").fit(until=6)  # stopped by one process, resumed by two
    return one, spawn_gloo(2, folder, run_scenarios, folder / "from_one"), folder


@pytest.mark.parametrize("key", ["gradients", "stable_target_gradients"])
def test_one_ddp_step_has_the_single_process_gradients(results, key):
    """Minibatch OT and the stable target (whose posterior runs over the global batch) alike."""
    one, ranks, _ = results
    for rank in ranks:
        for got, want in zip(rank[key], one[key], strict=True):
            assert got.dtype == torch.float64
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)


def test_two_ranks_train_the_single_process_weights(results):
    one, ranks, _ = results
    for rank in ranks:
        for key in ("model", "ema"):
            for name, want in one[key].items():
                assert (rank[key][name] - want).abs().max() <= 1e-5, (key, name)
        # the logged loss is the mean over the global batch: all ranks log the single process's numbers
        assert [r["step"] for r in rank["history"]] == [r["step"] for r in one["history"]]
        for got, want in zip(rank["history"], one["history"], strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)


def test_global_batch_ot_gives_exactly_the_single_process_pairs(results):
    one, ranks, _ = results
    for key in ("x0", "x1", "y"):
        both = torch.cat([rank["ot_global"][key] for rank in ranks])
        assert torch.equal(both, one["ot_global"][key]), key


def test_local_ot_pairs_each_rank_slice_of_the_global_noise(results):
    one, ranks, _ = results
    x0 = torch.randn(12, 2, generator=torch.Generator().manual_seed(3))  # the global batch's noise
    for r, rank in enumerate(ranks):
        part = slice(6 * r, 6 * r + 6)
        want = MinibatchOT()(x0[part], one["ot_local"]["x1"][part], one["ot_local"]["y"][part])
        assert torch.equal(rank["ot_local"]["x0"], want.x0)
    assert torch.equal(one["ot_local"]["x0"], one["ot_global"]["x0"])  # one process: local is global


def test_resumed_two_rank_run_is_bitwise_the_uninterrupted_one(results):
    _, ranks, folder = results
    for rank in ranks:
        assert rank["resumed_from"] == 6
        for key in ("model", "ema"):
            for name, want in rank[key].items():
                assert torch.equal(rank[f"resumed_{key}"][name], want), (key, name)
    run = folder / "run"
    steps = [json.loads(line)["step"] for line in (run / METRICS_FILE).read_text().splitlines()]
    assert steps == [4, 6, 8, 12]  # one writer: each record once (6: the end of the first fit)
    assert not (run / ".lock").exists()
    assert json.loads((run / CHECKPOINTS_DIR / "latest.json").read_text())["step"] == 12


def test_a_global_batch_that_does_not_divide_is_refused_on_every_rank(results):
    one, ranks, _ = results
    assert one["odd_batch"] is None
    for rank in ranks:
        assert f"batch_size {GLOBAL_BATCH + 1} is the global batch" in rank["odd_batch"]
        assert "multiple of 2" in rank["odd_batch"]


def test_a_run_stopped_on_one_process_resumes_on_two(results):
    one, ranks, _ = results
    for rank in ranks:
        for name, want in one["model"].items():
            assert (rank["other_resumed"][name] - want).abs().max() <= 1e-5, name


def test_a_locked_run_directory_stops_every_rank_with_rank_0s_message(results):
    one, ranks, _ = results
    assert "is being written by process" in one["locked"]
    assert ranks[0]["locked"] == ranks[1]["locked"]  # raised on rank 0, broadcast to rank 1
    assert "is being written by process" in ranks[1]["locked"]


def test_a_nan_loss_on_one_rank_stops_every_rank_and_keeps_the_last_checkpoint(results):
    one, ranks, _ = results
    for rank in [one, *ranks]:  # the loss is all-reduced: the NaN of rank 1 is every rank's, at the same log step
        assert rank["nan"]["error"].startswith("the loss became nan by step 8")
        assert rank["nan"]["checkpoint"] == 4  # the checkpoint before the bad step loads


def test_a_nan_between_two_log_steps_never_reaches_a_checkpoint(results):
    """Loss NaN at step 6 on rank 1, logged only at step 12: DDP averages the NaN gradients into every rank's
    weights, and the checkpoint of step 8 (before any log step) is refused; step 4's stays and loads."""
    one, ranks, _ = results
    for rank in [one, *ranks]:
        assert rank["nan_between_logs"]["error"].startswith("the weights (or their EMA) became NaN or inf by step 8")
        assert rank["nan_between_logs"]["checkpoint"] == 4 and rank["nan_between_logs"]["finite"]
