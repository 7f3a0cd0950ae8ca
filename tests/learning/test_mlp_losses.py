"""The MLP vector field and the flow- and score-matching losses."""

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.losses import LOSSES, FlowMatching, ScoreMatching, get_loss
from flowdiff.learning.models import MLP, build_model
from flowdiff.learning.predictions import Converted


def test_mlp_shapes_and_times():
    model = MLP(3, hidden=(32, 32), time_dim=16)
    x = torch.randn(5, 3)
    assert model.data_shape == (3,) and model.num_classes is None
    out = model(x, torch.rand(5))
    assert out.shape == (5, 3)
    torch.testing.assert_close(model(x, torch.tensor(0.3)), model(x, torch.full((5,), 0.3)))
    torch.testing.assert_close(model(x, 0.3), model(x, torch.tensor([0.3])))
    assert not torch.allclose(model(x, 0.1), model(x, 0.9))  # the time embedding matters


def test_mlp_labels_and_the_null_label():
    model = MLP(2, hidden=(32,), num_classes=4, time_dim=16)
    x, t = torch.randn(6, 2), torch.rand(6)
    assert model.num_classes == 4 and model.null_label == 4
    torch.testing.assert_close(model(x, t), model(x, t, y=torch.full((6,), 4)))  # None = null label
    a, b = model(x, t, y=torch.zeros(6, dtype=torch.long)), model(x, t, y=torch.ones(6, dtype=torch.long))
    assert not torch.allclose(a, b)
    with pytest.raises(IncompatibleError, match="unconditional"):
        MLP(2)(x, t, y=torch.zeros(6, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="shape"):
        model(torch.randn(6, 3), t)


def test_mlp_config_rebuilds_the_same_network():
    model = MLP(2, hidden=(16, 8), num_classes=3, time_dim=8, activation="gelu")
    config = model.config()
    assert config == {
        "name": "mlp",
        "dim": 2,
        "hidden": [16, 8],
        "num_classes": 3,
        "time_dim": 8,
        "activation": "gelu",
    }
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict())
    x, t, y = torch.randn(4, 2), torch.rand(4), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(rebuilt(x, t, y=y), model(x, t, y=y))
    assert fd.models.MLP is MLP and "mlp" in fd.models.MODELS
    with pytest.raises(InvalidInputError, match="unknown model"):
        build_model({"name": "transformer"})
    with pytest.raises(InvalidInputError):
        build_model({"name": "mlp", "dim": 2, "depth": 3})
    for bad in (
        dict(dim=0),
        dict(dim=2, hidden=()),
        dict(dim=2, activation="swish"),
        dict(dim=2, num_classes=0),
    ):
        with pytest.raises(InvalidInputError):
            MLP(**bad)


class Recorder(torch.nn.Module):
    """A linear field that remembers the inputs it was called with."""

    def __init__(self, dim=2, num_classes=None):
        super().__init__()
        self.data_shape, self.num_classes = (dim,), num_classes
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append((x, t, y))
        return self.weight * x


def test_flow_matching_loss_is_the_mse_to_the_conditional_velocity():
    path = fd.GaussianPath("cosine")
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) + 3
    model = Recorder()
    loss = fd.flow_matching_loss(model, path, x1, generator=torch.Generator().manual_seed(1))
    # Same draws by hand: noise first, then times.
    g = torch.Generator().manual_seed(1)
    x0, t = torch.randn(64, 2, generator=g), torch.rand(64, generator=g)
    sample = path.sample(x1, t, noise=x0)
    x_t, t_seen, _ = model.calls[0]
    torch.testing.assert_close(x_t, sample.x_t)
    torch.testing.assert_close(t_seen, t)
    torch.testing.assert_close(loss, sample.velocity.pow(2).mean())
    loss.backward()
    assert model.weight.grad is not None and torch.isfinite(model.weight.grad)


