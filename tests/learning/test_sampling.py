"""`sample`: ODE and SDE sampling through the exact marginal field, options and bad input."""

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError

MEAN, STD = torch.tensor([1.0, -2.0]), 0.5
SCHEDULES = ["linear", "cosine", "vp"]


def gaussian_field(schedule, prediction="velocity"):
    path = fd.GaussianPath(schedule)
    return path, fd.MarginalField(path, fd.Gaussian(MEAN, STD**2), prediction=prediction)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_ode_carries_each_point_along_the_exact_gaussian_flow(schedule):
    """For p_data = N(m, s^2 I) the flow is x_t = alpha_t m + sigma_t xi, sigma_t^2 = alpha^2 s^2 + beta^2."""
    path, field = gaussian_field(schedule)
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    s0 = path.schedule(torch.tensor(0.0))
    xi = (x0 - s0.alpha * MEAN) / (s0.alpha**2 * STD**2 + s0.beta**2).sqrt()
    x1 = fd.sample(field, path, x0=x0, steps=100, solver="rk4")  # VP's d alpha / dt ~ 10 at t = 0 is stiff
    torch.testing.assert_close(x1, MEAN + STD * xi, rtol=0, atol=2e-5)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("sigma, solver", [(1.0, "euler_maruyama"), (1.0, "stochastic_heun"), (0.5, None)])
def test_sde_samples_have_the_target_mean_and_variance(schedule, sigma, solver):
    path, field = gaussian_field(schedule)
    n = 20_000
    x = fd.sample(
        field, path, n=n, steps=100, sigma=sigma, solver=solver, generator=torch.Generator().manual_seed(1)
    )
    # Standard errors: STD / sqrt(n) = 0.0035 for the mean, STD^2 sqrt(2 / n) = 0.0025 for the variance;
    # 5 of them (the 100-step discretisation bias measured below 1 SE).
    assert (x.mean(0) - MEAN).abs().max() < 5 * STD / n**0.5
    assert (x.var(0) - STD**2).abs().max() < 5 * STD**2 * (2 / n) ** 0.5


@pytest.mark.parametrize("prediction", ["score", "x1", "noise"])
def test_every_prediction_type_samples_through_the_path(prediction):
    """A field predicting the score, data or noise samples like a velocity field (after conversion)."""
    path, field = gaussian_field("linear", prediction)
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(2))
    # Score/noise predictions lose the information at t = 0 (alpha_0 = 0) and x1 at t = 1 (beta_1 = 0),
    # so start slightly after the noise end / stop the conversion's amplification near the end.
    reference = fd.sample(gaussian_field("linear")[1], path, x0=x0, steps=40, t_min=1e-3)
    x = fd.sample(field, path, x0=x0, steps=40, prediction=prediction, t_min=1e-3)
    torch.testing.assert_close(x, reference, rtol=0, atol=1e-3)
    sde = fd.sample(field, path, n=4000, steps=100, sigma=1.0, prediction=prediction, t_min=1e-3)
    assert (sde.mean(0) - MEAN).abs().max() < 5 * STD / 4000**0.5


def test_trajectories_grids_and_seeds():
    path, field = gaussian_field("linear")
    g = torch.Generator().manual_seed(3)
    traj = fd.sample(field, path, n=7, steps=10, return_trajectory=True, generator=g)
    assert traj.states.shape == (11, 7, 2) and torch.allclose(traj.times, fd.grids.uniform(0, 1, 10))
    assert traj.nfe == 20  # heun: 2 evaluations a step
    sde = fd.sample(field, path, n=7, steps=10, sigma=1.0, return_trajectory=True, generator=g)
    assert sde.states.shape == (11, 7, 2) and torch.allclose(sde.times, fd.grids.uniform(0, 1, 10))
    for sigma in (0.0, 1.0):
        a = fd.sample(field, path, n=5, steps=8, sigma=sigma, generator=torch.Generator().manual_seed(4))
        b = fd.sample(field, path, n=5, steps=8, sigma=sigma, generator=torch.Generator().manual_seed(4))
        c = fd.sample(field, path, n=5, steps=8, sigma=sigma, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b) and not torch.equal(a, c)
    for grid in ("shifted", "rho", torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])):
        traj = fd.sample(field, path, n=3, steps=6, grid=grid, return_trajectory=True, generator=g)
        assert float(traj.times[0]) == 0.0 and float(traj.times[-1]) == 1.0
    one_step = fd.sample(field, path, n=3, steps=1, sigma=1.0, return_trajectory=True, generator=g)
    assert one_step.states.shape == (2, 3, 2)  # a single (noiseless) Euler step


