"""`flowdiff train --config FILE.toml`, `TrainConfig` checks and the TensorBoard sink, as a user meets them."""

from __future__ import annotations

import json

import pytest

import flowdiff as fd
from flowdiff.errors import InvalidInputError

TINY = {"steps": 12, "batch_size": 16, "hidden": [8], "warmup": 2, "checkpoint_every": 10, "n_data": 200}


def _toml(path, values: dict) -> str:
    lines = []
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_toml_file_configures_the_run_and_flags_override_it(tmp_path, cli):
    config = _toml(tmp_path / "run.toml", {"data": "moons", "coupling": "ot", "lr": 0.002, **TINY})
    result = cli("train", "--config", config, "--lr", "0.005", "--out", tmp_path / "run", "--quiet", "--no-report")
    assert result.returncode == 0, result.stderr
    stored = json.loads((tmp_path / "run" / "config.json").read_text())["training"]
    assert stored["coupling"] == "ot" and stored["lr"] == 0.005 and stored["hidden"] == [8]
    assert stored["steps"] == 12 and stored["batch_size"] == 16  # from the file
    assert fd.TrainConfig.from_dict(stored) == fd.TrainConfig(data="moons", coupling="ot", lr=0.005, **TINY)
    # resuming with the same file is fine; a file that changes a setting is refused
    again = cli("train", "--config", config, "--lr", "0.005", "--out", tmp_path / "run", "--resume", "--quiet")
    assert again.returncode == 0 and "already trained" in again.stdout
    changed = _toml(tmp_path / "changed.toml", {"data": "moons", "coupling": "independent", **TINY})
    refused = cli("train", "--config", changed, "--out", tmp_path / "run", "--resume", "--quiet")
    assert refused.returncode == 2 and "--coupling 'independent' (the run has 'ot')" in refused.stderr


@pytest.mark.parametrize("text, message", [
    ("steps = ", "is not valid TOML"),
    ('stepz = 10\ndata = "moons"', "unknown settings ['stepz']"),
    ('data = "moons"\nlr = -1', "lr must be a finite number > 0"),
    ('data = "moons"\ncoupling = "optimal"', "unknown coupling 'optimal'"),
    ('data = "moons"\nhidden = [0]', "hidden must be positive layer widths"),
])
def test_a_bad_toml_file_is_one_line_and_creates_nothing(tmp_path, cli, text, message):
    (tmp_path / "bad.toml").write_text(text)
    result = cli("train", "--config", tmp_path / "bad.toml", "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_train_config_checks_every_field_once():
    for bad, message in [({"steps": 0}, "steps must be an integer >= 1"), ({"lr": float("inf")}, "lr must be"),
                         ({"ema_decay": 1.0}, "ema_decay must lie in"), ({"label_dropout": 1.0}, "label_dropout"),
                         ({"weight_decay": float("nan")}, "weight_decay"), ({"lr_schedule": "step"}, "lr_schedule"),
                         ({"loss": "l1"}, "unknown loss"), ({"time_law": "late"}, "unknown time law"),
                         ({"grad_clip": 0.0}, "grad_clip"), ({"batch_size": True}, "batch_size")]:
        with pytest.raises(InvalidInputError, match=message):
            fd.TrainConfig(**bad)
    config = fd.TrainConfig(hidden="64,32")
    assert config.hidden == (64, 32) and fd.TrainConfig.from_dict(config.to_dict()) == config
    assert "checkpoint_every" not in config.result_fields() and "lr" in config.result_fields()
    with pytest.raises(InvalidInputError, match="unknown training settings"):
        config.updated(stepz=3)


def test_the_tensorboard_sink_writes_every_numeric_entry_of_each_record(tmp_path, monkeypatch):
    """The sink's logic against a stand-in SummaryWriter (the tensorboard package is an optional extra)."""
    import sys
    import types

    written = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step):
            written.append(("open", log_dir, purge_step))

        def add_scalar(self, name, value, step):
            written.append((name, value, step))

        def close(self):
            written.append(("close",))

    from flowdiff.runs.sinks import TensorBoard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as when tensorboard is not installed
    with pytest.raises(InvalidInputError, match="needs the tensorboard package"):
        TensorBoard(tmp_path / "tb")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))

    x = torch_data()
    result = fd.train(fd.models.MLP(2, hidden=(8,)), fd.GaussianPath(), x, steps=6, batch_size=8, log_every=3,
                      device="cpu", hooks=[TensorBoard(tmp_path / "tb")])
    assert written[0] == ("open", str(tmp_path / "tb"), 1) and written[-1] == ("close",)
    losses = [(value, step) for name, value, step in (w for w in written if len(w) == 3 and w[0] == "train/loss")]
    assert losses == [(r["loss"], r["step"]) for r in result.history] and [s for _, s in losses] == [3, 6]


def torch_data():
    import torch

    return torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
