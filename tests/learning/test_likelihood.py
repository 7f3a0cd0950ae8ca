"""log_prob against analytic log-densities: Gaussian-to-Gaussian flows and Gaussian-mixture marginals."""

from __future__ import annotations

import math

import pytest
import torch

from flowdiff import GaussianMixture, GaussianPath
from flowdiff.dynamics.densities import Gaussian
from flowdiff.dynamics.solvers import Dopri5
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.likelihood import bits_per_dim, log_prob
from flowdiff.paths.marginals import MarginalField

F64 = torch.float64


def rotation_3d(a: float, b: float) -> torch.Tensor:
    """A rotation about the z axis by a, then about the x axis by b."""
    rz = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=F64)
    rx = torch.tensor([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]], dtype=F64)
    return rx @ rz


class GaussianFlow:
    """The marginal velocity of the linear path x_t = t z + (1 - t) eps with z ~ N(mu, Sigma).

    p_t = N(t mu, V_t), V_t = t^2 Sigma + (1 - t)^2 I, and
    u_t(x) = mu + (t Sigma - (1 - t) I) V_t^-1 (x - t mu): the time derivative of the mean plus
    (1/2) dV_t/dt V_t^-1 applied to x - t mu.
    """

    def __init__(self, mu: torch.Tensor, cov: torch.Tensor) -> None:
        self.mu, self.cov = mu, cov
        self.data_shape = (mu.shape[0],)

    def jacobian(self, t: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.mu.shape[0], dtype=F64)
        t = t.reshape(-1, 1, 1)
        v = t**2 * self.cov + (1 - t) ** 2 * eye
        return (t * self.cov - (1 - t) * eye) @ torch.linalg.inv(v)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1).expand(x.shape[0])
        centred = x - t[:, None] * self.mu
        return self.mu + torch.einsum("bij,bj->bi", self.jacobian(t), centred)


@pytest.fixture(scope="module")
def gaussian_case():
    mu = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    rotation = rotation_3d(0.6, 0.9)
    cov = rotation @ torch.diag(torch.tensor([0.25, 2.0, 0.7], dtype=F64)) @ rotation.T
    target = Gaussian(mu, cov)
    x = target.sample(64, torch.Generator().manual_seed(0)).to(F64)
    return GaussianFlow(mu, cov), target, x


@pytest.fixture(scope="module")
def mixture_case():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], dtype=F64)
    mixture = GaussianMixture(means, torch.tensor([0.3, 0.5, 0.2], dtype=F64), torch.tensor([0.5, 0.3, 0.2]))
    x = mixture.sample(48, torch.Generator().manual_seed(1)).to(F64)
    return mixture, x


PATH = GaussianPath("linear")


@pytest.mark.parametrize(
    "solver, steps",
    [("midpoint", 100), ("heun", 100), ("rk4", 40), (Dopri5(rtol=1e-8, atol=1e-8), 1)],
    ids=["midpoint", "heun", "rk4", "dopri5"],
)
def test_gaussian_flow_matches_analytic_density(gaussian_case, solver, steps):
    field, target, x = gaussian_case
    error = (log_prob(field, PATH, x, steps=steps, solver=solver) - target.log_prob(x)).abs().max()
    assert error < 1e-3


def test_euler_is_first_order_on_the_gaussian_flow(gaussian_case):
    """Euler's error halves when the steps double (slope 1 of log error against log steps)."""
    field, target, x = gaussian_case
    errors = [
        (log_prob(field, PATH, x, steps=n, solver="euler") - target.log_prob(x)).abs().max().item()
        for n in (100, 200, 400)
    ]
    slopes = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(0.9 < s < 1.1 for s in slopes), slopes
    assert errors[-1] < 0.03  # error ~ C / steps with C < 12: about 12000 steps reach 1e-3


