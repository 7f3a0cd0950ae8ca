"""Contracts of the learning core that mutation testing found unchecked: exact values, whole messages,
the losses' own random draws, and the device and thread choices (with CUDA/MPS availability faked)."""

from __future__ import annotations

import math
import re

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning import devices, guidance
from flowdiff.learning.likelihood import _draw_probes, bits_per_dim
from flowdiff.learning.losses import FlowMatching, ScoreMatching, drop_labels, path_batch, score_matching_loss
from flowdiff.learning.predictions import Converted, as_score
from flowdiff.learning.training.batches import check_labels_for
from flowdiff.learning.training.config import TrainConfig, load_toml, read_toml
from flowdiff.learning.training.ema import EMA


def raises_exactly(error: type, message: str):
    """pytest.raises matching the whole message, not a part of it."""
    return pytest.raises(error, match="^" + re.escape(message) + "$")


# devices and threads


@pytest.fixture
def thread_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


@pytest.mark.parametrize("threads", [1, 3])
def test_configure_threads_sets_the_given_number(thread_calls, threads):
    devices.configure_threads(threads, "cuda", "images")
    assert thread_calls == [threads]


@pytest.mark.parametrize("threads", [0, -2, True, 2.0, 2.5, "2"])
def test_configure_threads_refuses_what_is_not_an_integer_of_at_least_one(thread_calls, threads):
    with raises_exactly(InvalidInputError, f"the number of CPU threads must be an integer >= 1, got {threads!r}"):
        devices.configure_threads(threads, "cpu", "vectors")
    assert thread_calls == []


