"""The factorised mixture path: kappa schedules, the path's draws, and the posterior-to-rate conversion
checked by the Kolmogorov forward equation d p_t / dt = p_t Q_t on a law over every sequence of L = 2
tokens from K = 3 (all states enumerable), and by simulating the CTMC (marginals within standard errors)."""

import itertools
import math

import pytest
import torch

from flowdiff.dynamics.ctmc import ctmc_euler
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.paths.discrete import KAPPAS, MixturePath, exact_posterior

K, L = 3, 2
SUPPORT = torch.tensor(list(itertools.product(range(K), repeat=L)))
WEIGHTS = torch.tensor([0.30, 0.05, 0.0, 0.10, 0.20, 0.05, 0.0, 0.05, 0.25], dtype=torch.float64)
"""A joint law of two tokens with dependence and impossible pairs."""


def all_states(path: MixturePath) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(path.num_states), repeat=L)))


def marginal_probs(path: MixturePath, states: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """p_t(x) = sum_x1 p(x1) prod_i p_t(x_i | x1_i) for every state x (float64, differentiable in t)."""
    conditional = path.conditional_probs(SUPPORT, t.expand(len(SUPPORT)))  # (M, L, S)
    likelihood = torch.stack([conditional[:, i, states[:, i]] for i in range(L)]).prod(0)  # (M, N)
    return WEIGHTS @ likelihood


def generator_matrix(path: MixturePath, states: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Q_t[x, x'] = u_t(x'_i | x) when x' differs from x in one position i; rows sum to zero."""
    rates = path.rates(exact_posterior(path, SUPPORT, WEIGHTS, states, t), states, t)
    S, n = path.num_states, len(states)
    index = {tuple(s.tolist()): k for k, s in enumerate(states)}
    Q = torch.zeros(n, n, dtype=torch.float64)
    for k, x in enumerate(states.tolist()):
        for i, a in itertools.product(range(L), range(S)):
            if a != x[i]:
                Q[k, index[tuple(x[:i] + [a] + x[i + 1:])]] = rates[k, i, a]
    return Q - torch.diag(Q.sum(1))


@pytest.mark.parametrize("source", ["mask", "uniform"])
@pytest.mark.parametrize("kappa", ["linear", "polynomial", "cosine"])
def test_the_rates_carry_the_path_kolmogorov_forward_equation(source, kappa):
    path = MixturePath(K, source, kappa)
    states = all_states(path)
    for time in (0.05, 0.3, 0.6, 0.9):
        t = torch.tensor(time, dtype=torch.float64, requires_grad=True)
        p = marginal_probs(path, states, t)
        (dp_dt,) = torch.autograd.grad(p, t, torch.eye(len(p), dtype=torch.float64), is_grads_batched=True)
        flow = p.detach() @ generator_matrix(path, states, t.detach())
        assert torch.allclose(flow, dp_dt, atol=1e-12), (time, (flow - dp_dt).abs().max())
        assert abs(p.sum().item() - 1) < 1e-12


def euler_step_matrix(path: MixturePath, states: torch.Tensor, t: float, h: float) -> torch.Tensor:
    """The exact transition matrix of one Euler step: each token independently stays w.p. exp(-h lambda_i),
    else moves to a w.p. u(a) / lambda_i."""
    t = torch.tensor(t, dtype=torch.float64)
    rates = path.rates(exact_posterior(path, SUPPORT, WEIGHTS, states, t), states, t)
    rates = rates.scatter(-1, states[..., None], 0.0)
    total = rates.sum(-1, keepdim=True)
    stay = torch.exp(-h * total)
    per_token = (1 - stay) * rates / total.clamp_min(1e-300)
    per_token = per_token.scatter(-1, states[..., None], stay)  # (N, L, S): law of the token after the step
    return torch.stack([per_token[:, i, states[:, i]] for i in range(L)]).prod(0)  # (N, N)


def euler_law(path: MixturePath, states: torch.Tensor, steps: int, until: float = 0.5) -> torch.Tensor:
    law = marginal_probs(path, states, torch.tensor(0.0, dtype=torch.float64))
    for k in range(steps):
        law = law @ euler_step_matrix(path, states, k * until / steps, until / steps)
    return law


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_simulated_ctmc_follows_its_euler_law_which_tends_to_the_kappa_mixture(source):
    """From x_0 ~ p_0, 50 Euler steps of the exact rates to t = 0.5: every state's frequency lies within 4.5
    standard errors of the Euler chain's exact law, and that law tends to the path's marginal p_0.5 at first
    order in the step (the Euler step lets two tokens jump at once, which the CTMC does not)."""
    path, n, steps = MixturePath(K, source), 8_000, 50
    states = all_states(path)
    rates = lambda x, t: path.rates(exact_posterior(path, SUPPORT, WEIGHTS, x, t), x, t)  # noqa: E731
    generator = torch.Generator().manual_seed(0)
    x0 = path.sample_source((n, L), generator)
    final = ctmc_euler(rates, x0, torch.linspace(0, 0.5, steps + 1), generator).final
    frequency = torch.bincount(final[:, 0] * path.num_states + final[:, 1], minlength=len(states)).double() / n
    p = euler_law(path, states, steps)
    assert bool(((frequency - p).abs() <= 4.5 * (p * (1 - p) / n).sqrt() + 1e-12).all())
    exact = marginal_probs(path, states, torch.tensor(0.5, dtype=torch.float64))
    tv = [0.5 * (euler_law(path, states, m) - exact).abs().sum().item() for m in (25, 50, 100)]
    assert tv[0] > tv[1] > tv[2] and 1.6 < tv[0] / tv[1] < 2.4 and 1.6 < tv[1] / tv[2] < 2.4, tv


@pytest.mark.parametrize("name", list(KAPPAS))
def test_kappa_schedules_run_from_zero_to_one_with_their_derivative_and_inverse(name):
    kappa = KAPPAS[name]()
    t = torch.linspace(0, 1, 11, dtype=torch.float64, requires_grad=True)
    values = kappa(t)
    (derivative,) = torch.autograd.grad(values.kappa.sum(), t)
    assert values.kappa[0] == 0 and abs(values.kappa[-1].item() - 1) < 1e-15
    assert torch.allclose(values.d_kappa, derivative, atol=1e-12)
    assert torch.allclose(kappa.inverse(values.kappa.detach()), t.detach(), atol=1e-7)


def test_path_draws_keep_the_data_token_with_probability_kappa():
    path, n = MixturePath(5, "uniform", {"name": "polynomial", "n": 2.0}), 40_000
    x1 = torch.full((n, 1), 4)
    draw = path.sample(x1, torch.tensor(0.6), torch.Generator().manual_seed(1))
    p = 0.36 + 0.64 / 5  # kappa + (1 - kappa) / K
    assert abs((draw.x_t == 4).double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)
    masked = MixturePath(5, "mask").sample(x1, torch.tensor(0.25), torch.Generator().manual_seed(2)).x_t
    assert set(masked.unique().tolist()) == {4, 5}


def test_the_path_refuses_bad_input():
    with pytest.raises(InvalidInputError, match="vocab_size"):
        MixturePath(1)
    with pytest.raises(InvalidInputError, match="source"):
        MixturePath(4, "gaussian")
    with pytest.raises(InvalidInputError, match="0..3"):
        MixturePath(4).sample(torch.tensor([[0, 4]]), torch.tensor(0.5))
    with pytest.raises(InvalidInputError, match="integer"):
        MixturePath(4).sample(torch.tensor([[0.0, 1.0]]), torch.tensor(0.5))
    with pytest.raises(IncompatibleError, match="posterior"):
        MixturePath(4).rates(torch.ones(1, 2, 4), torch.zeros(1, 2, dtype=torch.long), torch.tensor(0.5))