def test_mixture_marginal_field_matches_mixture_density(mixture_case):
    mixture, x = mixture_case
    for schedule, solver, steps in (
        ("linear", "rk4", 50),
        ("linear", Dopri5(rtol=1e-7, atol=1e-7), 1),
        ("cosine", "rk4", 50),
    ):
        path = GaussianPath(schedule)
        field = MarginalField(path, mixture)
        error = (log_prob(field, path, x, steps=steps, solver=solver) - mixture.log_prob(x)).abs().max()
        assert error < 1e-3, (schedule, solver)


def test_score_predicting_field_is_converted_to_velocity(mixture_case):
    mixture, x = mixture_case
    field = MarginalField(PATH, mixture, prediction="x1")
    error = (log_prob(field, PATH, x, steps=50) - mixture.log_prob(x)).abs().max()
    assert error < 1e-3


def test_conditional_density_with_labels(mixture_case):
    """log p(x | y = c) is the mixture restricted to the components of class c, renormalised."""
    mixture, x = mixture_case
    labels = torch.tensor([0, 1, 1])
    field = MarginalField(PATH, mixture, labels=labels)
    y = torch.ones(x.shape[0], dtype=torch.long)
    keep = labels == 1
    conditional = GaussianMixture(mixture.means[keep], mixture.covs[keep], mixture.weights[keep])
    error = (log_prob(field, PATH, x, steps=50, y=y) - conditional.log_prob(x)).abs().max()
    assert error < 1e-3