@pytest.mark.parametrize("device, kind, cuda, expected", [
    ("cpu", "vectors", False, [1]), ("auto", "vectors", False, [1]), ("cpu", "images", False, []),
    ("cuda", "vectors", False, []), ("cpu", "vectors", True, []), ("auto", "vectors", True, []),
])
def test_one_thread_only_for_vectors_on_a_machine_without_cuda(thread_calls, monkeypatch, device, kind, cuda,
                                                               expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    devices.configure_threads(None, device, kind)
    assert thread_calls == expected


@pytest.mark.parametrize("mps", [False, True])
def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, mps):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices._mps_available() is mps
    assert devices.pick_device("auto") == torch.device("mps" if mps else "cpu")
    assert devices.pick_device() == torch.device("mps" if mps else "cpu")
    if mps:
        assert devices.pick_device("mps") == torch.device("mps")
    assert devices.pick_device(None) == torch.device("mps" if mps else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.pick_device("auto") == torch.device("cuda")
    assert devices.pick_device("cuda:1") == torch.device("cuda:1")


def test_an_unavailable_accelerator_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with raises_exactly(InvalidInputError, "device mps was asked for, but MPS is not available here; use the cpu"):
        devices.pick_device("mps")
    with raises_exactly(InvalidInputError,
                        "device cuda was asked for, but CUDA is not available here; use the cpu"):
        devices.pick_device("cuda")
    with raises_exactly(InvalidInputError, "unknown device 'gpu'; use auto, cpu, cuda, cuda:N or mps"):
        devices.pick_device("gpu")


def test_without_an_mps_backend_there_is_no_mps(monkeypatch):
    monkeypatch.delattr(torch.backends, "mps")
    assert devices._mps_available() is False


# likelihood: probes and bits per dimension


def test_rademacher_probes_are_plus_minus_one_in_the_data_dtype():
    x = torch.zeros(3, 2, 2, dtype=torch.float64)
    probes = _draw_probes(5, x, "rademacher", torch.Generator().manual_seed(0))
    bits = torch.randint(0, 2, (5, 3, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(probes, (2 * bits - 1).double(), rtol=0, atol=0)
    gaussian = _draw_probes(5, x, "gaussian", torch.Generator().manual_seed(0))
    want = torch.randn((5, 3, 4), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(gaussian, want, rtol=0, atol=0)


def test_probes_without_a_generator_come_from_the_global_stream():
    x = torch.zeros(1, 3)
    torch.manual_seed(4)
    probes = _draw_probes(2, x, "rademacher", None)
    torch.manual_seed(4)
    want = 2 * torch.randint(0, 2, (2, 1, 3)) - 1
    torch.testing.assert_close(probes, want.float(), rtol=0, atol=0)
    assert probes.dtype == torch.float32


def test_a_single_point_gets_one_probe_per_dimension():
    """Batch 1: the probe shape is read from the point, not from a second one."""
    x = torch.zeros(1, 4, dtype=torch.float64)
    assert _draw_probes(3, x, "gaussian", torch.Generator().manual_seed(1)).shape == (3, 1, 4)


def test_bits_per_dim_at_the_edges_of_its_arguments():
    # one dimension, two levels on [-1, 1]: one bin has width 1, log p = -log 2 (uniform) is 1 bit
    assert float(bits_per_dim(torch.tensor(-math.log(2.0)), 1, levels=2)) == pytest.approx(1.0, rel=1e-6)
    assert float(bits_per_dim(torch.tensor([0.0]), 1, levels=4, data_range=4.0)) == pytest.approx(0.0, abs=1e-7)
    with raises_exactly(InvalidInputError, "dims must be a positive integer, got 0"):
        bits_per_dim(torch.zeros(1), 0)
    with raises_exactly(InvalidInputError, "dims must be a positive integer, got 2.0"):
        bits_per_dim(torch.zeros(1), 2.0)
    with raises_exactly(InvalidInputError, "need levels >= 2 and data_range > 0, got 1, 2.0"):
        bits_per_dim(torch.zeros(1), 3, levels=1)
    with raises_exactly(InvalidInputError, "need levels >= 2 and data_range > 0, got 256, 0.0"):
        bits_per_dim(torch.zeros(1), 3, data_range=0.0)


# training data, configuration and EMA


class Labelled(torch.nn.Module):
    num_classes = 3


def test_labels_must_be_integers_and_match_the_model():
    model = Labelled()
    got = check_labels_for(model, torch.tensor([0.0, 2.0, 1.0]), 3)
    assert got.dtype == torch.long and got.tolist() == [0, 2, 1]
    assert check_labels_for(model, torch.tensor([2, 0]), 2).tolist() == [2, 0]
    with raises_exactly(InvalidInputError, "labels must be integers (class indices 0..K-1)"):
        check_labels_for(model, torch.tensor([0.0, 1.5]), 2)
    with raises_exactly(InvalidInputError, "labels must have shape (3,) to match the data, got (2,)"):
        check_labels_for(model, torch.tensor([0, 1]), 3)
    with raises_exactly(InvalidInputError,
                        "labels must lie in 0..2 for a model with num_classes=3, got values from 0 to 3"):
        check_labels_for(model, torch.tensor([0, 3]), 2)
    with raises_exactly(IncompatibleError,
                        "labels were given, but the model has no label embedding; build it with num_classes=K"):
        check_labels_for(torch.nn.Identity(), torch.tensor([0, 1]), 2)  # no num_classes attribute at all


def test_from_dict_messages_name_the_source():
    with raises_exactly(InvalidInputError, "the configuration must be a table of settings, got list"):
        TrainConfig.from_dict([("steps", 3)])
    known = ", ".join(sorted(f for f in TrainConfig().to_dict()))
    with raises_exactly(InvalidInputError, f"run.toml has unknown settings ['stepz']; known: {known}"):
        TrainConfig.from_dict({"stepz": 3}, source="run.toml")


def test_toml_files_are_read_as_utf8_and_named_in_their_errors(tmp_path):
    good = tmp_path / "run.toml"
    good.write_text('data = "données"\nsteps = 7\nhidden = [4, 2]\n', encoding="utf-8")
    assert read_toml(good) == {"data": "données", "steps": 7, "hidden": [4, 2]}
    assert load_toml(good) == TrainConfig(data="données", steps=7, hidden=(4, 2))
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = 0\n")
    with raises_exactly(InvalidInputError, "steps must be an integer >= 1, got 0"):
        read_toml(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("stepz = 1\n")
    with pytest.raises(InvalidInputError, match="^" + re.escape(f"{unknown} has unknown settings ['stepz']")):
        read_toml(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text("steps = \n")
    with pytest.raises(InvalidInputError, match="^" + re.escape(f"{broken} is not valid TOML: ") + ".+"):
        read_toml(broken)
    latin = tmp_path / "latin.toml"
    latin.write_bytes('data = "donn\xe9es"\n'.encode("latin-1"))
    with raises_exactly(InvalidInputError, f"{latin} is not a UTF-8 text file"):
        read_toml(latin)


def test_the_ema_shadow_network_stays_in_eval_mode():
    ema = EMA(fd.models.MLP(2, hidden=(4,)), 0.9)
    assert ema.train() is ema and ema.training and not ema.module.training
    assert ema.train(False) is ema and not ema.training and not ema.module.training
    ema.train(True)
    assert ema.training and not ema.module.training


# losses and predictions


def test_loss_objects_repr_and_weighting_errors():
    assert repr(FlowMatching("early", 0.1, 0.9)) == "FlowMatching(time_law='early', t_min=0.1, t_max=0.9)"
    assert repr(ScoreMatching("uniform", t_max=0.5)) == (
        "ScoreMatching(weighting='uniform', time_law='uniform', t_min=0.0, t_max=0.5)")
    with raises_exactly(InvalidInputError, "unknown score-matching weighting 'l1'; choose one of: noise, uniform"):
        ScoreMatching("l1")
    with raises_exactly(InvalidInputError, "unknown weighting 'l1'; choose one of: noise, uniform"):
        score_matching_loss(lambda x, t: x, fd.GaussianPath(), torch.zeros(2, 2), weighting="l1")


class LabelModel(torch.nn.Module):
    """s(x, t, y) = x + t + y: a conditional model with the MLP's label interface."""

    num_classes = 3

    def forward(self, x, t, y=None):
        return x + t[:, None] + (0.0 if y is None else y[:, None].to(x.dtype))


@pytest.mark.parametrize("weighting", ["noise", "uniform"])
def test_score_matching_passes_coupling_time_law_and_labels_on(weighting):
    """The loss equals its formula on its own draws (coupling, time law and dropped labels included)."""
    path = fd.GaussianPath()
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    model = LabelModel()
    options = {"coupling": "ot", "time_law": "early", "label_dropout": 0.5, "t_max": 0.9}
    got = score_matching_loss(model, path, x1, y, weighting=weighting, generator=torch.Generator().manual_seed(2),
                              **options)
    s, cond = path_batch(model, path, x1, y, generator=torch.Generator().manual_seed(2), **options)
    beta = (1 - s.t)[:, None]
    score = model(s.x_t, s.t, **cond)
    want = (beta * score + s.noise) if weighting == "noise" else (score + s.noise / beta)
    torch.testing.assert_close(got, want.pow(2).mean(), rtol=1e-6, atol=0)
    # each option changes the value: the check above would notice any one of them dropped
    for changed in ({"coupling": None}, {"time_law": "uniform"}, {"label_dropout": 0.0}):
        other = score_matching_loss(model, path, x1, y, weighting=weighting,
                                    generator=torch.Generator().manual_seed(2), **{**options, **changed})
        assert not torch.isclose(other, got)
    no_labels = score_matching_loss(lambda x, t, **cond: model(x, t), path, x1, weighting=weighting,
                                    generator=torch.Generator().manual_seed(2),
                                    **{**options, "label_dropout": 0.0})
    assert not torch.isclose(no_labels, got)


def test_as_score_converts_a_velocity_through_the_path():
    path = fd.GaussianPath("cosine")
    target = fd.Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.25)
    velocity = fd.MarginalField(path, target, prediction="velocity")
    score = fd.MarginalField(path, target, prediction="score")
    converted = as_score(velocity, path)
    assert isinstance(converted, Converted) and (converted.source, converted.target) == ("velocity", "score")
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((16,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(converted(x, t), score(x, t), rtol=1e-9, atol=1e-9)
    assert as_score(score, path, "score") is score
    with raises_exactly(InvalidInputError, "unknown prediction 'eps'; choose one of: velocity, score, x1, noise"):
        as_score(score, path, "eps")


def test_converted_fields_start_after_zero_only_from_a_score_or_noise():
    path = fd.GaussianPath()
    model = fd.models.MLP(2, hidden=(4,))
    for source, target, t_min in [("score", "velocity", 1e-3), ("noise", "velocity", 1e-3),
                                  ("noise", "x1", 1e-3), ("score", "score", 0.0), ("noise", "noise", 0.0),
                                  ("velocity", "score", 0.0), ("x1", "velocity", 0.0)]:
        assert Converted(model, path, source, target).t_min == t_min, (source, target)


def test_converted_passes_the_condition_on():
    path = fd.GaussianPath()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    t, y = torch.full((5,), 0.3), torch.tensor([0, 1, 2, 1, 0])
    model = LabelModel()
    got = Converted(model, path, "velocity", "x1")(x, t, y=y)
    torch.testing.assert_close(got, path.convert(model(x, t, y=y), x, t, "velocity", "x1"), rtol=0, atol=0)


# classifier-free guidance


class Recorder(torch.nn.Module):
    """u(x, t, y) = x * (y + 1) + t, recording what it was called with."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x, t, y=None, **cond):
        self.calls.append({"t": t, "y": y, **cond})
        return x * (y[:, None] + 1).to(x.dtype) + t.reshape(-1, 1) if t.ndim else x * (y[:, None] + 1) + t


def test_guidance_mixes_the_conditional_and_null_fields_in_one_call():
    model = Recorder()
    guided = guidance.ClassifierFreeGuidance(model, 2.5)
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = guided(x, 0.5, y=torch.tensor([1, 0, 2], dtype=torch.int32), extra="kept")
    call = model.calls[-1]
    assert call["y"].dtype == torch.long and call["y"].tolist() == [1, 0, 2, 4, 4, 4]
    assert call["t"].dtype == torch.float64 and call["t"].ndim == 0 and call["extra"] == "kept"
    conditional, null = x * torch.tensor([[2.0], [1.0], [3.0]], dtype=torch.float64) + 0.5, x * 5 + 0.5
    torch.testing.assert_close(got, null + 2.5 * (conditional - null), rtol=1e-12, atol=1e-12)


def test_guidance_messages():
    message = ("{} need a label-conditioned model, but this model is unconditional (num_classes=None); train it "
               "with labels (and label dropout for guidance) or sample without labels")
    with raises_exactly(IncompatibleError, message.format("labels")):
        guidance.require_conditional(torch.nn.Identity())  # no num_classes attribute at all
    with raises_exactly(IncompatibleError, message.format("classifier-free guidance")):
        guidance.ClassifierFreeGuidance(torch.nn.Identity(), 2.0)
    with raises_exactly(InvalidInputError, "guidance scale must be a finite number, got nan"):
        guidance.ClassifierFreeGuidance(Recorder(), float("nan"))
    with raises_exactly(IncompatibleError, "classifier-free guidance needs labels y to guide towards"):
        guidance.ClassifierFreeGuidance(Recorder(), 2.0)(torch.zeros(2, 2), 0.5)


# label dropout and the training data


def test_no_label_dropout_returns_the_labels_and_draws_nothing():
    y = torch.tensor([0, 1, 2])
    generator = torch.Generator().manual_seed(5)
    before = generator.get_state()
    assert drop_labels(y, 3, 0.0, generator) is y
    assert torch.equal(generator.get_state(), before)


def test_label_dropout_does_not_depend_on_the_default_dtype():
    y = torch.arange(64) % 3
    want = drop_labels(y, 3, 0.5, torch.Generator().manual_seed(5))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = drop_labels(y, 3, 0.5, torch.Generator().manual_seed(5))
    finally:
        torch.set_default_dtype(previous)
    assert torch.equal(got, want) and 0 < int((got == 3).sum()) < 64


def test_the_data_checksum_is_blake2b_of_shapes_and_bytes():
    import hashlib

    import numpy as np

    from flowdiff.learning.training.batches import InMemoryData

    x = torch.arange(6, dtype=torch.float32).reshape(3, 2) - 2.5
    y = torch.tensor([2, 0, 1])
    data = InMemoryData(x, y, Labelled(), torch.device("cpu"))
    digest = hashlib.blake2b(digest_size=12)
    for array in (x.numpy(), y.numpy()):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    assert data.checksum() == digest.hexdigest() and len(data.checksum()) == 24
    unlabelled = hashlib.blake2b(str((3, 2)).encode() + x.numpy().tobytes(), digest_size=12).hexdigest()
    assert InMemoryData(x, None, Labelled(), torch.device("cpu")).checksum() == unlabelled


# the training state


def _state(ema_decay=0.9):
    from flowdiff.learning.training.state import TrainState

    return TrainState.create(fd.models.MLP(2, hidden=(4,)), 1e-3, 0.0, ema_decay, 0, torch.device("cpu"))


def test_state_dict_keys_and_restored_counters():
    state = _state()
    state.step, state.elapsed = 10, 2.5
    state.ema.num_updates.fill_(7)
    saved = state.state_dict()
    assert set(saved) == {"step", "optimizer", "data_generator", "loss_generator", "torch_rng", "elapsed",
                          "ema_num_updates"}
    assert saved["step"] == 10 and saved["elapsed"] == 2.5 and saved["ema_num_updates"] == 7
    assert "ema_num_updates" not in _state(None).state_dict()
    fresh = _state()
    fresh.load_state_dict({**saved, "cuda_rng": torch.zeros(16, dtype=torch.uint8)})  # ignored on the CPU
    assert (fresh.step, fresh.elapsed, int(fresh.ema.num_updates)) == (10, 2.5, 7)
    old = {k: v for k, v in saved.items() if k not in ("ema_num_updates", "elapsed")}  # an older checkpoint
    older = _state()
    older.elapsed = 9.0
    older.load_state_dict(old)
    assert (older.step, older.elapsed, int(older.ema.num_updates)) == (10, 0.0, 10)


def test_generator_states_of_another_device_are_refused():
    state = _state()
    saved = state.state_dict()
    with raises_exactly(IncompatibleError, "the saved random-number states belong to another device type than "
                                           "cpu; resume on the device the run was trained on"):
        state.load_state_dict({**saved, "data_generator": torch.zeros(16, dtype=torch.uint8)})


# the trainer's description of a run


def test_describe_values_of_every_kind():
    from flowdiff.learning.training.trainer import describe

    def my_loss(model, path, x1, **batch):
        return 0

    class Opaque:
        pass

    assert describe(None) is None and describe("ot") == "ot" and describe(3) == 3 and describe(True) is True
    assert describe({"name": "x"}) == {"name": "x"} and describe(0.5) == 0.5
    assert describe(FlowMatching("early")) == {"name": "flow_matching", "time_law": "early", "t_min": 0.0,
                                               "t_max": 1.0}
    assert describe(my_loss) == "my_loss" and describe(Opaque()) == "Opaque"


def test_trainer_describes_the_resolved_objects():
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    trainer = fd.Trainer(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), x, steps=1, device="cpu",
                         loss="score_matching", coupling="ot")
    resolved = trainer.describe()["resolved"]
    assert resolved["loss"] == {"name": "score_matching", "weighting": "noise", "time_law": "uniform",
                                "t_min": 0.0, "t_max": 1.0}
    assert resolved["coupling"] == trainer.coupling.config() and resolved["coupling"]["name"] == "ot"
    assert resolved["device"] == "cpu" and resolved["conditional"] is False
    assert resolved["data_checksum"] == trainer.data.checksum()


# log_prob: its input checks and scalings, on u(x, t) = a * x (closed form)

A = torch.tensor([0.3, -0.2], dtype=torch.float64)


def _linear(x, t):
    return x * A


def _linear_log_prob(x):
    """log p_1(x) for dX = a X dt from N(0, I): X_0 = e^{-a} x, minus the integrated divergence sum a."""
    x0 = x * torch.exp(-A)
    return -0.5 * (x0.pow(2).sum(1) + 2 * math.log(2 * math.pi)) - A.sum()


def test_log_prob_of_a_single_point_and_of_a_field_without_data_shape():
    from flowdiff.learning.likelihood import log_prob

    x = torch.tensor([[0.7, -1.1]], dtype=torch.float64)
    got = log_prob(_linear, fd.GaussianPath(), x, steps=20)
    torch.testing.assert_close(got, _linear_log_prob(x), rtol=0, atol=1e-8)


class DimField:
    """a * x with the shape of a point stated by `dim` (and optionally `data_shape`)."""

    def __init__(self, dim, data_shape=None):
        self.dim = dim
        if data_shape is not None:
            self.data_shape = data_shape

    def __call__(self, x, t):
        return (x.reshape(x.shape[0], -1) * A).reshape(x.shape)


def test_log_prob_reads_the_point_shape_from_data_shape_then_dim():
    from flowdiff.learning.likelihood import log_prob

    path, x = fd.GaussianPath(), torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    with raises_exactly(InvalidInputError, "x has points of shape (2,) but the model takes (3,): "
                                           "pass x of shape (batch, 3)"):
        log_prob(DimField(3), path, x)
    square = DimField(2, data_shape=(1, 2))  # data_shape wins over dim
    got = log_prob(square, path, x.reshape(2, 1, 2), steps=20)
    torch.testing.assert_close(got, _linear_log_prob(x), rtol=0, atol=1e-8)
    with raises_exactly(InvalidInputError, "x has points of shape (2, 1) but the model takes (1, 2): "
                                           "pass x of shape (batch, 1, 2)"):
        log_prob(square, path, x.reshape(2, 2, 1))


def test_log_prob_input_messages():
    from flowdiff.dynamics.equations import ODE
    from flowdiff.dynamics.solvers import solver_names
    from flowdiff.learning.likelihood import log_prob

    path = fd.GaussianPath()
    with raises_exactly(InvalidInputError, "x must be a torch.Tensor of shape (batch, *shape), got list"):
        log_prob(_linear, path, [[0.0, 1.0]])
    with raises_exactly(InvalidInputError, "x must have shape (batch, *shape), got (2,)"):
        log_prob(_linear, path, torch.zeros(2))
    with raises_exactly(InvalidInputError, "x must have shape (batch, *shape), got (0, 2)"):
        log_prob(_linear, path, torch.zeros(0, 2))
    with raises_exactly(InvalidInputError, "x must be a floating tensor, got torch.int64"):
        log_prob(_linear, path, torch.zeros(3, 2, dtype=torch.long))
    with raises_exactly(InvalidInputError, "x contains NaN or inf; log_prob needs finite data points"):
        log_prob(_linear, path, torch.tensor([[0.0, float("inf")]]))
    with raises_exactly(IncompatibleError, "log_prob integrates an ODE backwards; solver 'euler_maruyama' is for "
                                           f"SDEs; choose one of: {', '.join(solver_names(ODE))}"):
        log_prob(_linear, path, torch.zeros(3, 2), solver="euler_maruyama")


class Info:
    """A run's DataInfo as log_prob sees it: attributes std and (optionally) mean."""

    def __init__(self, std, mean=None):
        self.std = std
        if mean is not None:
            self.mean = mean


def test_log_prob_takes_the_scaling_from_an_object_with_std_and_mean():
    from flowdiff.learning.likelihood import log_prob

    path = fd.GaussianPath()
    x_model = torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    mean, std = [1.0, -2.0], [2.0, 0.5]
    x = torch.tensor(mean, dtype=torch.float64) + torch.tensor(std, dtype=torch.float64) * x_model
    want = _linear_log_prob(x_model) - math.log(2.0 * 0.5)
    for scale in (Info(std, mean), {"mean": mean, "std": std}, (mean, std)):
        torch.testing.assert_close(log_prob(_linear, path, x, steps=20, scale=scale), want, rtol=0, atol=1e-8)
    no_mean = x_model * torch.tensor(std, dtype=torch.float64)
    torch.testing.assert_close(log_prob(_linear, path, no_mean, steps=20, scale=Info(std)), want, rtol=0, atol=1e-8)
    torch.testing.assert_close(log_prob(_linear, path, x_model, steps=20, scale=Info(None)),
                               _linear_log_prob(x_model), rtol=0, atol=1e-8)


# sampling: every refusal with its whole message

_MODEL = fd.models.MLP(2, hidden=(8,), time_dim=8)
_CONDITIONAL = fd.models.MLP(2, hidden=(8,), num_classes=3, time_dim=8)
_UNCONDITIONAL = ("labels y need a label-conditioned model, but this model is unconditional (num_classes=None); "
                  "train it with labels (and label dropout for guidance) or sample without labels")
_GRID = "a sampling grid must increase within [0, 1] (t = 0 noise, t = 1 data)"


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(model=_MODEL, n=0), InvalidInputError, "n must be a positive integer, got 0"),
    (dict(model=_MODEL, n=True), InvalidInputError, "n must be a positive integer, got True"),
    (dict(model=_MODEL), InvalidInputError, "give the number of samples n (or x0, or a tensor of labels y)"),
    (dict(model=_MODEL, n=2, grid="cosine"), InvalidInputError,
     "unknown grid 'cosine'; choose one of: uniform, shifted, rho"),
    (dict(model=_MODEL, n=2, grid=torch.tensor([1.0, 0.5, 0.0])), InvalidInputError, _GRID),
    (dict(model=_MODEL, n=2, grid=torch.tensor([0.0, 0.5, 1.5])), InvalidInputError, _GRID),
    (dict(model=_MODEL, n=2, grid=torch.tensor([-0.5, 0.5, 1.0])), InvalidInputError, _GRID),
    (dict(model=_MODEL, n=2, grid=[0.0, 1.0]), InvalidInputError,
     "grid must be a name (uniform, shifted, rho) or a 1-d tensor of times"),
    (dict(model=_MODEL, n=2, sigma=-1.0), InvalidInputError, "sigma must be a finite number >= 0, got -1.0"),
    (dict(model=_MODEL, n=2, sigma=float("inf")), InvalidInputError, "sigma must be a finite number >= 0, got inf"),
    (dict(model=_MODEL, n=2, sigma=lambda t: -t), InvalidInputError,
     "sigma(t) must be finite and >= 0 at every time of the grid"),
    (dict(model=_MODEL, n=2, sigma=lambda t: float("nan")), InvalidInputError,
     "sigma(t) must be finite and >= 0 at every time of the grid"),
    (dict(model=_MODEL, n=2, sigma="1"), InvalidInputError,
     "sigma must be a number >= 0 or a callable sigma(t), got '1'"),
    (dict(model=_MODEL, n=2, sigma=True), InvalidInputError,
     "sigma must be a number >= 0 or a callable sigma(t), got True"),
    (dict(model=_MODEL, n=2, y=1), IncompatibleError, _UNCONDITIONAL),
    (dict(model=_MODEL, n=2, y=1, guidance=2.0), IncompatibleError,
     _UNCONDITIONAL.replace("labels y need", "classifier-free guidance need")),
    (dict(model=_CONDITIONAL, n=2, guidance=2.0), IncompatibleError,
     "guidance=2.0 needs labels y to guide towards; pass y=<label>"),
    (dict(model=_CONDITIONAL, n=2, guidance=float("nan")), InvalidInputError,
     "guidance must be a finite number, got nan"),
    (dict(model=_CONDITIONAL, n=2, y=7), InvalidInputError,
     "labels must lie in 0..2 (or 3, the null label), got values from 7 to 7"),
    (dict(model=_CONDITIONAL, n=3, y=torch.tensor([0, 1])), InvalidInputError,
     "labels y must be an int or have shape (3,), got (2,)"),
    (dict(model=_CONDITIONAL, y=torch.tensor([[0, 1]])), InvalidInputError,
     "labels y must be an int or have shape (n,), got (1, 2)"),
    (dict(model=_CONDITIONAL, y=1), InvalidInputError, "give n (the number of samples) with a single label y"),
    (dict(model=_CONDITIONAL, n=2, y=1.0), InvalidInputError,
     "y must be an int label or a tensor of labels, got float"),
    (dict(model=_CONDITIONAL, n=2, y=True), InvalidInputError,
     "y must be an int label or a tensor of labels, got bool"),
    (dict(model=_CONDITIONAL, n=2, y=torch.tensor([0.0, 1.0])), InvalidInputError,
     "labels y must be integers, got dtype torch.float32"),
    (dict(model=_CONDITIONAL, n=2, y=torch.tensor([0, 1j])), InvalidInputError,
     "labels y must be integers, got dtype torch.complex64"),
    (dict(model=_MODEL, n=3, x0=torch.zeros(2, 5)), InvalidInputError, "n=3 but x0 holds 2 points"),
    (dict(model=_MODEL, x0=[0.0, 1.0]), InvalidInputError, "x0 must be a tensor of starting points (n, *data_shape)"),
    (dict(model=_MODEL, x0=torch.tensor(1.0)), InvalidInputError,
     "x0 must be a tensor of starting points (n, *data_shape)"),
    (dict(model=_MODEL, n=2, prediction="eps"), InvalidInputError,
     "unknown prediction 'eps'; choose one of: velocity, score, x1, noise"),
    (dict(model=_MODEL, n=2, t_min=0.5, t_max=0.4), InvalidInputError,
     "need 0 <= t_min < t_max <= 1, got t_min=0.5, t_max=0.4"),
    (dict(model=_MODEL, n=2, t_min=-0.1), InvalidInputError, "need 0 <= t_min < t_max <= 1, got t_min=-0.1, t_max=1.0"),
    (dict(model=_MODEL, n=2, t_max=1.5), InvalidInputError, "need 0 <= t_min < t_max <= 1, got t_min=0.0, t_max=1.5"),
    (dict(model=lambda x, t: x, n=2), InvalidInputError, "the model has no data_shape; pass the starting points x0"),
    (dict(model=_MODEL, n=2, steps=0), InvalidInputError, "steps must be a positive integer, got 0"),
    (dict(model=_MODEL, n=2, steps=2.0), InvalidInputError, "steps must be a positive integer, got 2.0"),
    (dict(model=_MODEL, n=2, steps=True), InvalidInputError, "steps must be a positive integer, got True"),
    (dict(model=_MODEL, n=2, ode_tail=1.5, sigma=1.0), InvalidInputError,
     "ode_tail must be a time span in [0, 1], got 1.5"),
    (dict(model=_MODEL, n=2, ode_tail=-0.5, sigma=1.0), InvalidInputError,
     "ode_tail must be a time span in [0, 1], got -0.5"),
    (dict(model=_MODEL, n=2, ode_tail="a", sigma=1.0), InvalidInputError,
     "ode_tail must be a time span in [0, 1], got 'a'"),
])
def test_sampling_refusals_say_exactly_what_is_wrong(kwargs, error, message):
    kwargs.setdefault("steps", 2)
    with raises_exactly(error, message):
        fd.sample(path=fd.GaussianPath(), **kwargs)


def test_log_prob_scalings_in_every_form_and_without_float32_rounding():
    from flowdiff.learning.likelihood import log_prob

    path = fd.GaussianPath()
    x_model = torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    # 0.1 and 1e-3 are not float32 numbers: a scaling rounded through float32 would move log p by > 1e-8
    cases = [(0.1, 1e-3), (0.0, 0.1)]
    for mean, std in cases:
        x = mean + std * x_model
        want = _linear_log_prob(x_model) - 2 * math.log(std)
        for scale in ((mean, std), {"mean": mean, "std": std}, Info(std, mean)):
            torch.testing.assert_close(log_prob(_linear, path, x, steps=50, scale=scale), want, rtol=0, atol=1e-10)
    std = torch.tensor([2.0, 0.5], dtype=torch.float64)
    want = _linear_log_prob(x_model) - math.log(2.0 * 0.5)
    for scale in (std, {"std": std}, {"mean": None, "std": std}):  # a std alone: mean 0
        torch.testing.assert_close(log_prob(_linear, path, x_model * std, steps=50, scale=scale), want,
                                   rtol=0, atol=1e-10)
    torch.testing.assert_close(log_prob(_linear, path, 3.0 * x_model, steps=50, scale=3.0),
                               _linear_log_prob(x_model) - 2 * math.log(3.0), rtol=0, atol=1e-10)
    unscaled = log_prob(_linear, path, x_model, steps=50)
    assert torch.equal(log_prob(_linear, path, x_model, steps=50, scale={"mean": [5.0, 5.0], "std": None}), unscaled)


def test_log_prob_scaling_messages():
    from flowdiff.learning.likelihood import log_prob

    path, x = fd.GaussianPath(), torch.zeros(2, 2, dtype=torch.float64)
    with raises_exactly(InvalidInputError, "scale as a mapping needs a 'std' (and optional 'mean'), got ['mean']"):
        log_prob(_linear, path, x, scale={"mean": 1.0})
    for bad in (0.0, -1.0, float("inf"), (float("nan"), 1.0), [1.0, 0.0]):
        with raises_exactly(InvalidInputError, "scale needs a finite mean and a finite std > 0"):
            log_prob(_linear, path, x, scale=bad)
    prefix = "scale must broadcast to a point's shape (2,) (a std, (mean, std) or {'mean': ..., 'std': ...}): "
    with pytest.raises(InvalidInputError, match="^" + re.escape(prefix) + ".+"):
        log_prob(_linear, path, x, scale=[1.0, 2.0, 3.0])


def test_log_prob_defaults_and_count_checks():
    from flowdiff.learning.likelihood import log_prob

    path, x = fd.GaussianPath(), torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    timed = lambda x, t: x * A * t.reshape(-1, 1)  # noqa: E731  (a time-dependent field: the steps matter)
    assert torch.equal(log_prob(timed, path, x), log_prob(timed, path, x, steps=100))
    assert not torch.equal(log_prob(timed, path, x), log_prob(timed, path, x, steps=101))
    options = {"steps": 3, "divergence": "hutchinson", "probe_dist": "gaussian"}
    one = log_prob(_linear, path, x, generator=torch.Generator().manual_seed(1), **options)
    assert torch.equal(one, log_prob(_linear, path, x, probes=1, generator=torch.Generator().manual_seed(1), **options))
    assert not torch.equal(one, log_prob(_linear, path, x, probes=2, generator=torch.Generator().manual_seed(1),
                                         **options))
    for name, bad in (("probes", 0), ("probes", 2.5), ("probes", True), ("steps", 0), ("steps", 2.5),
                      ("steps", True), ("steps", 2.0)):
        options = {"divergence": "hutchinson", name: bad}
        with raises_exactly(InvalidInputError, f"{name} must be an integer >= 1, got {bad!r}"):
            log_prob(_linear, path, x, **options)


def test_a_tensor_or_array_is_a_std_not_an_object_with_std_and_mean():
    """Tensors and arrays have std() and mean() methods: they are still read as the std itself."""
    import numpy as np

    from flowdiff.learning.likelihood import log_prob

    x_model = torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    want = _linear_log_prob(x_model) - math.log(2.0 * 0.5)
    for std in (torch.tensor([2.0, 0.5], dtype=torch.float64), np.array([2.0, 0.5])):
        x = x_model * torch.as_tensor(std)
        torch.testing.assert_close(log_prob(_linear, fd.GaussianPath(), x, steps=50, scale=std), want,
                                   rtol=0, atol=1e-10)


def test_flow_matching_passes_coupling_and_time_law_on():
    from flowdiff.learning.losses import flow_matching_loss

    path = fd.GaussianPath("cosine")
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    model = LabelModel()
    options = {"coupling": "ot", "time_law": "early", "t_min": 0.1}
    got = flow_matching_loss(model, path, x1, generator=torch.Generator().manual_seed(2), **options)
    s, _ = path_batch(model, path, x1, generator=torch.Generator().manual_seed(2), **options)
    torch.testing.assert_close(got, (model(s.x_t, s.t) - s.velocity).pow(2).mean(), rtol=1e-6, atol=0)
    for changed in ({"coupling": None}, {"time_law": "uniform"}):
        other = flow_matching_loss(model, path, x1, generator=torch.Generator().manual_seed(2),
                                   **{**options, **changed})
        assert not torch.isclose(other, got)


def test_loss_objects_check_their_time_range_and_get_loss_keeps_objects():
    from flowdiff.learning.losses import get_loss

    for t_min, t_max in ((0.5, 0.5), (0.0, 1.5), (-0.1, 1.0)):
        with raises_exactly(InvalidInputError, f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}"):
            FlowMatching(t_min=t_min, t_max=t_max)
    assert FlowMatching(t_min=0.0, t_max=1.0).config()["t_max"] == 1.0

    def custom(model, path, x1, **batch):
        return x1.sum()

    loss = ScoreMatching("uniform")
    assert get_loss(custom) is custom and get_loss(loss) is loss
    assert get_loss("score_matching", weighting="uniform").config() == loss.config()


def test_a_loss_that_becomes_nan_stops_training_with_advice():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))

    def nan_loss(model, path, x1, **batch):
        return model(x1, torch.zeros(x1.shape[0])).sum() * float("nan")

    trainer = fd.Trainer(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), x, steps=3, batch_size=4, device="cpu",
                         loss=nan_loss, log_every=1, lr=0.002)
    with raises_exactly(fd.errors.FlowdiffError, "the loss became nan by step 1; lower the learning rate "
                                                 "(lr=0.002) or keep gradient clipping on"):
        trainer.fit()


# the training configuration: every refusal with its whole message, and the edges that are accepted


@pytest.mark.parametrize("setting, message", [
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"steps": True}, "steps must be an integer >= 1, got True"),
    ({"batch_size": 1.5}, "batch_size must be an integer >= 1, got 1.5"),
    ({"warmup": -1}, "warmup must be an integer >= 0, got -1"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1, got 0"),
    ({"log_every": 0}, "log_every must be an integer >= 1, got 0"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"n_data": 0}, "n_data must be an integer >= 1, got 0"),
    ({"image_size": 0}, "image_size must be an integer >= 1, got 0"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": 0}, "lr must be a finite number > 0, got 0"),
    ({"lr": True}, "lr must be a finite number > 0, got True"),
    ({"lr": "1"}, "lr must be a finite number > 0, got '1'"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"weight_decay": -1}, "weight_decay must be a finite number >= 0, got -1"),
    ({"weight_decay": "0"}, "weight_decay must be a finite number >= 0, got '0'"),
    ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0 (or None for no clipping), got 0.0"),
    ({"ema_decay": 1.0}, "ema_decay must lie in [0, 1) (or None for no EMA), got 1.0"),
    ({"ema_decay": -0.1}, "ema_decay must lie in [0, 1) (or None for no EMA), got -0.1"),
    ({"ema_decay": "0.9"}, "ema_decay must lie in [0, 1) (or None for no EMA), got '0.9'"),
    ({"label_dropout": 1.0}, "label_dropout must lie in [0, 1), got 1.0"),
    ({"label_dropout": -0.1}, "label_dropout must lie in [0, 1), got -0.1"),
    ({"label_dropout": "0"}, "label_dropout must lie in [0, 1), got '0'"),
    ({"lr_schedule": "step"}, "unknown lr_schedule 'step'; choose one of: cosine, constant"),
    ({"loss": "l1"}, "unknown loss 'l1'; choose one of: flow_matching, score_matching, stable_target, meanflow, "
                     "imeanflow, shortcut"),
    ({"coupling": "x"}, "unknown coupling 'x'; choose one of: independent, ot, sinkhorn"),
    ({"time_law": "late"}, "unknown time law 'late'; choose one of: uniform, early"),
    ({"schedule": "x"}, "unknown schedule 'x'; choose one of: linear, cosine, polynomial, vp"),
    ({"model": "x"}, "unknown model 'x'; choose one of: mlp, unet, dit, token_mlp, token_dit"),
    ({"hidden": "a,b"}, "hidden must be a comma-separated list of ints, got 'a,b'"),
    ({"hidden": []}, "hidden must be positive layer widths like 256,256,256, got []"),
    ({"hidden": 5}, "hidden must be positive layer widths like 256,256,256, got 5"),
    ({"hidden": [True]}, "hidden must be positive layer widths like 256,256,256, got [True]"),
    ({"hidden": [4, 0]}, "hidden must be positive layer widths like 256,256,256, got [4, 0]"),
    ({"hidden": [2.5]}, "hidden must be positive layer widths like 256,256,256, got [2.5]"),
])
def test_train_config_refusals_say_exactly_what_is_wrong(setting, message):
    with raises_exactly(InvalidInputError, message):
        TrainConfig(**setting)


