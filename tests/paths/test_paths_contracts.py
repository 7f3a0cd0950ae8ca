"""The contracts of layer 2 that the mathematical tests leave open: exact error messages, documented
defaults, reproducible draws, dtypes, the singular (rank-1) conversion and the coupling's branches.
(Found by mutation testing: each test pins down behaviour that a changed line would alter.)"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.paths import couplings
from flowdiff.paths.couplings import MinibatchOT, get_coupling
from flowdiff.paths.gaussian_path import _divide, expand_time
from flowdiff.paths.marginals import (
    _beta_d_beta,
    marginal_log_prob,
    marginal_terms,
    marginal_velocity,
    predict_from_terms,
)
from flowdiff.paths.schedules import VP, Polynomial, Schedule, ScheduleValues, get_schedule

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def raises_exactly(error: type, message: str):
    """pytest.raises matching the whole message, not a part of it."""
    return pytest.raises(error, match="^" + re.escape(message) + "$")


def same(actual, expected) -> None:
    """Equal in value and dtype, to the last bit."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_error_messages():
    mixture = fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]])
    path = fd.GaussianPath()
    with raises_exactly(InvalidInputError, "Polynomial exponent n must be a finite number >= 1, got 0.5 "
                        "(for n < 1, d alpha_t / dt = n t^(n-1) is infinite at t = 0)"):
        Polynomial(0.5)
    with raises_exactly(InvalidInputError, "need 0 <= beta_min < beta_max, got 1.0, 1.0"):
        VP(beta_min=1.0, beta_max=1.0)
    with raises_exactly(InvalidInputError, "t must be 0-d or of shape (batch,), got (4, 1)"):
        expand_time(torch.zeros(4, 1), torch.zeros(4, 2))
    with raises_exactly(InvalidInputError, "t must be 0-d or have 4 entries, got shape (3,)"):
        marginal_velocity(path, mixture, torch.zeros(4, 2), torch.zeros(3))
    wrong_size = "x must have shape (batch, ...) with 2 numbers per point, got (4, 3)"
    with raises_exactly(InvalidInputError, wrong_size):
        marginal_velocity(path, mixture, torch.zeros(4, 3), 0.5)
    predictions = "('velocity', 'score', 'x1', 'noise')"
    with raises_exactly(InvalidInputError, f"unknown prediction 'eps'; choose one of {predictions}"):
        fd.MarginalField(path, mixture, prediction="eps")
    bad_labels = "labels must give a class >= 0 for each of the 2 components, got [0]"
    terms = marginal_terms(path, mixture, torch.zeros(2, 2), 0.5)
    with raises_exactly(InvalidInputError, f"unknown prediction 'eps'; choose one of {predictions}"):
        predict_from_terms(terms, torch.full((2, 2), 0.5, dtype=F64), "eps")
    with raises_exactly(InvalidInputError, "covariances must broadcast to (2, 2, 2), got (5, 7)"):
        fd.GaussianMixture([[0.0, 0.0], [1.0, 1.0]], torch.ones(5, 7))
    with raises_exactly(InvalidInputError, bad_labels):
        fd.MarginalField(path, mixture, labels=[0])
    unlabelled = "labels y were given to a MarginalField built without component labels"
    with raises_exactly(IncompatibleError, unlabelled):
        fd.MarginalField(path, mixture)(torch.zeros(2, 2), 0.5, y=0)
    with raises_exactly(InvalidInputError, "labels y must have shape (4,), got (3,)"):
        couplings.Independent()(torch.zeros(4, 2), torch.zeros(4, 2), y=torch.zeros(3))
    with raises_exactly(InvalidInputError, "unknown OT method 'greedy'; choose 'exact' or 'sinkhorn'"):
        MinibatchOT(method="greedy")
    with raises_exactly(InvalidInputError, "Sinkhorn regularisation reg must be > 0, got 0.0"):
        MinibatchOT(reg=0.0)
    # Every cost equal to the largest: exp(-1 / reg) underflows to 0 and the plan is NaN.
    with raises_exactly(InvalidInputError, "Sinkhorn failed (non-finite plan) with reg=1e-300; "
                        "use a larger reg or method='exact'"):
        MinibatchOT("sinkhorn", reg=1e-300).sinkhorn_plan(np.ones((2, 2)))