def matrix_log(spd: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(spd)
    return vectors @ torch.diag(values.log()) @ vectors.T


@pytest.mark.parametrize("probe_dist", ["rademacher", "gaussian"])
@pytest.mark.parametrize("probes", [1, 8])
def test_hutchinson_is_unbiased_with_the_predicted_variance(gaussian_case, probe_dist, probes):
    """For the linear Gaussian flow the Jacobian J_t does not depend on x, so the estimate is
    log p(x) + eps^T M eps / K - tr M with M = -int_0^1 J_t dt = -(1/2) log Sigma (matrix log).
    Its variance per sample is 2 sum_{i != j} M_ij^2 / K (Rademacher) or 2 |M|_F^2 / K (Gaussian).
    With N samples the mean error has standard error sqrt(var / N): we allow 4 of them. The sample
    variance has standard error sqrt((m4 - var^2) / N) (m4: the fourth central moment, measured):
    we allow 4 of those.
    """
    field, target, _ = gaussian_case
    n = 400
    x = target.sample(n, torch.Generator().manual_seed(2)).to(F64)
    generator = torch.Generator().manual_seed(3)
    estimate = log_prob(
        field,
        PATH,
        x,
        steps=20,
        divergence="hutchinson",
        probes=probes,
        probe_dist=probe_dist,
        generator=generator,
    )
    errors = estimate - target.log_prob(x)
    m = -0.5 * matrix_log(field.cov)
    off_diagonal = m - torch.diag(m.diagonal())
    per_probe = 2 * (off_diagonal**2).sum() if probe_dist == "rademacher" else 2 * (m**2).sum()
    variance = float(per_probe) / probes
    assert abs(float(errors.mean())) < 4 * math.sqrt(variance / n)
    centred = errors - errors.mean()
    fourth = float(centred.pow(4).mean())
    assert abs(float(centred.pow(2).mean()) - variance) < 4 * math.sqrt(max(fourth - variance**2, 0.0) / n)


def test_hutchinson_on_mixture_within_monte_carlo_error(mixture_case):
    """Mean error over N samples within 4 empirical standard errors sd / sqrt(N) of 0."""
    mixture, _ = mixture_case
    x = mixture.sample(300, torch.Generator().manual_seed(4)).to(F64)
    field = MarginalField(PATH, mixture)
    errors = log_prob(
        field,
        PATH,
        x,
        steps=25,
        divergence="hutchinson",
        probes=2,
        generator=torch.Generator().manual_seed(5),
    ) - mixture.log_prob(x)
    assert abs(float(errors.mean())) < 4 * float(errors.std()) / math.sqrt(x.shape[0])


def test_same_generator_seed_gives_the_same_estimate(mixture_case):
    mixture, x = mixture_case
    field = MarginalField(PATH, mixture)
    values = [
        log_prob(
            field, PATH, x, steps=10, divergence="hutchinson", generator=torch.Generator().manual_seed(7)
        )
        for _ in range(2)
    ]
    assert torch.equal(values[0], values[1])


def test_scaled_data_adds_the_log_jacobian(gaussian_case):
    """A model of x_model = (x - m) / s gives p(x) = p_model((x - m) / s) / prod s."""
    field, target, x_model = gaussian_case
    mean = torch.tensor([3.0, -1.0, 0.0], dtype=F64)
    std = torch.tensor([2.0, 0.5, 4.0], dtype=F64)
    x = mean + std * x_model
    cov = torch.diag(std) @ target.cov.to(F64) @ torch.diag(std)
    data_density = Gaussian(mean + std * target.mean.to(F64), cov)
    expected = data_density.log_prob(x)
    for scale in ((mean, std), {"mean": mean.tolist(), "std": std.tolist()}):
        error = (log_prob(field, PATH, x, steps=40, scale=scale) - expected).abs().max()
        assert error < 1e-3


class LinearField(torch.nn.Module):
    """u(x, t) = A x + b, a float32 network: div u = tr A and x_0 = e^{-A}(x + A^-1 b) - A^-1 b."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.3, -0.4], [0.2, 0.5]]))
            self.linear.bias.copy_(torch.tensor([0.1, -0.2]))
        self.data_shape = (2,)

    def forward(self, x, t):
        return self.linear(x)


def test_network_in_float32_against_the_closed_form():
    model = LinearField()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    a, b = model.linear.weight.detach().to(F64), model.linear.bias.detach().to(F64)
    shift = torch.linalg.solve(a, b)
    x0 = (x + shift) @ torch.linalg.matrix_exp(-a).T - shift
    expected = -0.5 * (x0.pow(2).sum(1) + 2 * math.log(2 * math.pi)) - torch.trace(a)
    value = log_prob(model, PATH, x, steps=20)
    assert value.dtype == torch.float32 and value.shape == (32,)
    assert (value.to(F64) - expected).abs().max() < 1e-4


def test_bits_per_dim_of_the_uniform_density_is_eight():
    """The uniform density on [-1, 1]^D (log p = -D log 2) spreads 256 levels evenly: 8 bits."""
    dims = 12
    assert torch.allclose(bits_per_dim(torch.tensor([-dims * math.log(2.0)]), dims), torch.tensor([8.0]))
    assert torch.allclose(bits_per_dim(torch.tensor([0.0]), dims, data_range=1.0), torch.tensor([8.0]))


def test_bad_input(mixture_case):
    mixture, x = mixture_case
    field = MarginalField(PATH, mixture)
    with pytest.raises(InvalidInputError, match="model takes"):
        log_prob(field, PATH, torch.zeros(4, 3, dtype=F64))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        log_prob(field, PATH, bad)
    with pytest.raises(InvalidInputError, match="probes"):
        log_prob(field, PATH, x, divergence="hutchinson", probes=0)
    with pytest.raises(IncompatibleError, match="SDE"):
        log_prob(field, PATH, x, solver="euler_maruyama")
    with pytest.raises(InvalidInputError, match="divergence"):
        log_prob(field, PATH, x, divergence="trace")
    with pytest.raises(InvalidInputError, match="unknown solver"):
        log_prob(field, PATH, x, solver="rk45")
    with pytest.raises(InvalidInputError, match="steps"):
        log_prob(field, PATH, x, steps=0)
    with pytest.raises(InvalidInputError, match="scale"):
        log_prob(field, PATH, x, scale=(0.0, -1.0))
