"""What a run directory promises: one writer, no non-finite weights saved or loaded, signals save, debris and
lost pointers survived, and replacing a run never touches a folder flowdiff did not write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.learning.losses import flow_matching_loss
from flowdiff.learning.models import MLP
from flowdiff.runs.lock import RunLock, RunLockedError
from flowdiff.runs.train import run_hooks

DATA = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
SETTINGS = dict(batch_size=32, steps=30, lr=3e-3, warmup=2, checkpoint_every=10, log_every=5, seed=1, device="cpu")


def _trainer(out, resume=False, force=False, **kwargs):
    torch.manual_seed(0)
    return fd.Trainer(MLP(2, hidden=(16,), time_dim=8), fd.GaussianPath(), DATA,
                      hooks=run_hooks(out, resume=resume, force=force), **{**SETTINGS, **kwargs})


def test_a_second_writer_is_refused_while_the_first_one_lives(tmp_path):
    first = _trainer(tmp_path / "run")  # holds the lock from here until its fit ends
    owner = json.loads((tmp_path / "run" / ".lock").read_text())
    assert owner["pid"] == os.getpid()
    with pytest.raises(RunLockedError, match=f"being written by process {os.getpid()}"):
        _trainer(tmp_path / "run", resume=True)
    first.fit(until=10)
    assert not (tmp_path / "run" / ".lock").exists()  # released when fit ends
    assert _trainer(tmp_path / "run", resume=True).fit().step == 30


def test_a_lock_of_another_live_process_refuses_and_a_dead_ones_is_taken_over(tmp_path):
    (tmp_path / "run").mkdir()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_file = tmp_path / "run" / ".lock"
        lock_file.write_text(json.dumps({"pid": live.pid, "host": os.uname().nodename, "started": 0}))
        with pytest.raises(RunLockedError, match=f"process {live.pid}"):
            RunLock(tmp_path / "run").acquire()
    finally:
        live.kill()
        live.wait()
    lock = RunLock(tmp_path / "run")
    lock.acquire()  # the process is gone: its lock is stale and taken over
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_file.exists()


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_finish_the_step_save_and_stop(tmp_path, number):
    calls = []

    def loss_that_gets_a_signal(model, path, x1, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), number)
        return flow_matching_loss(model, path, x1, **kwargs)

    handler = signal.getsignal(number)
    with pytest.raises(KeyboardInterrupt, match="stopped at step 7"):
        fd.train(MLP(2, hidden=(8,)), fd.GaussianPath(), DATA, loss=loss_that_gets_a_signal, out=tmp_path / "run",
                 **SETTINGS)
    assert signal.getsignal(number) is handler  # the previous handler is back
    assert json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())["step"] == 7


def test_a_lost_latest_json_resumes_from_the_newest_complete_checkpoint(tmp_path):
    straight = _trainer(tmp_path / "a").fit()
    first = _trainer(tmp_path / "b")
    first.fit(until=20)
    root = tmp_path / "b" / "checkpoints"
    (root / "latest.json").unlink()
    (root / "step_00000025").mkdir()  # an incomplete folder (no weights): never chosen
    resumed = _trainer(tmp_path / "b", resume=True)
    assert resumed.step == 20
    result = resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], value)


def test_force_never_empties_a_folder_that_merely_has_a_config_json(tmp_path):
    mine = tmp_path / "mine"
    (mine / "figures").mkdir(parents=True)
    for name, text in [("config.json", '{"lr": 1}'), ("report.html", "<p>mine</p>"), ("figures/a.png", "png")]:
        (mine / name).write_text(text)
    with pytest.raises(InvalidInputError, match="not an empty or flowdiff run directory"):
        _trainer(mine, force=True)
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == [
        "config.json", "figures", "figures/a.png", "report.html"]


def test_non_finite_ema_weights_are_not_checkpointed_and_load_refuses_them(tmp_path):
    trainer = _trainer(tmp_path / "run", log_every=25)
    trainer.fit(until=10)
    with torch.no_grad():
        next(trainer.ema.module.parameters()).fill_(float("inf"))
    with pytest.raises(fd.errors.FlowdiffError, match="NaN or inf by step 20"):
        trainer.fit(until=30)
    assert fd.load(tmp_path / "run").step == 10
    # weights written by something else, not finite: load names the file and refuses
    from safetensors.torch import load_file, save_file

    file = tmp_path / "run" / "checkpoints" / "step_00000010" / "ema.safetensors"
    tensors = load_file(str(file))
    tensors[next(iter(tensors))].fill_(float("nan"))
    save_file(tensors, str(file))
    with pytest.raises(InvalidInputError, match="ema.safetensors are not finite"):
        fd.load(tmp_path / "run")


def test_written_files_and_folders_have_ordinary_modes(tmp_path):
    """Temporary files are made 0600 and folders 0700; what flowdiff leaves must be readable as usual."""
    previous = os.umask(0o022)
    try:
        _trainer(tmp_path / "run", steps=10).fit()
    finally:
        os.umask(previous)
    run = tmp_path / "run"
    checkpoint = run / "checkpoints" / "step_00000010"
    assert (run / "config.json").stat().st_mode & 0o777 == 0o644
    assert (run / "checkpoints" / "latest.json").stat().st_mode & 0o777 == 0o644
    assert checkpoint.stat().st_mode & 0o777 == 0o755
    assert (checkpoint / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_write_errors_name_the_file_asked_for_not_a_temporary_one(tmp_path):
    from flowdiff import atomic

    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OSError) as caught:
        atomic.write_text(tmp_path / "afile" / "x.json", "{}")
    assert caught.value.filename == str(tmp_path / "afile" / "x.json") and "in the way" in caught.value.strerror
    with pytest.raises(OSError) as caught:
        atomic.write_with(tmp_path / "y.json", lambda tmp: (_ for _ in ()).throw(OSError(28, "No space left")))
    assert caught.value.filename == str(tmp_path / "y.json") and caught.value.strerror == "No space left"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no temporary file left behind


@pytest.mark.parametrize("change, message", [
    (lambda c: c["data"].update(shape="abc"), "the data description is malformed"),
    (lambda c: c.update(data=7), r"lacks the entries \['data'\]"),
    (lambda c: c["model"].update(hidden="x"), "cannot be rebuilt"),
])
def test_a_config_json_that_is_json_but_not_a_config_is_one_error(tmp_path, change, message):
    _trainer(tmp_path / "run", steps=10).fit()
    file = tmp_path / "run" / "config.json"
    config = json.loads(file.read_text())
    change(config)
    file.write_text(json.dumps(config))
    with pytest.raises(InvalidInputError, match=message):
        fd.load(tmp_path / "run")
