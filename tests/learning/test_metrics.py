"""Sample-quality metrics: ~0 on one distribution, known values on shifted Gaussians, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from flowdiff.errors import InvalidInputError
from flowdiff.learning import metrics

SHIFT = torch.tensor([1.5, -2.0])  # |m| = 2.5


def normal_pairs(repeats: int, n: int, seed: int, shift=None):
    """`repeats` independent pairs of n-point samples of N(0, I) and N(shift, I) in 2-D."""
    generator = torch.Generator().manual_seed(seed)
    shift = torch.zeros(2) if shift is None else shift
    return [
        (torch.randn(n, 2, generator=generator), torch.randn(n, 2, generator=generator) + shift)
        for _ in range(repeats)
    ]


def within(values: list[float], expected: float, k: float = 4.0) -> bool:
    """The mean of independent repeats lies within k standard errors (sd / sqrt(R)) of `expected`."""
    values = np.asarray(values)
    return abs(values.mean() - expected) < k * values.std(ddof=1) / math.sqrt(len(values))


def test_w2_of_shifted_samples_is_the_shift():
    """For uniform weights every coupling gives sum pi_ij m.(x_i - y_j) = m.(mean x - mean y), so exactly
    W2^2(x, y + m) = W2^2(x, y) - 2 m.(mean x - mean y) + |m|^2. Hence |W2^2 - |m|^2| is at most the
    same-distribution W2^2(x, y) (measured) plus 2 |m| |m.(mean x - mean y)| / |m|, whose standard
    error is |m| sqrt(2 / n): we allow 4 of them.
    """
    n = 1000
    ((x, y),) = normal_pairs(1, n, seed=0)
    same = metrics.wasserstein2(x, y)
    shifted = metrics.wasserstein2(x, y + SHIFT)
    identity = same**2 - 2 * float(SHIFT @ (x.mean(0) - y.mean(0))) + float(SHIFT @ SHIFT)
    assert shifted**2 == pytest.approx(identity, rel=1e-6)
    m = float(SHIFT.norm())
    assert abs(shifted**2 - m**2) < same**2 + 2 * m * 4 * math.sqrt(2 / n)


def test_w2_of_one_distribution_shrinks_with_n():
    """The empirical W2 of two samples of one law is positive and tends to 0 (about sqrt(log n / n)
    in 2-D): over 4 repeats, quadrupling n at least reduces it by a quarter."""
    small = [metrics.wasserstein2(x, y) for x, y in normal_pairs(4, 200, seed=1)]
    large = [metrics.wasserstein2(x, y) for x, y in normal_pairs(4, 800, seed=2)]
    assert np.mean(large) < 0.75 * np.mean(small)
    assert 0 < np.mean(large) < 0.5  # already small next to the shift |m| = 2.5 measured above


def test_w2_subsamples_with_the_generator():
    ((x, y),) = normal_pairs(1, 600, seed=3)
    first = metrics.wasserstein2(x, y, max_samples=300, generator=torch.Generator().manual_seed(0))
    second = metrics.wasserstein2(x, y, max_samples=300, generator=torch.Generator().manual_seed(0))
    assert first == second


def test_sliced_w2_of_shifted_samples():
    """SW2^2 between N(0, I) and N(m, I) is E_theta (theta.m)^2 = |m|^2 / d. Each projection adds the same
    terms as in the W2 identity; with P projections in 2-D, (theta.m)^2 = |m|^2 cos^2 phi has standard
    deviation |m|^2 / sqrt(8), so the projection error has standard error |m|^2 / sqrt(8 P); the sampling
    term 2 (theta.m) theta.(mean x - mean y) has standard error at most 2 |m| sqrt(2 / n). We allow 4 of
    each, plus the (measured) same-distribution SW2^2."""
    n, projections = 1000, 2000
    ((x, y),) = normal_pairs(1, n, seed=4)
    generator = torch.Generator().manual_seed(5)
    same = metrics.sliced_wasserstein(x, y, projections=projections, generator=generator)
    shifted = metrics.sliced_wasserstein(x, y + SHIFT, projections=projections, generator=generator)
    m2 = float(SHIFT @ SHIFT)
    tolerance = 4 * m2 / math.sqrt(8 * projections) + 4 * 2 * math.sqrt(m2) * math.sqrt(2 / n) + same**2
    assert abs(shifted**2 - m2 / 2) < tolerance
    assert same < 0.1


def test_sliced_w2_with_unequal_sizes_matches_pot():
    """The exact 1-D W2 between samples of different sizes (through quantile functions) agrees with POT."""
    import ot

    generator = torch.Generator().manual_seed(6)
    x, y = torch.randn(300, 1, generator=generator), torch.randn(470, 1, generator=generator) + 0.7
    ours = metrics.sliced_wasserstein(x, y, projections=1)  # in 1-D a projection is +-identity
    theirs = math.sqrt(ot.wasserstein_1d(x[:, 0].double().numpy(), y[:, 0].double().numpy(), p=2))
    assert ours == pytest.approx(theirs, rel=1e-9)


def rbf_mmd_of_shifted_normals(bandwidth: float, shift: torch.Tensor) -> float:
    """MMD^2 between N(0, I) and N(m, I) for k = exp(-|a-b|^2 / 2h^2).

    With c = (h^2 / (h^2 + 2))^(d/2): E k(X, X') = c and E k(X, Y) = c exp(-|m|^2 / (2 (h^2 + 2))),
    so MMD^2 = 2c (1 - exp(-|m|^2 / (2 (h^2 + 2)))).
    """
    h2, d = bandwidth**2, shift.shape[0]
    c = (h2 / (h2 + 2)) ** (d / 2)
    return 2 * c * (1 - math.exp(-float(shift @ shift) / (2 * (h2 + 2))))


def test_mmd_is_unbiased():
    """Over independent repeats the unbiased MMD^2 averages to 0 on one law and to the closed form on
    shifted normals, within 4 standard errors of the repeats."""
    null = [metrics.mmd(x, y, bandwidth=1.0) for x, y in normal_pairs(10, 300, seed=7)]
    assert within(null, 0.0)
    shift = torch.tensor([0.5, 0.0])
    alternative = [metrics.mmd(x, y, bandwidth=1.0) for x, y in normal_pairs(10, 300, seed=8, shift=shift)]
    assert within(alternative, rbf_mmd_of_shifted_normals(1.0, shift))
    assert min(alternative) > max(null)


def test_mmd_median_heuristic_bandwidth():
    """The median distance of N(0, I) points in 2-D is 2 sqrt(ln 2) ~ 1.67 (|X - X'|^2 / 4 ~ Exp(1))."""
    ((x, y),) = normal_pairs(1, 1000, seed=9)
    assert metrics.median_bandwidth(x, y) == pytest.approx(2 * math.sqrt(math.log(2)), rel=0.05)
    assert metrics.mmd(x, y) == pytest.approx(metrics.mmd(x, y, bandwidth=metrics.median_bandwidth(x, y)))


def mean_norm_2d(mean: float, sigma: float) -> float:
    """E|Z| for Z ~ N(m, sigma^2 I_2) (Rice): sigma sqrt(pi/2) L_1/2(-|m|^2 / 2 sigma^2)."""
    v = -(mean**2) / (2 * sigma**2)  # L_1/2(v) = e^(v/2) [(1 - v) I0(-v/2) - v I1(-v/2)]; ive = e^-|z| I
    laguerre = (1 - v) * special.ive(0, -v / 2) - v * special.ive(1, -v / 2)
    return sigma * math.sqrt(math.pi / 2) * laguerre


def test_energy_distance_is_unbiased():
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(m, 2I) and X - X' ~ N(0, 2I) in closed form;
    repeats average to it (and to 0 on one law) within 4 standard errors."""
    null = [metrics.energy_distance(x, y) for x, y in normal_pairs(10, 300, seed=10)]
    assert within(null, 0.0)
    shift = torch.tensor([0.5, 0.0])
    expected = 2 * mean_norm_2d(0.5, math.sqrt(2)) - 2 * mean_norm_2d(0.0, math.sqrt(2))
    alternative = [metrics.energy_distance(x, y) for x, y in normal_pairs(10, 300, seed=11, shift=shift)]
    assert within(alternative, expected)


@pytest.mark.parametrize("name", list(metrics.METRICS))
def test_metrics_grow_with_the_shift_and_are_symmetric(name):
    metric = metrics.get_metric(name)
    ((x, y),) = normal_pairs(1, 400, seed=12)
    values = [
        metric(x, y + s * SHIFT, generator=torch.Generator().manual_seed(0)) for s in (0.0, 0.5, 1.0, 2.0)
    ]
    assert values == sorted(values)
    back = metric(y + SHIFT, x, generator=torch.Generator().manual_seed(0))
    assert back == pytest.approx(values[2], rel=1e-6)


def test_baseline_reads_two_halves_of_the_data():
    data = torch.randn(1200, 2, generator=torch.Generator().manual_seed(13))
    floor = metrics.baseline("w2", data, generator=torch.Generator().manual_seed(1))
    again = metrics.baseline(metrics.wasserstein2, data, generator=torch.Generator().manual_seed(1))
    assert floor == again and 0 < floor < 0.5
    nulls = [metrics.baseline("mmd", data, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    assert within(nulls, 0.0)


def test_points_are_flattened_and_arrays_accepted():
    generator = torch.Generator().manual_seed(14)
    images = torch.randn(50, 1, 2, 2, generator=generator)
    other = torch.randn(50, 1, 2, 2, generator=generator)
    flat = metrics.energy_distance(images.reshape(50, 4), other.reshape(50, 4))
    assert metrics.energy_distance(images, other) == pytest.approx(flat)
    assert metrics.energy_distance(images.numpy(), other.numpy()) == pytest.approx(flat)


def test_bad_input():
    x = torch.randn(10, 2)
    with pytest.raises(InvalidInputError, match="same dimension"):
        metrics.wasserstein2(x, torch.randn(10, 3))
    with pytest.raises(InvalidInputError, match="NaN"):
        metrics.mmd(x, torch.full((10, 2), float("nan")))
    with pytest.raises(InvalidInputError, match="at least 2 points"):
        metrics.energy_distance(x, torch.randn(1, 2))
    with pytest.raises(InvalidInputError, match="projections"):
        metrics.sliced_wasserstein(x, x, projections=0)
    with pytest.raises(InvalidInputError, match="bandwidth"):
        metrics.mmd(x, x, bandwidth=-1.0)
    with pytest.raises(InvalidInputError, match="unknown metric"):
        metrics.baseline("fid", x)
    with pytest.raises(InvalidInputError, match="max_samples"):
        metrics.wasserstein2(x, x, max_samples=1)
