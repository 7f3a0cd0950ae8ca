"""Couplings: minibatch OT lowers the transport cost, exact OT is a permutation, labels are respected."""

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.errors import InvalidInputError
from flowdiff.paths.couplings import (
    Coupled,
    Independent,
    MinibatchOT,
    get_coupling,
    squared_distances,
    transport_cost,
)


def batches(n=128, seed=0, d=2):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, d, generator=g)
    x1 = (
        fd.GaussianMixture.symmetric_2d(4, 0.5, 4.0).sample(n, g)
        if d == 2
        else torch.randn(n, d, generator=g) + 3
    )
    return x0, x1, g


def rows(x):
    return sorted(map(tuple, x.tolist()))


def test_independent_keeps_the_pairs():
    x0, x1, _ = batches()
    y = torch.arange(128) % 3
    pair = Independent()(x0, x1, y)
    assert isinstance(pair, Coupled) and pair.x0 is x0 and pair.x1 is x1 and pair.y is y


def test_exact_ot_is_an_optimal_permutation_of_the_noise():
    x0, x1, _ = batches(64)
    pair = MinibatchOT()(x0, x1)
    assert pair.x1 is x1
    assert rows(pair.x0) == rows(x0)  # every noise point used exactly once
    # Optimal: the assignment's cost equals POT's exact earth mover's distance for uniform weights.
    import ot

    cost = squared_distances(x0, x1)
    emd = ot.emd2(np.full(64, 1 / 64), np.full(64, 1 / 64), cost)
    assert transport_cost(pair.x0, pair.x1) == pytest.approx(emd, rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_ot_lowers_the_transport_cost(seed):
    x0, x1, g = batches(256, seed)
    independent = transport_cost(x0, x1)
    exact = transport_cost(MinibatchOT()(x0, x1).x0, x1)
    sink = MinibatchOT("sinkhorn", reg=0.05)(x0, x1, generator=g)
    sinkhorn = transport_cost(sink.x0, x1)
    # Independent pairs cost E|x0 - x1|^2 = 2 + E|x1|^2 ~ 18.25 here; the OT cost (W2^2 of the two
    # batches) is far smaller, and the entropic plan lies in between, closer to OT.
    assert exact < 0.6 * independent
    assert exact <= sinkhorn < 0.8 * independent


def test_sinkhorn_without_replacement_is_a_permutation_and_with_replacement_may_repeat():
    x0, x1, g = batches(200, 1)
    no_repeat = MinibatchOT("sinkhorn", replace=False)(x0, x1, generator=g)
    assert rows(no_repeat.x0) == rows(x0)
    repeat = MinibatchOT("sinkhorn", replace=True, reg=0.2)(x0, x1, generator=g)
    assert len(set(map(tuple, repeat.x0.tolist()))) < 200
    assert transport_cost(repeat.x0, x1) < transport_cost(x0, x1)


def test_smaller_regularisation_approaches_exact_ot():
    x0, x1, g = batches(128, 2)
    costs = [
        transport_cost(MinibatchOT("sinkhorn", reg=r)(x0, x1, generator=g).x0, x1) for r in (0.5, 0.1, 0.02)
    ]
    exact = transport_cost(MinibatchOT()(x0, x1).x0, x1)
    assert costs[0] > costs[1] > costs[2] > exact * 0.999


def test_same_seed_same_pairs():
    x0, x1, _ = batches(100, 3)
    for coupling in (MinibatchOT("sinkhorn"), MinibatchOT("sinkhorn", replace=True)):
        a = coupling(x0, x1, generator=torch.Generator().manual_seed(7)).x0
        b = coupling(x0, x1, generator=torch.Generator().manual_seed(7)).x0
        c = coupling(x0, x1, generator=torch.Generator().manual_seed(8)).x0
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_conditional_ot_pairs_only_within_a_label(method):
    """Per-label OT: labels stay with the data, and each label's noise is solved separately."""
    g = torch.Generator().manual_seed(4)
    mixture = fd.GaussianMixture.symmetric_2d(3, 0.3, 5.0)
    x1, y = mixture.sample(150, g, return_labels=True)
    x0 = torch.randn(150, 2, generator=g)
    pair = MinibatchOT(method)(x0, x1, y, generator=g)
    assert pair.x1 is x1 and pair.y is y
    assert rows(pair.x0) == rows(x0)
    # Each label's data got a set of noise points whose coupling is optimal within that label:
    # re-solving OT on the label's pairs cannot lower the cost (exact) / stays close (sinkhorn).
    for label in range(3):
        idx = (y == label).nonzero()[:, 0]
        group_cost = transport_cost(pair.x0[idx], x1[idx])
        best = transport_cost(MinibatchOT()(pair.x0[idx], x1[idx]).x0, x1[idx])
        assert group_cost == pytest.approx(best, rel=1e-6) if method == "exact" else group_cost < 1.5 * best
    # Conditional OT differs from unconditional OT, which would pair noise across labels.
    assert transport_cost(pair.x0, x1) >= transport_cost(MinibatchOT()(x0, x1).x0, x1) - 1e-6


def test_images_are_flattened_for_the_cost():
    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(16, 1, 4, 4, generator=g), torch.randn(16, 1, 4, 4, generator=g) + 1
    pair = MinibatchOT()(x0, x1)
    assert pair.x0.shape == x0.shape
    assert transport_cost(pair.x0, x1) <= transport_cost(x0, x1)


def test_registry_and_errors():
    assert isinstance(get_coupling(None), Independent)
    assert isinstance(get_coupling("independent"), Independent)
    ot = get_coupling("ot")
    assert isinstance(ot, MinibatchOT) and ot.method == "exact"
    assert get_coupling("sinkhorn").method == "sinkhorn"
    rebuilt = get_coupling(MinibatchOT("sinkhorn", reg=0.1, replace=True).config())
    assert (rebuilt.method, rebuilt.reg, rebuilt.replace) == ("sinkhorn", 0.1, True)
    assert fd.couplings.MinibatchOT is MinibatchOT
    with pytest.raises(InvalidInputError, match="unknown coupling"):
        get_coupling("optimal")
    with pytest.raises(InvalidInputError):
        MinibatchOT("greedy")
    with pytest.raises(InvalidInputError):
        MinibatchOT("sinkhorn", reg=0.0)
    with pytest.raises(InvalidInputError, match="same shape"):
        MinibatchOT()(torch.zeros(4, 2), torch.zeros(5, 2))
    with pytest.raises(InvalidInputError, match="labels"):
        MinibatchOT()(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_optimal_transport_refuses_non_finite_points_by_name(method):
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    x1[3, 1] = float("nan")
    with pytest.raises(fd.errors.InvalidInputError, match="the data batch holds NaN or inf"):
        fd.couplings.MinibatchOT(method=method)(x0, x1)
    x0[0, 0] = float("inf")
    with pytest.raises(fd.errors.InvalidInputError, match="the noise batch holds NaN or inf"):
        fd.couplings.MinibatchOT(method=method)(x0, torch.randn(8, 2))