def test_the_marginal_field_minimises_both_losses():
    """E|f - target|^2 = E|f - E[target | x_t]|^2 + const: the exact marginal field beats a perturbed one."""
    path, mixture = fd.GaussianPath("linear"), fd.GaussianMixture.symmetric_2d(3, 0.5, 3.0)
    x1 = mixture.sample(4096, torch.Generator().manual_seed(2))
    for loss_fn, kind in ((fd.flow_matching_loss, "velocity"), (fd.score_matching_loss, "score")):
        exact = fd.MarginalField(path, mixture, prediction=kind)

        def shifted(x, t, field=exact):
            return field(x, t) + 0.3

        losses = [
            float(loss_fn(f, path, x1, generator=torch.Generator().manual_seed(3))) for f in (exact, shifted)
        ]
        # Same draws, so the difference is 0.09 lambda-weighted plus a cross term 0.6 mean(lambda (f - tgt))
        # of mean zero (f is E[target | x_t]) and standard error <= 0.6 sqrt(loss / (n d)). The weight's mean
        # is 1 (FM) or E[beta_t^2] = 1/3 (DSM, linear path), whose sample mean has standard error
        # sqrt((1/5 - 1/9) / n) = 0.0047. Allow 5 standard errors of each.
        expected, weight_se = (0.09, 0.0) if kind == "velocity" else (0.09 / 3, 0.09 * 0.0047)
        se = 0.6 * (losses[0] / (4096 * 2)) ** 0.5
        assert abs(losses[1] - losses[0] - expected) < 5 * (se + weight_se)


def test_score_matching_noise_weighting_is_noise_prediction():
    path = fd.GaussianPath("linear")
    x1 = torch.randn(32, 2, generator=torch.Generator().manual_seed(4))
    net = MLP(2, hidden=(16,), time_dim=8)
    score_model = Converted(net, path, "noise", "score")
    loss = fd.score_matching_loss(
        score_model, path, x1, generator=torch.Generator().manual_seed(5), t_max=0.99
    )
    g = torch.Generator().manual_seed(5)
    eps, t = torch.randn(32, 2, generator=g), 0.99 * torch.rand(32, generator=g)
    x_t = path.sample(x1, t, noise=eps).x_t
    torch.testing.assert_close(loss, (net(x_t, t) - eps).pow(2).mean())
    uniform = fd.score_matching_loss(score_model, path, x1, generator=g, weighting="uniform", t_max=0.99)
    assert torch.isfinite(uniform)
    with pytest.raises(InvalidInputError, match="weighting"):
        fd.score_matching_loss(score_model, path, x1, weighting="snr")


def test_label_dropout_replaces_labels_with_the_null_label_at_the_given_rate():
    path, n, p = fd.GaussianPath(), 20_000, 0.3
    x1, y = torch.randn(n, 2), torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(6))
    for dropout in (0.0, p, 1.0):
        model = Recorder(num_classes=3)
        fd.flow_matching_loss(
            model, path, x1, y=y, label_dropout=dropout, generator=torch.Generator().manual_seed(7)
        )
        seen = model.calls[0][2]
        null = seen == 3
        # Kept labels are unchanged; the dropped fraction is Binomial(n, p) / n, standard error
        # sqrt(p (1 - p) / n) = 0.0032: allow 5 of them.
        assert torch.equal(seen[~null], y[~null])
        assert abs(float(null.float().mean()) - dropout) <= 5 * (dropout * (1 - dropout) / n) ** 0.5


