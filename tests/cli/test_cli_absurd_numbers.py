"""Absurd or non-finite numbers are refused in one line, before any work, naming the setting or the step."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, message", [
    (["--theta", "inf"], "theta must be a finite number >= 0, got inf"),
    (["--sigma", "nan"], "Invalid value for '--sigma'"),
    (["--steps", "99999999999999999999"], "to keep every state, more than half of this machine's"),
    (["--theta", "1e30"], "paths became NaN or inf at t = 0.04 (step 2)"),
    (["--t-end", "1e308"], "t_end=1e+308 is beyond the float32 numbers the simulation computes with"),
    (["--sigma", "1e200"], "sigma=1e+200 is beyond the float32 numbers"),
])
def test_simulate_refuses_absurd_numbers_in_one_line(tmp_path, cli, args, message):
    result = cli("simulate", "ou", *args, "--out", tmp_path / "figures")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "lr must be a finite number > 0"),
    (["--ema-decay", "1"], "ema_decay must lie in [0, 1)"),
    (["--steps", "0"], "--steps"),
    (["--batch", "1000000000"], "use a smaller batch size"),
    (["--steps", "99999999999999999999"], "would never finish; at most 1e+09 steps"),
    (["--image-size", "8"], "an image size applies to image sets, and 'moons' is not one"),
])
def test_train_refuses_absurd_numbers_before_creating_anything(tmp_path, cli, args, message):
    result = cli("train", "--data", "moons", "--out", tmp_path / "run", *args, "--quiet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and not (tmp_path / "run").exists()


def test_an_allocation_failure_past_the_estimates_is_one_line_not_a_traceback(tmp_path, cli, monkeypatch):
    import flowdiff.runs.load

    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 8000000000000 bytes.\nmore lines")

    monkeypatch.setattr(flowdiff.runs.load, "load", exhausted)
    result = cli("sample", tmp_path / "run", "--out", tmp_path / "s.npz")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: out of memory (") and "can't allocate memory" in result.stderr
    monkeypatch.setattr(flowdiff.runs.load, "load", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors are not disguised as memory errors
        cli("sample", tmp_path / "run")
