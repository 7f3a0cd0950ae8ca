"""The kappa schedules and the mixture path's contracts beyond the Kolmogorov check: d kappa / dt against
finite differences for several exponents, the exponent's range, cosine's inverse at rounded ends, configs
that rebuild, explicit source tokens, reproducible draws, float64 closed forms and rate conservation."""

import math

import pytest
import torch

from flowdiff.errors import InvalidInputError
from flowdiff.paths.discrete import KAPPAS, CosineKappa, LinearKappa, MixturePath, PolynomialKappa, exact_posterior
from flowdiff.registry import build


@pytest.mark.parametrize("kappa", [PolynomialKappa(3.0), PolynomialKappa(1.5), PolynomialKappa(1),
                                   CosineKappa(), LinearKappa()])
def test_d_kappa_is_the_central_difference_of_kappa(kappa):
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    eps = 1e-6
    difference = (kappa(t + eps).kappa - kappa(t - eps).kappa) / (2 * eps)
    torch.testing.assert_close(kappa(t).d_kappa, difference, rtol=1e-8, atol=1e-9)


def test_polynomial_kappa_is_t_to_the_n_with_n_two_by_default():
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    assert torch.equal(PolynomialKappa()(t).kappa, t * t)
    torch.testing.assert_close(PolynomialKappa(3)(t).d_kappa, 3 * t * t)
    assert PolynomialKappa(1)(t).kappa.tolist() == t.tolist()


@pytest.mark.parametrize("n", [0.5, 0.0, -2.0, math.inf, math.nan, True, "2", None])
def test_polynomial_kappa_refuses_an_exponent_outside_one_to_infinity(n):
    with pytest.raises(InvalidInputError, match=r"^the kappa exponent n must be a finite number >= 1, got "):
        PolynomialKappa(n)


def test_cosine_inverse_maps_kappa_rounded_past_the_ends_into_zero_one():
    kappa = torch.tensor([-1e-12, 0.0, 1.0, 1.0 + 1e-12], dtype=torch.float64)
    assert CosineKappa().inverse(kappa).tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("kappa, config", [
    ("linear", {"name": "linear"}), ("cosine", {"name": "cosine"}),
    ({"name": "polynomial", "n": 3}, {"name": "polynomial", "n": 3.0}),
])
def test_configs_name_the_schedule_and_rebuild_the_path(kappa, config):
    path = MixturePath(6, "uniform", kappa)
    assert path.kappa.config() == config
    assert path.config() == {"name": "mixture", "vocab_size": 6, "source": "uniform", "kappa": config}
    again = MixturePath(**{k: v for k, v in path.config().items() if k != "name"})
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    assert torch.equal(again.kappa(t).kappa, path.kappa(t).kappa) and repr(again) == repr(path)
    assert type(build(KAPPAS, config, "kappa")) is type(path.kappa)


def test_the_path_takes_a_kappa_object_and_the_smallest_vocabulary():
    kappa = PolynomialKappa(4.0)
    assert MixturePath(2, "uniform", kappa).kappa is kappa and MixturePath(2).num_states == 3


@pytest.mark.parametrize("vocab_size", [1, 4.0, "3", True])
def test_the_path_refuses_a_vocabulary_that_is_not_an_integer_from_two(vocab_size):
    with pytest.raises(InvalidInputError, match=r"^vocab_size must be an integer >= 2, got "):
        MixturePath(vocab_size)


def test_the_path_names_what_it_refuses():
    with pytest.raises(InvalidInputError, match=r"^unknown source 'gaussian'; choose one of: mask, uniform$"):
        MixturePath(4, "gaussian")
    with pytest.raises(InvalidInputError, match=r"^unknown kappa schedule 'exp'; choose one of: linear, "):
        MixturePath(4, "mask", "exp")
    with pytest.raises(InvalidInputError, match=r"^unknown kappa schedule <object"):
        MixturePath(4, "mask", object())
    for x1 in (torch.tensor([0, 1]), [[0, 1]], torch.zeros(2, 2)):
        with pytest.raises(InvalidInputError, match=r"^data tokens must be an integer tensor of shape \(batch, L\)$"):
            MixturePath(4).sample(x1, torch.tensor(0.5))


def test_source_from_uniform_is_floor_k_u_within_the_vocabulary():
    path = MixturePath(4, "uniform")
    u = torch.tensor([[0.0, 0.2499, 0.25, 0.99, 1.0]])
    assert path.source_from_uniform(u).tolist() == [[0, 0, 1, 3, 3]]
    assert MixturePath(4, "mask").source_from_uniform(u).tolist() == [[4] * 5]