def test_defaults_reprs_and_configs():
    assert Polynomial().n == 2.0 and VP().beta_max == 20.0 and MinibatchOT().reg == 0.05
    assert repr(Polynomial(3)) == "Polynomial(n=3.0)"
    assert repr(VP()) == "VP(beta_min=0.1, beta_max=20.0, min_beta=0.0001)"
    assert repr(MinibatchOT()) == "MinibatchOT(method='exact', reg=0.05, replace=False)"
    assert fd.GaussianPath().config() == {"schedule": {"name": "linear"}, "min_scale": 1e-4}
    assert get_schedule("polynomial", n=3.0).n == 3.0 and VP(beta_min=0.0).beta_min == 0.0
    ot = MinibatchOT()
    assert get_coupling(ot) is ot and get_coupling("ot", reg=0.2).reg == 0.2


def test_times_keep_the_precision_and_shape_of_the_state():
    x = torch.zeros(4, 2, dtype=F64)
    assert float(fd.GaussianPath().values(0.3, x).alpha) == 0.3  # not float32's 0.30000001
    same(expand_time(torch.tensor([0.5]), x), torch.tensor([[0.5]], dtype=F64))
    times = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    same(expand_time(times, x), times[:, None])


def test_path_draws_are_the_generators_normals():
    path = fd.GaussianPath(fd.schedules.Cosine())
    same(path.sample_noise((3, 2), gen(1), dtype=F64), torch.randn(3, 2, generator=gen(1), dtype=F64))
    assert path.sample_noise((3, 2)).shape == (3, 2)  # no generator: torch's global one
    z, t = torch.randn(5, 2, generator=gen(2), dtype=F64), torch.linspace(0.1, 0.9, 5, dtype=F64)
    drawn = path.sample(z, t, generator=gen(3))
    eps = torch.randn(5, 2, generator=gen(3), dtype=F64)
    s = path.values(t, z)
    same(drawn.noise, eps)
    same(drawn.x_t, s.alpha * z + s.beta * eps)
    assert drawn.t is t and drawn.x1 is z


class Proportional(Schedule):
    """A (non-monotone) schedule whose rows (alpha, beta) and (d_alpha, d_beta) are proportional at all t."""

    def __call__(self, t):
        one = torch.ones_like(torch.as_tensor(t))
        return ScheduleValues(alpha=0.5 * one, beta=0.25 * one, d_alpha=1.5 * one, d_beta=0.75 * one)


def test_a_singular_velocity_conversion_is_the_pseudo_inverse():
    # [[alpha, beta], [d_alpha, d_beta]] = [[0.5, 0.25], [1.5, 0.75]] has determinant 0 and rank 1: the
    # conversion gives the Moore–Penrose solution (z, eps) = A^+ (x, v).
    path = fd.GaussianPath(Proportional())
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    v = torch.tensor([[3.0, 0.5]], dtype=F64)
    pinv = torch.linalg.pinv(torch.tensor([[0.5, 0.25], [1.5, 0.75]], dtype=F64))
    solution = pinv @ torch.stack([x[0], v[0]])  # rows: z, eps
    for target, expected in [("x1", solution[:1]), ("noise", solution[1:])]:
        converted = path.convert(v, x, 0.5, "velocity", target)
        torch.testing.assert_close(converted, expected, rtol=1e-15, atol=1e-15)


def test_division_stops_only_below_the_smallest_normal_number():
    tiny = torch.finfo(torch.float32).tiny
    divisor = torch.tensor([tiny, tiny / 2, 0.0, -tiny])
    same(_divide(torch.full((4,), 0.5), divisor), torch.tensor([0.5 / tiny, 0.0, 0.0, -0.5 / tiny]))