def test_losses_with_couplings_labels_and_seeds():
    path = fd.GaussianPath()
    g = torch.Generator().manual_seed(8)
    model = MLP(2, hidden=(32,), num_classes=2, time_dim=8)
    x1, y = torch.randn(128, 2, generator=g), torch.randint(0, 2, (128,), generator=g)
    for coupling in (None, "independent", "ot", "sinkhorn", fd.couplings.MinibatchOT()):
        for loss_fn in (fd.flow_matching_loss, fd.score_matching_loss):
            a = loss_fn(
                model,
                path,
                x1,
                y=y,
                coupling=coupling,
                label_dropout=0.2,
                generator=torch.Generator().manual_seed(1),
            )
            b = loss_fn(
                model,
                path,
                x1,
                y=y,
                coupling=coupling,
                label_dropout=0.2,
                generator=torch.Generator().manual_seed(1),
            )
            c = loss_fn(
                model,
                path,
                x1,
                y=y,
                coupling=coupling,
                label_dropout=0.2,
                generator=torch.Generator().manual_seed(2),
            )
            assert a.ndim == 0 and torch.isfinite(a) and float(a) == float(b) != float(c)
    a.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_loss_errors_and_registry():
    path = fd.GaussianPath()
    with pytest.raises(IncompatibleError, match="unconditional"):
        fd.flow_matching_loss(MLP(2), path, torch.randn(4, 2), y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(IncompatibleError, match="label_dropout"):
        fd.flow_matching_loss(MLP(2, num_classes=2), path, torch.randn(4, 2), label_dropout=0.1)
    with pytest.raises(InvalidInputError, match="shape"):
        fd.flow_matching_loss(MLP(2), path, torch.randn(4, 3))
    with pytest.raises(InvalidInputError, match="probability"):
        fd.flow_matching_loss(
            MLP(2, num_classes=2), path, torch.randn(4, 2), y=torch.zeros(4).long(), label_dropout=2
        )
    with pytest.raises(InvalidInputError, match="t_min"):
        fd.flow_matching_loss(MLP(2), path, torch.randn(4, 2), t_min=0.5, t_max=0.2)
    with pytest.raises(InvalidInputError, match="unknown loss"):
        get_loss("l1")


def test_loss_objects_carry_their_hyperparameters_and_prediction():
    """A loss object equals its function with the same hyperparameters, on the same random draws."""
    path, x1 = fd.GaussianPath(), torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = MLP(2, hidden=(16,))
    for loss, function, options in [
        (get_loss("flow_matching", time_law="early"), fd.flow_matching_loss, {"time_law": "early"}),
        (get_loss({"name": "score_matching", "weighting": "uniform", "t_max": 0.9}), fd.score_matching_loss,
         {"weighting": "uniform", "t_max": 0.9}),
    ]:
        got = loss(model, path, x1, generator=torch.Generator().manual_seed(2))
        want = function(model, path, x1, generator=torch.Generator().manual_seed(2), **options)
        assert torch.equal(got, want)
        assert get_loss(loss.config()).config() == loss.config()
    assert isinstance(get_loss("flow_matching"), FlowMatching) and get_loss("flow_matching").prediction == "velocity"
    assert get_loss("score_matching").prediction == "score" and isinstance(get_loss("score_matching"), ScoreMatching)
    assert {name: LOSSES[name]().prediction for name in LOSSES} == {"flow_matching": "velocity",
                                                                     "score_matching": "score",
                                                                     "stable_target": "velocity",
                                                                     "meanflow": "velocity", "imeanflow": "velocity",
                                                                     "shortcut": "velocity"}
    with pytest.raises(InvalidInputError, match="unknown time law"):
        FlowMatching(time_law="late")
    with pytest.raises(InvalidInputError, match="weighting"):
        ScoreMatching(weighting="snr")


def test_early_time_law_has_density_two_times_one_minus_t():
    """time_law="early": t = 1 - sqrt(1 - u) has density 2 (1 - t), mean 1/3, variance 1/18."""
    from flowdiff.learning.losses import TIME_LAWS

    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = TIME_LAWS["early"](u)
    n = t.numel()
    # 4 standard errors of the sample mean (sd sqrt(1/18)) and of the sample variance
    # (sd of (t - mean)^2 is sqrt(m4 - var^2) with m4 = 1/135 for this law)
    assert abs(float(t.mean()) - 1 / 3) < 4 * (1 / 18) ** 0.5 / n**0.5
    assert abs(float(t.var()) - 1 / 18) < 4 * (1 / 135 - (1 / 18) ** 2) ** 0.5 / n**0.5
    assert float(t.min()) >= 0 and float(t.max()) <= 1
