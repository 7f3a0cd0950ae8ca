"""Checkpoints: interrupted + resumed training equals the uninterrupted run bitwise; atomic saves; load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import flowdiff as fd
from flowdiff import atomic
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.models import MLP
from flowdiff.learning.training.trainer import Trainer
from flowdiff.runs.train import run_hooks


def _data(n=512, labelled=False):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 2, generator=g) * 0.5 + torch.tensor([1.0, -1.0])
    y = torch.randint(3, (n,), generator=g) if labelled else None
    return x, y


def _trainer(out, coupling="independent", labelled=False, resume=False, force=False, **kwargs):
    x, y = _data(labelled=labelled)
    torch.manual_seed(0)
    model = MLP(2, hidden=(32, 32), num_classes=3 if labelled else None, time_dim=16)
    settings = dict(batch_size=64, steps=40, lr=3e-3, warmup=5, checkpoint_every=15, log_every=5,
                    seed=3, device="cpu")
    settings.update(kwargs)
    return Trainer(model, fd.GaussianPath(), x, labels=y, coupling=coupling,
                   hooks=run_hooks(out, resume=resume, force=force), **settings)


def _weights(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("coupling,labelled", [("independent", False), ("ot", True)])
def test_interrupted_and_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path, coupling, labelled):
    straight = _trainer(tmp_path / "a", coupling, labelled).fit()

    first = _trainer(tmp_path / "b", coupling, labelled)
    first.fit(until=22)  # stop between checkpoints (at 15 and 30): fit(until) checkpoints step 22
    assert first.step == 22
    resumed = _trainer(tmp_path / "b", coupling, labelled, resume=True)  # fresh objects, as after a restart
    assert resumed.step == 22
    result = resumed.fit()

    for got, want in ((result.model, straight.model), (result.ema.module, straight.ema.module)):
        a, b = _weights(got), _weights(want)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # the metrics file has each logged step exactly once
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_resume_after_a_crash_continues_from_the_last_periodic_checkpoint(tmp_path):
    straight = _trainer(tmp_path / "a").fit()
    crashed = _trainer(tmp_path / "b")
    crashed.fit(until=40)
    # simulate a crash after step 30: keep only the periodic checkpoint of step 30 ...
    root = tmp_path / "b" / "checkpoints"
    shutil.rmtree(root / "step_00000040")
    atomic.write_json(root / "latest.json", {"step": 30, "dir": "step_00000030"})
    # ... and metrics logged after it, which the resumed run must drop and log again
    result = _trainer(tmp_path / "b", resume=True).fit()
    for key, value in _weights(straight.model).items():
        assert torch.equal(_weights(result.model)[key], value)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))


def test_resume_refuses_changed_settings_and_existing_dirs_are_not_overwritten(tmp_path):
    _trainer(tmp_path / "run").fit(until=15)
    config_before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(IncompatibleError, match="lr"):
        _trainer(tmp_path / "run", lr=1e-2, resume=True).fit()
    with pytest.raises(InvalidInputError, match="already exists"):
        _trainer(tmp_path / "run").fit()
    assert (tmp_path / "run" / "config.json").read_text() == config_before
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 15
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not an empty or flowdiff run directory"):
        _trainer(tmp_path / "other", force=True).fit()
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    trainer = _trainer(tmp_path / "run")
    trainer.fit(until=15)
    before = (tmp_path / "run" / "checkpoints" / "step_00000015" / "model.safetensors").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)  # the state file is written after the weights
    with pytest.raises(OSError, match="No space left on device .the checkpoint was not written") as caught:
        trainer.fit(until=30)
    assert caught.value.filename == str(tmp_path / "run" / "checkpoints" / "step_00000030")
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", "step_00000015"]  # no temp folder left
    assert json.loads((root / "latest.json").read_text())["step"] == 15
    assert (root / "step_00000015" / "model.safetensors").read_bytes() == before
    run = fd.load(tmp_path / "run")
    assert run.step == 15


def test_atomic_text_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "config.json"
    atomic.write_json(target, {"a": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic.write_json(target, {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_load_gives_an_eval_model_with_ema_weights_that_samples(tmp_path):
    result = _trainer(tmp_path / "run", labelled=True).fit()
    run = fd.load(tmp_path / "run")
    assert run.step == 40 and run.num_classes == 3 and run.data_info.shape == (2,)
    assert not run.network.training
    for key, value in _weights(result.ema.module).items():
        assert torch.equal(run.network.state_dict()[key], value)
    x = run.sample(n=16, steps=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    raw = fd.load(tmp_path / "run", weights="model")
    for key, value in _weights(result.model).items():
        assert torch.equal(raw.network.state_dict()[key], value)


def test_load_of_a_score_matching_run_predicts_the_velocity(tmp_path):
    _trainer(tmp_path / "run", loss="score_matching").fit()
    run = fd.load(tmp_path / "run")
    assert run.config["prediction"] == "score"
    x, t = torch.randn(8, 2), torch.full((8,), 0.5)
    want = run.path.convert(run.network(x, t), x, t, "score", "velocity")
    assert torch.allclose(run.model(x, t), want)


def test_load_refuses_missing_and_incompatible_run_dirs(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        fd.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="config.json"):
        fd.load(tmp_path / "empty")
    _trainer(tmp_path / "run").fit(until=15)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["hidden"] = [64, 64]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match="do not fit"):
        fd.load(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints")
    with pytest.raises(InvalidInputError, match="no checkpoint"):
        fd.load(tmp_path / "run")


def test_diverged_weights_are_never_saved_over_the_last_checkpoint(tmp_path):
    """A step that makes the weights NaN between two log records: the checkpoint of that step is refused."""
    trainer = _trainer(tmp_path / "run", log_every=25, checkpoint_every=10)
    trainer.fit(until=10)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(fd.errors.FlowdiffError, match="NaN or inf by step 20"):
        trainer.fit(until=30)  # the checkpoint at step 20 comes before the log record at step 25
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 10
    run = fd.load(tmp_path / "run")
    assert all(bool(torch.isfinite(p).all()) for p in run.network.parameters())