def test_train_config_accepts_the_edges_of_every_range():
    edges = dict(steps=1, batch_size=1, warmup=0, checkpoint_every=1, log_every=1, seed=0, n_data=1, image_size=1,
                 lr=1e-12, weight_decay=0, grad_clip=None, ema_decay=0.0, label_dropout=0.0, lr_schedule="constant",
                 model="mlp", hidden="8, 4")
    assert TrainConfig(hidden=[1]).hidden == (1,)
    config = TrainConfig(**edges)
    assert config.hidden == (8, 4) and config.to_dict()["hidden"] == [8, 4]
    assert TrainConfig(ema_decay=None, grad_clip=0.5, label_dropout=0.99).ema_decay is None
    assert config.updated(steps=3).steps == 3 and config.updated(steps=3).hidden == (8, 4)
    known = ", ".join(f for f in TrainConfig().to_dict())
    with raises_exactly(InvalidInputError, f"unknown training settings ['stepz']; known: {known}"):
        config.updated(stepz=3)
    assert set(config.result_fields()) == set(config.to_dict()) - {"checkpoint_every", "log_every", "device"}


# the training loop: optimizer, generators, what the loss is given, the logged window


def test_make_adamw_is_fused_where_torch_can_and_foreach_otherwise(monkeypatch):
    from flowdiff.learning.training import state as state_module

    params = [torch.nn.Parameter(torch.zeros(3))]
    fused = state_module.make_adamw(params, 0.25, 0.125)
    assert fused.defaults["fused"] is True and not fused.defaults["foreach"]
    assert (fused.defaults["lr"], fused.defaults["weight_decay"]) == (0.25, 0.125)
    assert fused.param_groups[0]["params"] == params
    real = torch.optim.AdamW

    def no_fused(params, fused=None, **kwargs):
        if fused:
            raise RuntimeError("no fused kernel here")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused)
    fallback = state_module.make_adamw(params, 0.25, 0.125)
    assert fallback.defaults["foreach"] is True and not fallback.defaults["fused"]
    assert (fallback.defaults["lr"], fallback.defaults["weight_decay"]) == (0.25, 0.125)
    assert fallback.param_groups[0]["params"] == params


