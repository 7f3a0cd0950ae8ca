"""The Euler CTMC sampler: its step law against the exact per-step transition matrix, categorical draws
against their probabilities (standard errors), and its refusals of bad input."""

import math

import pytest
import torch

from flowdiff.dynamics.ctmc import categorical, ctmc_euler, euler_jump
from flowdiff.errors import InvalidInputError


def two_state_rates(a: float, b: float):
    """A token flips 0 -> 1 at rate a and 1 -> 0 at rate b (rates of the other state; the own entry ignored)."""

    def rates(x, t):
        table = torch.tensor([[7.0, a], [b, 7.0]], dtype=torch.float64)  # the diagonal 7 must be ignored
        return table[x]

    return rates


def test_euler_ctmc_matches_the_product_of_its_exact_step_matrices():
    """n Euler steps of length h are the Markov chain with step matrix [[e^-ah, 1-e^-ah], [1-e^-bh, e^-bh]]."""
    a, b, steps, n = 1.5, 0.5, 8, 40_000
    h = 1.0 / steps
    step = torch.tensor([[math.exp(-a * h), 1 - math.exp(-a * h)], [1 - math.exp(-b * h), math.exp(-b * h)]],
                        dtype=torch.float64)
    exact = torch.linalg.matrix_power(step, steps)[0, 1].item()
    x0 = torch.zeros(n // 4, 4, dtype=torch.long)
    traj = ctmc_euler(two_state_rates(a, b), x0, torch.linspace(0, 1, steps + 1), torch.Generator().manual_seed(0))
    frequency = traj.final.double().mean().item()
    assert traj.final.dtype == torch.long and traj.nfe == steps
    assert abs(frequency - exact) < 4 * math.sqrt(exact * (1 - exact) / n)
    # and the Euler chain is close to the exact CTMC law a/(a+b) (1 - exp(-(a+b) t)): within (a+b)^2 h^2 / 2
    # per step (the chance of two jumps in one step, which the Euler step ignores), times the steps
    ctmc = a / (a + b) * (1 - math.exp(-(a + b)))
    assert abs(exact - ctmc) < steps * (a + b) ** 2 * h**2 / 2


def test_save_all_and_callback_report_every_step():
    seen = []
    traj = ctmc_euler(two_state_rates(1.0, 1.0), torch.zeros(5, 3, dtype=torch.long), torch.linspace(0, 1, 4),
                      torch.Generator().manual_seed(1), save="all", callback=seen.append)
    assert traj.states.shape == (4, 5, 3) and [s["nfe"] for s in seen] == [1, 2, 3]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_categorical_frequencies_match_the_probabilities(dtype):
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]) * 2.0  # unnormalised, with an impossible outcome
    n = 50_000
    draws = categorical(probs.expand(n, -1), torch.Generator().manual_seed(2), dtype)
    frequency = torch.bincount(draws, minlength=5).double() / n
    p = probs.double() / probs.sum()
    assert frequency[4] == 0
    assert bool(((frequency - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-12).all())


def test_a_jump_never_lands_on_the_current_state_and_zero_rates_never_jump():
    x = torch.randint(0, 3, (200, 4), generator=torch.Generator().manual_seed(3))
    rate = torch.ones(200, 4, 3)
    moved = euler_jump(x, rate, 50.0, torch.Generator().manual_seed(4))  # h * rate so large that all jump
    assert bool((moved != x).all())
    assert torch.equal(euler_jump(x, torch.zeros(200, 4, 3), 1.0, torch.Generator()), x)


def test_same_seed_same_path():
    run = lambda: ctmc_euler(two_state_rates(2.0, 1.0), torch.zeros(50, 2, dtype=torch.long),  # noqa: E731
                             torch.linspace(0, 1, 6), torch.Generator().manual_seed(5)).final
    assert torch.equal(run(), run())


@pytest.mark.parametrize("bad, message", [
    (dict(x0=torch.zeros(4, 2)), "integer tensor"),
    (dict(ts=torch.tensor([1.0, 0.0])), "forwards"),
    (dict(categorical_dtype="float16"), "categorical dtype"),
    (dict(rates=lambda x, t: -torch.ones(*x.shape, 2)), ">= 0"),
    (dict(rates=lambda x, t: torch.ones(3, 2)), "shape"),
])
def test_bad_input_is_refused_in_one_line(bad, message):
    args = dict(rates=two_state_rates(1.0, 1.0), x0=torch.zeros(4, 2, dtype=torch.long), ts=torch.linspace(0, 1, 3))
    args.update(bad)
    with pytest.raises(InvalidInputError, match=message):
        ctmc_euler(args.pop("rates"), args.pop("x0"), args.pop("ts"), torch.Generator(), **args)