def test_vp_beta_times_d_beta_near_and_at_the_data_end():
    # beta_t d beta_t / dt = -alpha_t d alpha_t / dt exactly for VP (beta^2 = 1 - alpha^2); below
    # beta_t = 1e-4 it comes from differences of beta_t^2 (error O(h^2), h = 1e-6), also for a batch of times.
    vp = fd.GaussianPath(VP())
    t = torch.tensor([1.0, 1 - 1e-8, 0.5, 1.0 - 1e-9], dtype=F64)
    s = vp.schedule(t)
    s = ScheduleValues(*(v.reshape(-1, 1) for v in (s.alpha, s.beta, s.d_alpha, s.d_beta)))
    assert bool((s.beta[[1, 3]] < 1e-4).all())
    torch.testing.assert_close(_beta_d_beta(vp, t, s), -s.alpha * s.d_alpha, rtol=1e-6, atol=0)
    mixture = fd.GaussianMixture([[0.0, 1.0], [2.0, -1.0]], 0.5)
    x = torch.randn(4, 2, generator=gen(4), dtype=F64)
    one_by_one = torch.cat([marginal_velocity(vp, mixture, x[i:i + 1], t[i]) for i in range(4)])
    torch.testing.assert_close(marginal_velocity(vp, mixture, x, t), one_by_one, rtol=1e-12, atol=1e-12)


def test_marginals_are_float64_inside_and_in_the_dtype_of_x_outside():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0], [1.0, 1.0]])
    mixture = fd.GaussianMixture(means, 0.5, weights=[0.2, 0.3, 0.5])
    path = fd.GaussianPath("cosine")
    x = torch.randn(6, 2, generator=gen(5), dtype=F64)
    t = 0.4
    a, b = math.sin(math.pi * t / 2), math.cos(math.pi * t / 2)
    weights = mixture.weights.to(F64)  # the float32 weights, each taken exactly
    var = a**2 * 0.5 + b**2
    diff = x[:, None, :] - a * mixture.means.to(F64)[None]
    log_n = -0.5 * (diff**2).sum(-1) / var - math.log(2 * math.pi * var)
    expected = torch.logsumexp(torch.log(weights) + log_n, dim=1)
    torch.testing.assert_close(marginal_log_prob(path, mixture, x, t), expected, rtol=1e-14, atol=1e-14)
    x32 = x.float()
    assert marginal_log_prob(path, mixture, x32, t).dtype == torch.float32
    assert marginal_velocity(path, mixture, x32, t).dtype == torch.float32
    assert fd.MarginalField(path, mixture)(x32, t).dtype == torch.float32
    # A float32 time is taken exactly (as the float64 number it is), and computed with in float64.
    t32 = torch.tensor(t)
    torch.testing.assert_close(marginal_log_prob(path, mixture, x, t32),
                               marginal_log_prob(path, mixture, x, t32.double()), rtol=1e-15, atol=1e-15)