def test_a_fresh_state_has_its_ema_decay_and_generators_seeded_seed_and_seed_plus_one():
    from flowdiff.learning.training.state import TrainState

    state = TrainState.create(fd.models.MLP(2, hidden=(4,)), 1e-3, 0.0, 0.5, 7, torch.device("cpu"))
    assert state.ema.decay == 0.5
    assert state.data_generator.initial_seed() == 7 and state.loss_generator.initial_seed() == 8


def _trainer(loss, x, **settings):
    settings = {"steps": 4, "batch_size": 4, "device": "cpu", "log_every": 2, "warmup": 0, **settings}
    return fd.Trainer(fd.models.MLP(2, hidden=(4,), num_classes=settings.pop("num_classes", None)),
                      fd.GaussianPath(), x, loss=loss, **settings)


def test_the_loss_gets_the_batch_coupling_dropout_generator_and_time_law():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 3
    seen = []

    def loss(model, path, x1, **batch):
        seen.append(batch)
        return model(x1, torch.zeros(x1.shape[0]), y=batch["y"]).pow(2).mean()

    trainer = _trainer(loss, x, labels=labels, num_classes=3, coupling="ot", label_dropout=0.3, time_law="early",
                       steps=1)
    trainer.fit()
    (batch,) = seen
    assert set(batch) == {"y", "coupling", "label_dropout", "generator", "time_law"}
    assert batch["coupling"] is trainer.coupling and batch["coupling"].name == "ot"
    assert batch["label_dropout"] == 0.3 and batch["generator"] is trainer.state.loss_generator
    assert batch["time_law"] == "early" and batch["y"].shape == (4,)