def test_the_sde_hands_over_to_the_ode_for_the_tail():
    path, field = gaussian_field("linear")
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(7))
    euler = fd.sample(field, path, x0=x0, steps=10, solver="euler")
    # ode_tail = 1: no stochastic step at all, the Euler ODE from x0.
    torch.testing.assert_close(fd.sample(field, path, x0=x0, steps=10, sigma=1.0, ode_tail=1.0), euler)
    # ode_tail = 0.25 on a 10-step grid: noise up to t = 0.7, then 3 noiseless Euler steps. The same
    # generator on the grid 0..0.8 with ode_tail = 0 (noise to 0.7, one Euler step), then Euler to 1.
    seed = 8
    out = fd.sample(
        field, path, x0=x0, steps=10, sigma=1.0, ode_tail=0.25, generator=torch.Generator().manual_seed(seed)
    )
    ts = fd.grids.uniform(0, 1, 10)
    head = fd.sample(
        field,
        path,
        x0=x0,
        grid=ts[:9],
        sigma=1.0,
        ode_tail=0.0,
        generator=torch.Generator().manual_seed(seed),
    )
    torch.testing.assert_close(out, fd.sample(field, path, x0=head, grid=ts[8:], solver="euler"))
    assert not torch.allclose(out, euler)
    with pytest.raises(InvalidInputError, match="ode_tail"):
        fd.sample(field, path, x0=x0, steps=4, sigma=1.0, ode_tail=-0.1)


def test_labels_for_the_exact_conditional_field():
    path = fd.GaussianPath("linear")
    target = fd.GaussianMixture([[-4.0, 0.0], [4.0, 0.0]], 0.25)
    field = fd.MarginalField(path, target, labels=[0, 1])
    x = fd.sample(field, path, n=200, y=1, steps=20, generator=torch.Generator().manual_seed(6))
    assert (x[:, 0] > 0).all()
    y = torch.tensor([0, 1] * 50)
    x = fd.sample(field, path, y=y, steps=20, generator=torch.Generator().manual_seed(6))
    assert x.shape == (100, 2) and torch.equal((x[:, 0] > 0).long(), y)


def test_bad_input_raises_clear_errors():
    path = fd.GaussianPath()
    model = fd.models.MLP(2, hidden=(8,), time_dim=8)
    conditional = fd.models.MLP(2, hidden=(8,), num_classes=3, time_dim=8)
    cases = [
        (InvalidInputError, "positive", dict(model=model, n=0)),
        (InvalidInputError, "number of samples", dict(model=model)),
        (InvalidInputError, "unknown grid", dict(model=model, n=2, grid="cosine")),
        (InvalidInputError, "increase", dict(model=model, n=2, grid=torch.tensor([1.0, 0.5, 0.0]))),
        (InvalidInputError, "unknown solver", dict(model=model, n=2, solver="leapfrog")),
        (IncompatibleError, "SDE", dict(model=model, n=2, solver="euler_maruyama")),
        (IncompatibleError, "ODE", dict(model=model, n=2, solver="heun", sigma=1.0)),
        (InvalidInputError, "sigma", dict(model=model, n=2, sigma=-1.0)),
        (InvalidInputError, "sigma", dict(model=model, n=2, sigma=lambda t: -t)),
        (IncompatibleError, "unconditional", dict(model=model, n=2, y=1)),
        (IncompatibleError, "labels", dict(model=conditional, n=2, guidance=2.0)),
        (InvalidInputError, "labels must lie", dict(model=conditional, n=2, y=7)),
        (InvalidInputError, "shape", dict(model=conditional, n=3, y=torch.tensor([0, 1]))),
        (InvalidInputError, "x0", dict(model=model, n=3, x0=torch.zeros(2, 2))),
        (InvalidInputError, "unknown prediction", dict(model=model, n=2, prediction="eps")),
        (InvalidInputError, "t_min", dict(model=model, n=2, t_min=0.5, t_max=0.4)),
    ]
    for error, match, kwargs in cases:
        with pytest.raises(error, match=match):
            fd.sample(path=path, steps=2, **kwargs)
    with pytest.raises(InvalidInputError, match="steps"):
        fd.sample(model, path, n=2, steps=0)
    assert fd.sample(conditional, path, n=3, y=3, steps=2).shape == (3, 2)  # the null label is allowed


def test_samples_that_become_non_finite_are_an_error_not_a_result():
    """A field that blows up (here u = 1e20 x; in practice absurd guidance or a diverged network) drives the
    float32 samples to inf within a few steps: say so instead of returning them."""

    class Exploding(torch.nn.Module):
        data_shape = (2,)

        def forward(self, x, t):
            return 1e20 * x

    with pytest.raises(InvalidInputError, match=r"samples became NaN or inf \(steps=8, sigma=0.0, guidance=1.0\)"):
        fd.sample(Exploding(), fd.GaussianPath(), n=16, steps=8, generator=torch.Generator().manual_seed(0))