def test_sinkhorn_plan_is_the_plan_of_the_cost_scaled_to_maximum_one():
    import ot

    rng = np.random.default_rng(0)
    cost = rng.random((6, 6)) * 0.3  # largest cost below 1
    coupling = MinibatchOT("sinkhorn", reg=0.1)
    plan = coupling.sinkhorn_plan(cost)
    uniform = np.full(6, 1 / 6)
    np.testing.assert_allclose(plan, ot.sinkhorn(uniform, uniform, cost / cost.max(), 0.1), rtol=1e-12)
    for factor in (1e-3, 1e3):  # reg is relative to the largest cost: the plan does not change with units
        np.testing.assert_allclose(coupling.sinkhorn_plan(factor * cost), plan, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(plan.sum(0), uniform, rtol=1e-6)  # the marginals are uniform
    np.testing.assert_allclose(coupling.sinkhorn_plan(np.zeros((3, 3))), np.full((3, 3), 1 / 9), rtol=1e-12)


def test_exact_assignment_without_its_fallback_and_the_fallback_alone(monkeypatch):
    rng = np.random.default_rng(1)
    cost = rng.random((7, 7))
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    optimal = np.empty(7, dtype=np.int64)
    optimal[cols] = rows
    import scipy.optimize

    def unavailable(cost):
        raise AssertionError("the permutation from ot.emd should be used")

    with monkeypatch.context() as patch:
        patch.setattr(scipy.optimize, "linear_sum_assignment", unavailable)
        assert np.array_equal(couplings._optimal_assignment(cost), optimal)
    import ot

    assert not np.array_equal(optimal, np.arange(7))
    for wrong in [np.full((7, 7), 1 / 49), np.eye(7) / 49]:  # not a plan of a permutation with mass 1/n
        with monkeypatch.context() as patch:  # the fallback answers
            patch.setattr(ot, "emd", lambda a, b, cost, numItermax, plan=wrong: plan)
            partner = couplings._optimal_assignment(cost)
        assert np.array_equal(partner, optimal) and partner.dtype == np.int64


def test_small_groups_and_two_points():
    # Two points: the exact OT pairs each data point with its nearer noise point.
    x0 = torch.tensor([[0.0], [10.0]])
    x1 = torch.tensor([[9.0], [1.0]])
    same(MinibatchOT()(x0, x1).x0, torch.tensor([[10.0], [0.0]]))
    # A label with a single member gets the one noise point its group is given.
    y = torch.tensor([0, 1, 1])
    paired = MinibatchOT()(torch.tensor([[0.0], [5.0], [-5.0]]), torch.tensor([[1.0], [-4.0], [6.0]]), y=y)
    same(paired.x0, torch.tensor([[0.0], [-5.0], [5.0]]))


def test_uniforms_are_float64_draws_of_the_generator():
    np.testing.assert_array_equal(couplings._uniforms(5, gen(3)),
                                  torch.rand(5, generator=gen(3), dtype=F64).numpy())


def test_without_replacement_at_the_float_edge_of_the_inverse_cdf(monkeypatch):
    # The pairwise sum `total` of a column can exceed its last cumulative sum by a rounding error, so that
    # u * total reaches it: the search then lands past the last noise point with mass (here, one already
    # used) and steps back to the nearest free one. u = 1 stands for that; data visited in order 0, 1, 2.
    monkeypatch.setattr(couplings, "_uniforms", lambda m, generator: np.ones(m))
    monkeypatch.setattr(torch, "randperm", lambda m, generator=None, device=None: torch.arange(m))
    plan = np.array([[0.0, 0.5, 1.0], [0.0, 0.5, 0.0], [1.0, 0.0, 0.0]])  # plan[i, j]
    assert list(couplings._draw_without_replacement(plan, None)) == [2, 1, 0]


def test_draws_from_a_plan():
    # A diagonal plan leaves no choice: every data point j draws noise point j, also the last one.
    diagonal = np.eye(5) / 5
    assert np.array_equal(couplings._draw_with_replacement(diagonal, gen(0)), np.arange(5))
    assert np.array_equal(couplings._draw_without_replacement(diagonal, gen(0)), np.arange(5))
    # With replacement: inverse-CDF draws from the float64 uniforms of the generator.
    plan = np.array([[0.1, 0.2], [0.4, 0.3]])
    u = torch.rand(2, generator=gen(6), dtype=F64).numpy()
    cdf = np.cumsum(plan.T, axis=1) / plan.sum(0)[:, None]
    expected = (cdf <= u[:, None]).sum(axis=1)
    assert np.array_equal(couplings._draw_with_replacement(plan, gen(6)), expected)
    # Without a generator the draws come from torch's global one; the pairs are still a permutation.
    assert sorted(couplings._draw_without_replacement(np.full((4, 4), 1 / 16), None)) == [0, 1, 2, 3]
    assert couplings._draw_with_replacement(np.full((4, 4), 1 / 16), None).shape == (4,)
    # All mass on noise point 0: the first data point visited takes it; the next, finding no mass left,
    # takes a free point uniformly, so over seeds both 1 and 2 come second.
    lopsided = np.zeros((3, 3))
    lopsided[0] = 1 / 3
    second = set()
    for seed in range(40):
        order = torch.randperm(3, generator=gen(seed)).numpy()
        partner = couplings._draw_without_replacement(lopsided, gen(seed))
        assert partner[order[0]] == 0 and sorted(partner) == [0, 1, 2]
        second.add(int(partner[order[1]]))
    assert second == {1, 2}