def test_training_draws_only_from_its_own_generators():
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    weights = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        torch.manual_seed(0)  # the same network initialisation ...
        trainer = fd.Trainer(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), x, steps=3, batch_size=8,
                             device="cpu", warmup=0)
        torch.manual_seed(global_seed)  # ... then a different global stream during training
        trainer.fit()
        weights.append(torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_the_logged_window_is_the_mean_loss_the_rate_and_the_time(monkeypatch):
    import types

    from flowdiff.learning.training import trainer as trainer_module

    # perf_counter: the window opens, closes at steps 2 and 4, the fit ends; a second fit to step 6
    clock = iter([100.0, 101.0, 105.0, 106.0, 200.0, 204.0, 205.0])
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    values = iter([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])

    def loss(model, path, x1, **batch):
        return model(x1, torch.zeros(x1.shape[0])).sum() * 0 + next(values)

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(loss, x, steps=6, lr_schedule="constant", lr=0.01, grad_clip=None)
    trainer.fit(until=4)
    assert trainer.state.elapsed == 6.0
    history = trainer.fit().history
    assert [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in history] == [
        (2, 1.5, 0.01, None), (4, 6.0, 0.01, None), (6, 24.0, 0.01, None)]
    assert [(r["steps_per_s"], r["elapsed_s"]) for r in history] == [(2.0, 1.0), (0.5, 5.0), (0.5, 10.0)]
    assert trainer.state.elapsed == 11.0


def test_hooks_see_the_error_that_ended_training_and_coupling_objects_are_kept():
    from flowdiff.learning.training.hooks import Hook
    from flowdiff.paths.couplings import get_coupling

    ended = []

    logged = []

    class Watcher(Hook):
        def on_end(self, trainer, error):
            ended.append(error)

        def on_log(self, trainer, record):
            logged.append((trainer, record["step"]))

    def failing(model, path, x1, **batch):
        raise ValueError("bad batch")

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    coupling = get_coupling("ot")
    trainer = _trainer(failing, x, hooks=[Watcher()], coupling=coupling)
    assert trainer.coupling is coupling
    with pytest.raises(ValueError, match="^bad batch$"):
        trainer.fit()
    assert isinstance(ended[0], ValueError) and str(ended[0]) == "bad batch"
    last = _trainer("flow_matching", x, hooks=[Watcher()], steps=1)
    last.fit()
    assert ended[1] is None and logged == [(last, 1)]


def test_minibatches_are_drawn_by_the_given_generator():
    from flowdiff.learning.training.batches import InMemoryData

    x, y = torch.arange(10.0).reshape(5, 2), torch.tensor([0, 1, 2, 0, 1])
    data = InMemoryData(x, y, Labelled(), torch.device("cpu"))
    assert len(data) == 5 and data.labelled
    x1, y1 = data.batch(7, torch.Generator().manual_seed(3))
    index = torch.randint(5, (7,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x1, x[index]) and torch.equal(y1, y[index])


def test_the_cosine_rate_reaches_the_optimizer_at_every_step():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    trainer = _trainer("flow_matching", x, lr=0.01, log_every=1)
    rates = [r["lr"] for r in trainer.fit().history]
    assert rates == [0.01 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]


def test_trainer_resolves_path_loss_coupling_prediction_and_warmup_from_its_settings():
    import numpy as np

    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    trainer = fd.Trainer(fd.models.MLP(2, hidden=(4,)), None, x, steps=3, warmup=100, batch_size=4, device="cpu",
                         schedule="cosine", time_law="early", coupling="ot")
    assert trainer.path.config() == fd.GaussianPath("cosine").config()
    assert torch.equal(trainer.data.x, torch.from_numpy(x)) and trainer.warmup == 2
    assert trainer.loss.config() == FlowMatching("early").config() and trainer.coupling.name == "ot"
    assert trainer.prediction == "velocity" and trainer.label_dropout == 0.0
    result = trainer.fit()
    assert result.stopped is False and result.step == 3

    def custom(model, path, x1, **batch):
        assert "time_law" not in batch  # the default law is not passed to a custom loss
        return model(x1, torch.zeros(x1.shape[0])).pow(2).mean()

    plain = fd.Trainer(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), x, steps=1, batch_size=4, device="cpu",
                       loss=custom)
    assert plain.prediction == "velocity" and plain.coupling.name == "independent"
    plain.fit()
    with raises_exactly(IncompatibleError, "path must be a GaussianPath or MixturePath, got str"):
        fd.Trainer(fd.models.MLP(2, hidden=(4,)), "linear", x, steps=1)
    with raises_exactly(IncompatibleError, "data must be a torch.Tensor or numpy array, got list"):
        fd.Trainer(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), x.tolist(), steps=1)