def test_draws_are_reproducible_from_the_generator_and_work_without_one():
    path = MixturePath(7, "uniform")
    x1 = torch.randint(0, 7, (64, 8), generator=torch.Generator().manual_seed(0))
    one = path.sample(x1, torch.tensor(0.5), torch.Generator().manual_seed(1))
    two = path.sample(x1, torch.tensor(0.5), torch.Generator().manual_seed(1))
    assert torch.equal(one.x_t, two.x_t) and torch.equal(one.x0, two.x0)
    assert torch.equal(path.sample_source((5, 3), torch.Generator().manual_seed(2)),
                       path.sample_source((5, 3), torch.Generator().manual_seed(2)))
    free = path.sample(x1, torch.tensor(0.5))
    assert free.x_t.shape == x1.shape and free.x0.shape == x1.shape


def test_a_draw_returns_the_source_it_used_and_honours_a_given_one():
    path = MixturePath(5, "uniform")
    x1 = torch.randint(0, 5, (200, 6), generator=torch.Generator().manual_seed(3))
    draw = path.sample(x1, torch.tensor(0.4), torch.Generator().manual_seed(4))
    from_source = draw.x_t != x1
    assert bool(from_source.any()) and torch.equal(draw.x_t[from_source], draw.x0[from_source])
    x0 = (x1 + 1) % 5
    given = path.sample(x1, torch.tensor(0.0), x0=x0, uniform=torch.zeros(200, 6))
    assert torch.equal(given.x_t, x0) and torch.equal(given.x0, x0)  # kappa_0 = 0: no data token, even at u = 0


def test_a_draw_keeps_a_floating_time_and_turns_an_integer_time_into_one():
    path, x1 = MixturePath(3), torch.zeros(4, 2, dtype=torch.long)
    t64 = torch.tensor(0.3, dtype=torch.float64)
    assert path.sample(x1, t64).t.dtype == torch.float64 and path.sample(x1, t64).t.tolist() == [0.3] * 4
    at_one = path.sample(x1, torch.tensor(1))
    assert at_one.t.dtype == torch.get_default_dtype() and torch.equal(at_one.x_t, x1)


@pytest.mark.parametrize("source", ["mask", "uniform"])
def test_conditional_probs_are_the_float64_closed_form_at_a_python_time(source):
    path, t = MixturePath(3, source, "cosine"), 0.3
    kappa = 1 - math.cos(math.pi / 2 * t)
    x1 = torch.tensor([[0, 2]])
    p0 = [0.0, 0.0, 0.0, 1.0] if source == "mask" else [1 / 3] * 3
    expected = [[[(1 - kappa) * p0[a] + kappa * (a == x) for a in range(path.num_states)] for x in (0, 2)]]
    probs = path.conditional_probs(x1, t)
    assert probs.dtype == torch.float64
    torch.testing.assert_close(probs, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)


def test_rates_are_the_float64_conversion_and_conserve_probability():
    # u(a | x) = dk / (1 - k) (p(a) - delta_{x_i}(a)): rows sum to zero, leaving the current state at a rate <= 0
    path, t = MixturePath(3, "mask", "cosine"), 0.3
    scale = (math.pi / 2 * math.sin(math.pi / 2 * t)) / math.cos(math.pi / 2 * t)
    posterior = torch.tensor([[[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.7, 0.0]]], dtype=torch.float64)
    x = torch.tensor([[3, 2]])  # the second position holds no mask token, so one_hot must know S
    rates = path.rates(posterior, x, t)
    expected = posterior.clone()
    expected[0, 0, 3] -= 1
    expected[0, 1, 2] -= 1
    torch.testing.assert_close(rates, scale * expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(rates.sum(-1), torch.zeros(1, 2, dtype=torch.float64), rtol=0, atol=1e-15)
    assert path.rates(posterior, torch.tensor([[0, 1]]), t).shape == (1, 2, 4)


def test_exact_posterior_is_bayes_rule_at_a_python_time():
    # two sequences of length 1 over K = 2 with the mask source: x = mask tells nothing, x = 1 tells all
    path, t = MixturePath(2, "mask", "cosine"), 0.3
    support, weights = torch.tensor([[0], [1]]), torch.tensor([0.25, 0.75])
    posterior = exact_posterior(path, support, weights, torch.tensor([[2], [1]]), t)
    torch.testing.assert_close(posterior, torch.tensor([[[0.25, 0.75, 0.0]], [[0.0, 1.0, 0.0]]],
                                                       dtype=torch.float64), rtol=0, atol=1e-15)
    # uniform source: p(x1 | x = 0) is proportional to w(x1) ((1 - k)/2 + k [x1 = 0])
    uniform = MixturePath(2, "uniform", "cosine")
    kappa = 1 - math.cos(math.pi / 2 * t)
    like = [(1 - kappa) / 2 + kappa, (1 - kappa) / 2]
    p = [0.25 * like[0], 0.75 * like[1]]
    got = exact_posterior(uniform, support, weights, torch.tensor([[0]]), t)
    torch.testing.assert_close(got, torch.tensor([[[p[0] / sum(p), p[1] / sum(p)]]], dtype=torch.float64),
                               rtol=0, atol=1e-15)
