"""Reflow and distillation of a label-conditioned run: the shards store the labels the teacher was conditioned on,
the students learn them (a label's 1-step samples land in its own mode), the guidance scale is recorded, and
unlabelled shards are drawn exactly as before labels existed."""

from __future__ import annotations

import json

import torch

import flowdiff as fd
from flowdiff.learning.sampling import noise
from flowdiff.runs.reflow import generate_pairs

MODES = fd.GaussianMixture.symmetric_2d(nmodes=5, std=0.3, scale=2.0).means  # the gmm set: label k is mode k


def own_mode_share(run, solver: str | None, n: int = 500) -> float:
    """The share of 1-step samples (w = 1) whose nearest gmm mode is the mode of their label."""
    y = torch.arange(n) % 5
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(3))
    x = run.data_info.unstandardize(fd.sample(run.model, run.path, x0=x0, y=y, steps=1, solver=solver))
    return float((torch.cdist(x, MODES).argmin(1) == y).float().mean())


def test_labelled_reflow_and_distillation_students_follow_their_labels(cli, tmp_path):
    """Teacher: 400 steps on gmm with its labels (5 modes, chance 0.2). Students: reflow (1 Euler step) and a 1-jump
    distilled flow map, 300 steps each on 2000 stored pairs/trajectories; >= 90% of each label's 1-step samples land
    in its mode. Measured (seed 0): 1.00 for both students (the teacher's own single Euler step: 1.00 too, the modes
    being far apart, so this checks the labels, not the sample quality); with each stored label shifted to the next
    pair's (a deliberate fault in StoredPairs and TrajectoryDistillation) 0.22 and 0.18, about chance."""
    teacher = tmp_path / "teacher"
    assert cli("train", "--data", "gmm", "--labels", "--steps", "400", "--hidden", "64,64", "--n-data", "3000",
               "--out", teacher, "--quiet", "--no-report").returncode == 0
    done = cli("reflow", teacher, "--pairs", "2000", "--out", tmp_path / "reflow", "--steps", "300", "--ode-steps",
               "20", "--quiet")
    assert done.returncode == 0, done.stderr
    done = cli("distill", teacher, "--steps", "1", "--trajectories", "2000", "--out", tmp_path / "map",
               "--train-steps", "300", "--ode-steps", "20", "--guidance", "1.5", "--quiet")
    assert done.returncode == 0, done.stderr
    shard = torch.load(tmp_path / "reflow-pairs" / "shard_00000.pt", weights_only=True)
    assert shard["labels"].shape == (2000,) and set(shard["labels"].tolist()) == set(range(5))
    manifests = [json.loads((tmp_path / name / "pairs.json").read_text())
                 for name in ("reflow-pairs", "map-trajectories")]
    assert [(m["num_classes"], m["guidance"]) for m in manifests] == [(5, 1.0), (5, 1.5)]
    reflowed, distilled = fd.load(tmp_path / "reflow"), fd.load(tmp_path / "map")
    assert reflowed.num_classes == distilled.num_classes == 5
    assert json.loads((tmp_path / "reflow" / "config.json").read_text())["training"]["label_dropout"] == 0.1
    shares = {"reflow": own_mode_share(reflowed, "euler"), "distilled": own_mode_share(distilled, None)}
    assert min(shares.values()) >= 0.9, shares
    # the teacher's labels drive the students: with every label swapped for the next one, they land elsewhere
    x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(4))
    y = torch.arange(300) % 5
    x = distilled.data_info.unstandardize(fd.sample(distilled.model, distilled.path, x0=x0, y=(y + 1) % 5, steps=1))
    assert float((torch.cdist(x, MODES).argmin(1) == y).float().mean()) < 0.2


def test_labelled_refusals_stay_one_line_and_unlabelled_shards_are_drawn_as_before(cli, tmp_path):
    unlabelled = tmp_path / "plain"
    assert cli("train", "--data", "gmm", "--steps", "3", "--hidden", "8", "--n-data", "200", "--out", unlabelled,
               "--quiet", "--no-report").returncode == 0
    for command, extra in (("reflow", ("--pairs", "10")), ("distill", ("--steps", "1", "--trajectories", "10"))):
        done = cli(command, unlabelled, *extra, "--guidance", "2", "--out", tmp_path / f"{command}-out")
        assert done.returncode == 2 and "--guidance needs a label-conditioned teacher" in done.stderr, done
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / f"{command}-out-pairs").exists()
    run = fd.load(unlabelled)
    x0, x1, y = generate_pairs(run, 6, tmp_path / "pairs", steps=2, shard_size=4, seed=7)
    assert y is None and sorted(torch.load(tmp_path / "pairs" / "shard_00001.pt", weights_only=True)) == ["states"]
    # the noise of shard k is the draw made before labels existed: seed * 100003 + k, nothing drawn before it
    before = [noise(size, (2,), torch.Generator().manual_seed(7 * 100_003 + k), "cpu") for k, size in ((0, 4), (1, 2))]
    assert torch.equal(x0, torch.cat(before))
    manifest = json.loads((tmp_path / "pairs" / "pairs.json").read_text())
    assert "guidance" not in manifest and "num_classes" not in manifest  # an old unlabelled manifest still matches
    labelled = tmp_path / "labelled"
    assert cli("train", "--data", "gmm", "--labels", "--steps", "3", "--hidden", "8", "--n-data", "200", "--out",
               labelled, "--quiet", "--no-report").returncode == 0
    generate_pairs(fd.load(labelled), 4, tmp_path / "lp", steps=2)
    shard = tmp_path / "lp" / "shard_00000.pt"  # a shard that lost its labels is refused, not trained on unlabelled
    torch.save({"states": torch.load(shard, weights_only=True)["states"]}, shard)
    done = cli("reflow", labelled, "--pairs", "4", "--ode-steps", "2", "--pairs-dir", tmp_path / "lp", "--out",
               tmp_path / "s")
    assert done.returncode == 2 and "does not hold 4 labels" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