def test_in_memory_data_checks_converts_and_names_what_is_wrong():
    from flowdiff.learning.training.batches import InMemoryData

    cpu = torch.device("cpu")
    one = InMemoryData(torch.tensor([[1, 2]]), torch.tensor([2]), Labelled(), cpu)  # one integer point
    assert one.x.dtype == torch.float32 and one.x.tolist() == [[1.0, 2.0]] and one.y.tolist() == [2]
    for data, message in [(None, "training needs data: a tensor of shape (N, *shape)"),
                          (torch.zeros(3), "data must have shape (N, *shape) with N >= 1, got (3,)"),
                          (torch.zeros(0, 2), "data must have shape (N, *shape) with N >= 1, got (0, 2)"),
                          (torch.tensor([[float("nan"), 0.0]]),
                           "data contains NaN or inf values; clean or drop those rows first")]:
        with raises_exactly(InvalidInputError, message):
            InMemoryData(data, None, None, cpu)
    with raises_exactly(IncompatibleError, "data must be a torch.Tensor or numpy array, got list"):
        InMemoryData([[0.0, 1.0]], None, None, cpu)
    with raises_exactly(IncompatibleError, "labels must be a torch.Tensor or numpy array, got list"):
        InMemoryData(torch.zeros(2, 2), [0, 1], Labelled(), cpu)


def test_ema_defaults_and_edges():
    model = fd.models.MLP(2, hidden=(4,))
    ema = EMA(model)
    assert ema.decay == 0.999 and ema.warmup is True
    assert ema.num_updates.dtype == torch.long and int(ema.num_updates) == 0
    assert EMA(model, 0.0).decay == 0.0  # decay 0: the EMA is the network itself
    with raises_exactly(InvalidInputError, "EMA decay must lie in [0, 1), got 1.0"):
        EMA(model, 1.0)


def test_losses_check_the_point_shape_against_the_model():
    model = fd.models.MLP(3, hidden=(4,))
    with raises_exactly(InvalidInputError, "data points have shape (2,) but the model expects (3,)"):
        fd.flow_matching_loss(model, fd.GaussianPath(), torch.zeros(4, 2))


def test_a_float64_run_samples_on_a_float64_grid():
    """The grid is built in the dtype of the states: 0.1 is not rounded through float32 (0.10000000149)."""
    x0 = torch.ones(2, 1, dtype=torch.float64)
    seen = []
    traj = fd.sample(lambda x, t: -x, fd.GaussianPath(), x0=x0, steps=10, return_trajectory=True,
                     callback=lambda info: seen.append(info["t"]))
    want = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.equal(traj.times, want) and float(seen[0]) == 0.1
    given = torch.tensor([0.0, 0.1, 0.7, 1.0], dtype=torch.float64)
    assert torch.equal(fd.sample(lambda x, t: -x, fd.GaussianPath(), x0=x0, grid=given,
                                 return_trajectory=True).times, given)
    shifted = fd.sample(lambda x, t: -x, fd.GaussianPath(), x0=x0, steps=4, grid="shifted", return_trajectory=True)
    assert torch.equal(shifted.times, fd.grids.shifted(0.0, 1.0, 4, dtype=torch.float64))
    assert fd.sample(fd.models.MLP(2, hidden=(4,)), fd.GaussianPath(), n=3, steps=2, return_trajectory=True
                     ).times.dtype == torch.float32


# samplers: the noise scale, the hand-over's callback, joined trajectories, the ODE sampler's defaults


def test_noise_scale_values():
    from flowdiff.learning.sampling.builders import NoiseScale

    x, t = torch.zeros(3, 2, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64)
    timed = NoiseScale(lambda t: 2 * float(t))(x, t)
    assert timed.dtype == torch.float64 and float(timed) == 0.5
    assert NoiseScale(0.3)(x, t) == 0.3
    constant = NoiseScale(torch.tensor(0.5))
    assert isinstance(constant.sigma, float) and constant(x, t) == 0.5


def test_the_sde_callback_counts_steps_and_evaluations_through_the_hand_over():
    x0 = torch.ones(2, 1, dtype=torch.float64)
    seen = []
    traj = fd.sample(lambda x, t: -x, fd.GaussianPath(), x0=x0, steps=10, sigma=1.0, ode_tail=0.25,
                     generator=torch.Generator().manual_seed(0), return_trajectory=True,
                     callback=lambda info: seen.append((info["step"], info["nfe"])))
    # Euler–Maruyama to t = 0.7 (one drift call a step), then Euler: one call a step
    assert seen == [(k, k) for k in range(1, 11)] and traj.nfe == 10


def test_sde_trajectories_join_their_parts():
    from flowdiff.learning.sampling.builders import NoiseScale
    from flowdiff.learning.sampling.samplers import sde_sampler

    field = lambda x, t: -x  # noqa: E731
    ts = fd.grids.uniform(0, 1, 4, dtype=torch.float64)
    x0 = torch.ones(2, 1, dtype=torch.float64)
    for tail in (0.6, 0.3):  # one SDE step, then three
        full = sde_sampler(field, field, x0, ts, NoiseScale(1.0), "euler_maruyama", tail,
                           torch.Generator().manual_seed(0), "all")
        assert torch.equal(full.times, ts) and full.states.shape == (5, 2, 1) and full.nfe == 4
        final = sde_sampler(field, field, x0, ts, NoiseScale(1.0), "euler_maruyama", tail,
                            torch.Generator().manual_seed(0), "final")
        assert torch.equal(final.times, ts[-1:]) and torch.equal(final.states, full.states[-1:])


def test_the_ode_sampler_defaults_to_heun_and_the_final_state():
    from flowdiff.dynamics.equations import ODE
    from flowdiff.dynamics.simulate import simulate
    from flowdiff.learning.sampling.samplers import ode_sampler

    field = lambda x, t: -x * t  # noqa: E731
    ts = fd.grids.uniform(0, 1, 4, dtype=torch.float64)
    x0 = torch.ones(2, 1, dtype=torch.float64)
    seen = []
    got = ode_sampler(field, x0, ts, callback=lambda info: seen.append(info["step"]))
    want = simulate(ODE(field), x0, ts, "heun")
    assert torch.equal(got.states, want.states) and torch.equal(got.times, ts[-1:]) and got.nfe == 8
    assert seen == [1, 2, 3, 4]


def test_handover_index_on_a_uniform_grid():
    from flowdiff.learning.sampling.samplers import handover_index

    ts = fd.grids.uniform(0, 1, 10)  # 0, 0.1, ..., 1; ts[5] = 0.5 exactly
    for tail, index in ((0.0, 9), (0.02, 9), (0.15, 8), (0.5, 5), (0.95, 0), (1.0, 0)):
        assert handover_index(ts, tail) == index, tail


def test_sde_sampler_defaults_and_a_single_stochastic_step():
    from flowdiff.learning.sampling.builders import NoiseScale
    from flowdiff.learning.sampling.samplers import sde_sampler

    field = lambda x, t: -x  # noqa: E731
    ts = fd.grids.uniform(0, 1, 100, dtype=torch.float64)
    x0 = torch.ones(3, 1, dtype=torch.float64)
    default = sde_sampler(field, field, x0, ts, NoiseScale(1.0), generator=torch.Generator().manual_seed(0))
    explicit = sde_sampler(field, field, x0, ts, NoiseScale(1.0), "euler_maruyama", 0.02,
                           torch.Generator().manual_seed(0), "final")
    assert torch.equal(default.states, explicit.states) and torch.equal(default.times, ts[-1:])
    other_tail = sde_sampler(field, field, x0, ts, NoiseScale(1.0), "euler_maruyama", 0.5,
                             torch.Generator().manual_seed(0), "final")
    assert not torch.equal(other_tail.states, default.states)
    # hand-over at index 1: one Euler–Maruyama step (noisy), then noiseless Euler steps
    short = fd.grids.uniform(0, 1, 4, dtype=torch.float64)
    one = sde_sampler(field, field, x0, short, NoiseScale(1.0), "euler_maruyama", 0.6,
                      torch.Generator().manual_seed(0), "all")
    step = torch.randn((1, 3, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)[0]
    torch.testing.assert_close(one.states[1], x0 * 0.75 + 0.5 * step, rtol=1e-12, atol=1e-12)
    seen = []
    sde_sampler(field, field, x0, short, NoiseScale(1.0), "euler_maruyama", 1.0,
                torch.Generator().manual_seed(0), "final", lambda info: seen.append((info["step"], info["nfe"])))
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]  # no SDE part: counted from 0


def test_a_time_dependent_sigma_reaches_the_drift_and_the_noise():
    field = fd.MarginalField(fd.GaussianPath(), fd.Gaussian(torch.tensor([1.0], dtype=torch.float64), 0.25))
    x0 = torch.randn(4, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    timed = fd.sample(field, fd.GaussianPath(), x0=x0, steps=8, sigma=lambda t: 0.5 + 0.0 * float(t),
                      generator=torch.Generator().manual_seed(2))
    constant = fd.sample(field, fd.GaussianPath(), x0=x0, steps=8, sigma=0.5,
                         generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(timed, constant, rtol=1e-12, atol=1e-12)


def test_start_noise_is_standard_normal_from_the_generator():
    from flowdiff.learning.sampling import noise

    got = noise(4, (2, 3), torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(got, torch.randn((4, 2, 3), generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("prediction, wrapped, t_min", [
    ("velocity", False, 0.0), ("x1", False, 0.0), ("score", False, 1e-3), ("noise", False, 1e-3),
    ("velocity", True, 1e-3),
])
def test_sampling_starts_where_the_field_can_be_evaluated(prediction, wrapped, t_min):
    path = fd.GaussianPath()
    target = fd.Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.25)
    field = fd.MarginalField(path, target, prediction="score" if wrapped else prediction)
    if wrapped:  # a score network seen as a velocity says itself where it can start
        field = Converted(field, path, "score", "velocity")
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    traj = fd.sample(field, path, x0=x0, steps=4, prediction=prediction, return_trajectory=True)
    assert float(traj.times[0]) == t_min and float(traj.times[-1]) == 1.0


def test_time_grid_defaults_and_single_samples():
    from flowdiff.learning.sampling import time_grid

    assert torch.equal(time_grid("uniform", 4), fd.grids.uniform(0.0, 1.0, 4))
    with raises_exactly(InvalidInputError, "need 0 <= t_min < t_max <= 1, got t_min=0.5, t_max=0.5"):
        time_grid("uniform", 4, 0.5, 0.5)
    assert fd.sample(_MODEL, fd.GaussianPath(), n=1, steps=2).shape == (1, 2)
    with raises_exactly(InvalidInputError, "n must be a positive integer, got 2.5"):
        fd.sample(_MODEL, fd.GaussianPath(), n=2.5, steps=2)


def test_rademacher_hutchinson_is_exact_for_a_diagonal_jacobian():
    """eps^T diag(a) eps = sum a_i eps_i^2 = tr(a) for eps_i = +-1: no estimation error at all."""
    from flowdiff.learning.likelihood import log_prob

    x = torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    got = log_prob(_linear, fd.GaussianPath(), x, steps=50, divergence="hutchinson", probes=3,
                   probe_dist="rademacher", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, _linear_log_prob(x), rtol=0, atol=1e-10)
    gaussian = log_prob(_linear, fd.GaussianPath(), x, steps=50, divergence="hutchinson", probes=3,
                        probe_dist="gaussian", generator=torch.Generator().manual_seed(0))
    assert (gaussian - _linear_log_prob(x)).abs().min() > 1e-3
    with raises_exactly(InvalidInputError, "unknown probe_dist 'normal'; choose one of ('rademacher', 'gaussian')"):
        log_prob(_linear, fd.GaussianPath(), x, divergence="hutchinson", probe_dist="normal")
    with raises_exactly(InvalidInputError, "unknown divergence 'trace'; choose one of ('exact', 'hutchinson')"):
        log_prob(_linear, fd.GaussianPath(), x, divergence="trace")


def test_log_prob_integrates_down_to_where_the_field_starts():
    from flowdiff.learning.likelihood import log_prob

    path = fd.GaussianPath()
    target = fd.Gaussian(torch.tensor([1.0, -1.0], dtype=torch.float64), 0.25)
    velocity = fd.MarginalField(path, target, prediction="velocity")

    class Late:
        t_min = 1e-3

        def __call__(self, x, t):
            return velocity(x, t)

    x = torch.tensor([[0.7, -1.1], [0.2, 0.4]], dtype=torch.float64)
    converted = Converted(fd.MarginalField(path, target, prediction="score"), path, "score", "velocity")
    late = log_prob(Late(), path, x, steps=50)
    torch.testing.assert_close(log_prob(converted, path, x, steps=50), late, rtol=0, atol=1e-9)
    assert (log_prob(velocity, path, x, steps=50) - late).abs().min() > 1e-4  # t_min is not ignored


def test_learning_rate_edges():
    from flowdiff.learning.training.state import learning_rate

    assert learning_rate(5, 1.0, 10, 0) == 0.5 * (1 + math.cos(math.pi * 0.5))  # cosine by default
    assert learning_rate(2, 1.0, 2, 1) == 0.0  # one step after the warm-up: progress 1
    assert learning_rate(15, 1.0, 10, 0) == 0.0  # past the end: progress clamped at 1
    assert learning_rate(0, 0.5, 10, 4) == 0.5 / 4 and learning_rate(4, 0.5, 10, 4, "constant") == 0.5


def test_loss_input_messages_and_the_draws_of_a_batch():
    path = fd.GaussianPath()
    model = fd.models.MLP(2, hidden=(4,))
    for x1 in (torch.zeros(3), torch.zeros(0, 2)):
        with raises_exactly(InvalidInputError, f"x1 must be a batch of shape (batch, *shape), got {tuple(x1.shape)}"):
            fd.flow_matching_loss(lambda x, t: x, path, x1)
    with raises_exactly(IncompatibleError, "labels y were given but the model is unconditional (num_classes=None)"):
        fd.flow_matching_loss(lambda x, t: x, path, torch.zeros(2, 2), y=torch.tensor([0, 1]))
    with raises_exactly(IncompatibleError, "label_dropout needs labels y (it replaces labels by the null label)"):
        fd.flow_matching_loss(model, path, torch.zeros(2, 2), label_dropout=0.1)
    for t_min, t_max in ((0.5, 0.5), (0.0, 1.5)):
        with raises_exactly(InvalidInputError, f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}"):
            fd.flow_matching_loss(model, path, torch.zeros(2, 2), t_min=t_min, t_max=t_max)
    with raises_exactly(InvalidInputError, "unknown time law 'late'; choose one of: uniform, early"):
        fd.flow_matching_loss(model, path, torch.zeros(2, 2), time_law="late")
    x1 = torch.randn(1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # a batch of one
    s, _ = path_batch(lambda x, t: x, path, x1, generator=torch.Generator().manual_seed(4))
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn((1, 3), generator=generator, dtype=torch.float64)  # x0 ~ N(0, I) first, then t ~ U[0, 1]
    t = torch.rand((1,), generator=generator, dtype=torch.float64)
    assert torch.equal(s.noise, noise) and torch.equal(s.t, t) and s.x_t.dtype == torch.float64


def test_sampling_inputs_of_every_form():
    x0 = torch.ones(3, 2)
    field = lambda x, t: -x  # noqa: E731
    assert fd.sample(field, fd.GaussianPath(), n=3, x0=x0, steps=2).shape == (3, 2)
    assert fd.sample(field, fd.GaussianPath(), x0=torch.ones(3), steps=2).shape == (3,)  # points of shape ()
    two = fd.sample(field, fd.GaussianPath(), x0=x0, grid=torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(two, fd.sample(field, fd.GaussianPath(), x0=x0, steps=1))
    model = fd.MarginalField(fd.GaussianPath(), fd.Gaussian(torch.tensor([1.0, -1.0]), 0.25))
    ode = fd.sample(model, fd.GaussianPath(), x0=x0, steps=4)
    assert torch.equal(fd.sample(model, fd.GaussianPath(), x0=x0, steps=4, sigma=torch.tensor(0.0)), ode)
    noisy = fd.sample(model, fd.GaussianPath(), x0=x0, steps=4, sigma=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fd.sample(model, fd.GaussianPath(), x0=x0, steps=4, sigma=torch.tensor(1.0),
                                 generator=torch.Generator().manual_seed(1)), noisy)
    zero = fd.sample(model, fd.GaussianPath(), x0=x0, steps=4, sigma=lambda t: 0.0 * t,
                     generator=torch.Generator().manual_seed(1))  # a callable may be 0: an SDE with no noise
    torch.testing.assert_close(zero, fd.sample(model, fd.GaussianPath(), x0=x0, steps=4, solver="euler"))


def test_labels_reach_the_model_as_long_and_unguided_fields_are_the_model():
    from flowdiff.learning.sampling import guided_field

    model = Recorder()
    fd.sample(model, fd.GaussianPath(), x0=torch.ones(2, 2), steps=1, solver="euler",
              y=torch.tensor([1, 2], dtype=torch.int32))
    assert model.calls[-1]["y"].dtype == torch.long and model.calls[-1]["y"].tolist() == [1, 2]
    assert guided_field(model, torch.tensor([1])).model is model
    assert guided_field(model, None, 1.0).model is model and guided_field(model, None).cond == {}


def test_velocity_by_default_an_explicit_device_and_sigma_checked_in_float64():
    from flowdiff.learning.predictions import as_velocity
    from flowdiff.learning.sampling.builders import check_sigma

    model = fd.models.MLP(2, hidden=(4,))
    assert as_velocity(model, fd.GaussianPath()) is model
    x = fd.sample(model, fd.GaussianPath(), n=2, steps=2, device="cpu", generator=torch.Generator().manual_seed(0))
    assert x.device == torch.device("cpu") and x.shape == (2, 2)
    ts = fd.grids.uniform(0, 1, 4)
    assert check_sigma(lambda t: 1e39, ts) is True  # finite in float64 (inf in float32)
    with raises_exactly(InvalidInputError, "sigma(t) must be finite and >= 0 at every time of the grid"):
        check_sigma(lambda t: -1e-50, ts)  # negative in float64 (-0.0 in float32)


def test_builders_return_the_asked_dtype_and_dropout_is_strictly_below_p():
    from flowdiff.learning.sampling import noise, time_grid

    grid = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert time_grid(grid, 2, dtype=torch.float32).dtype == torch.float32
    got = noise(3, (2,), torch.Generator().manual_seed(0), "cpu", torch.float64)
    assert torch.equal(got, torch.randn((3, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    # a label is dropped when its uniform draw u < p: p equal to the first draw keeps the first label
    u = torch.rand((4,), generator=torch.Generator().manual_seed(9))
    dropped = drop_labels(torch.tensor([0, 1, 2, 0]), 3, float(u[0]), torch.Generator().manual_seed(9))
    assert int(dropped[0]) == 0 and dropped.tolist() == torch.where(u < u[0], 3, torch.tensor([0, 1, 2, 0])).tolist()


def test_the_likelihood_is_integrated_on_a_grid_of_the_data_dtype():
    from flowdiff.learning.likelihood import log_prob

    seen = []

    def field(x, t):
        seen.append(float(t[0]))
        return x * A

    log_prob(field, fd.GaussianPath(), torch.zeros(1, 2, dtype=torch.float64), steps=10, solver="euler")
    assert seen == torch.linspace(1.0, 0.0, 11, dtype=torch.float64)[:-1].tolist()
