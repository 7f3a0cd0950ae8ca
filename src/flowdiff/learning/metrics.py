"""Sample-quality metrics: distances between two samples of vector data (each point flattened).

- `wasserstein2`: the exact 2-Wasserstein distance between the two empirical measures (POT's
  network-simplex `ot.emd2` with squared Euclidean cost), on subsamples of `max_samples` points.
- `sliced_wasserstein`: sqrt of the mean over random unit directions of the squared 1-D W2
  between the projected samples (exact in 1-D through their quantile functions).
- `mmd`: the unbiased estimate of the squared maximum mean discrepancy with the RBF kernel
  k(a, b) = exp(-|a - b|^2 / (2 h^2)); h defaults to the median heuristic (the median distance
  between distinct points of the pooled sample).
- `energy_distance`: the unbiased estimate of 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely).

Each returns a float. All are 0 in expectation only for the unbiased estimates (MMD, energy);
the empirical W2 of two samples of one distribution is positive and shrinks slowly with n.
`baseline(metric, data)` gives the value of a metric between two independent halves of the data,
so a model's number can be read against the spread of the data itself (compare at equal sizes).

For labelled images, `conditional_accuracy` and `feature_frechet_distance` (of
`flowdiff.learning.classifier`) are re-exported here.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable

import numpy as np
import torch

from flowdiff.errors import InvalidInputError

_CLASSIFIER_NAMES = ("conditional_accuracy", "feature_frechet_distance")
"""Metrics for labelled images, defined in flowdiff.learning.classifier and re-exported lazily."""

__all__ = [
    "wasserstein2",
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "baseline",
    "METRICS",
    "get_metric",
    "median_bandwidth",
    *_CLASSIFIER_NAMES,
]


def __getattr__(name: str):
    """Lazily re-export the labelled-data metrics of `flowdiff.learning.classifier`."""
    if name in _CLASSIFIER_NAMES:
        try:
            module = importlib.import_module("flowdiff.learning.classifier")
        except ModuleNotFoundError as error:
            raise AttributeError(f"{name} needs flowdiff.learning.classifier: {error}") from None
        return getattr(module, name)
    raise AttributeError(f"module 'flowdiff.learning.metrics' has no attribute {name!r}")


def _as_points(x, name: str) -> torch.Tensor:
    """Turn a tensor or array of shape (n, *shape) into finite float64 points (n, D)."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"{name} must be an array of shape (n, *shape): {error}") from None
    if x.ndim < 1 or x.shape[0] < 2:
        raise InvalidInputError(f"{name} must hold at least 2 points (n, *shape), got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64).reshape(x.shape[0], -1)
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError(f"{name} contains NaN or inf")
    return x


def _pair(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise InvalidInputError(
            f"x and y must have the same dimension per point, got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y


def _subsample(x: torch.Tensor, max_samples: int | None, generator: torch.Generator | None) -> torch.Tensor:
    """A uniformly random subset of at most max_samples rows (all rows when there are fewer)."""
    if max_samples is None or x.shape[0] <= max_samples:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:max_samples]]


def _check_max_samples(max_samples: int | None) -> None:
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 2):
        raise InvalidInputError(f"max_samples must be an integer >= 2 or None, got {max_samples!r}")


def wasserstein2(x, y, max_samples: int | None = 2000, generator: torch.Generator | None = None) -> float:
    """W2(x, y) = sqrt(min over couplings pi of sum pi_ij |x_i - y_j|^2), exact (POT ot.emd2)."""
    import ot

    _check_max_samples(max_samples)
    x, y = _pair(x, y)
    x, y = _subsample(x, max_samples, generator), _subsample(y, max_samples, generator)
    cost = torch.cdist(x, y).pow(2).numpy()
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    squared = float(ot.emd2(a, b, cost, numItermax=10_000_000))
    return math.sqrt(max(squared, 0.0))


def _quantile_w2_squared(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Squared 1-D W2 between sorted rows: integral over u of (F^-1(u) - G^-1(u))^2 du."""
    n, m = xs.shape[1], ys.shape[1]
    if n == m:
        return (xs - ys).pow(2).mean(dim=1)
    f64 = torch.float64
    levels = torch.cat([torch.arange(1, n + 1, dtype=f64) / n, torch.arange(1, m + 1, dtype=f64) / m])
    levels = torch.unique(levels)  # sorted breakpoints of both step quantile functions
    widths = torch.diff(levels, prepend=levels.new_zeros(1))
    middle = levels - widths / 2
    i = torch.clamp((middle * n).long(), max=n - 1)
    j = torch.clamp((middle * m).long(), max=m - 1)
    return ((xs[:, i] - ys[:, j]).pow(2) * widths).sum(dim=1)


def sliced_wasserstein(
    x,
    y,
    projections: int = 256,
    max_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> float:
    """SW2(x, y) = sqrt(E_theta W2^2(theta.x, theta.y)), theta uniform on the unit sphere."""
    if not isinstance(projections, int) or projections < 1:
        raise InvalidInputError(f"projections must be a positive integer, got {projections!r}")
    _check_max_samples(max_samples)
    x, y = _pair(x, y)
    x, y = _subsample(x, max_samples, generator), _subsample(y, max_samples, generator)
    theta = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    xs = (x @ theta).T.sort(dim=1).values
    ys = (y @ theta).T.sort(dim=1).values
    return math.sqrt(max(float(_quantile_w2_squared(xs, ys).mean()), 0.0))


def _off_diagonal_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def median_bandwidth(x, y, max_samples: int | None = 2000, generator: torch.Generator | None = None) -> float:
    """The median heuristic h = median |a - b| over distinct pairs of the pooled sample."""
    x, y = _pair(x, y)
    pooled = _subsample(torch.cat([x, y]), max_samples, generator)
    distances = torch.pdist(pooled)
    h = float(distances.median()) if distances.numel() else 0.0
    return h if h > 0 else 1.0


def mmd(
    x,
    y,
    bandwidth: float | None = None,
    max_samples: int | None = 4000,
    generator: torch.Generator | None = None,
) -> float:
    """Unbiased MMD^2 = mean k(x,x') + mean k(y,y') - 2 mean k(x,y), RBF k, h = median heuristic.

    k(a, b) = exp(-|a - b|^2 / (2 h^2)); the two within-sample means skip i = j, so the estimate
    is 0 in expectation for two samples of one distribution (and may then be slightly negative).
    """
    _check_max_samples(max_samples)
    x, y = _pair(x, y)
    x, y = _subsample(x, max_samples, generator), _subsample(y, max_samples, generator)
    if bandwidth is None:
        bandwidth = median_bandwidth(x, y, generator=generator)
    try:
        bandwidth = float(bandwidth)
    except (TypeError, ValueError):
        raise InvalidInputError(f"bandwidth must be a positive number or None, got {bandwidth!r}") from None
    if not (bandwidth > 0 and math.isfinite(bandwidth)):
        raise InvalidInputError(f"bandwidth must be a positive number or None, got {bandwidth!r}")
    gamma = 1.0 / (2.0 * bandwidth**2)

    def kernel(a, b):
        return torch.exp(-gamma * torch.cdist(a, b).pow(2))

    value = _off_diagonal_mean(kernel(x, x)) + _off_diagonal_mean(kernel(y, y)) - 2 * kernel(x, y).mean()
    return float(value)


def energy_distance(x, y, max_samples: int | None = 4000, generator: torch.Generator | None = None) -> float:
    """Unbiased energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo)."""
    _check_max_samples(max_samples)
    x, y = _pair(x, y)
    x, y = _subsample(x, max_samples, generator), _subsample(y, max_samples, generator)
    value = (
        2 * torch.cdist(x, y).mean()
        - _off_diagonal_mean(torch.cdist(x, x))
        - _off_diagonal_mean(torch.cdist(y, y))
    )
    return float(value)


METRICS: dict[str, Callable[..., float]] = {
    "w2": wasserstein2,
    "sliced_w2": sliced_wasserstein,
    "mmd": mmd,
    "energy": energy_distance,
}
"""Registered sample-quality metrics for vector data: name -> metric(x, y, ...)."""


def get_metric(metric: str | Callable[..., float]) -> Callable[..., float]:
    """Return `metric` itself if callable, else the registered metric of that name."""
    if callable(metric):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]
    raise InvalidInputError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")


def baseline(
    metric: str | Callable[..., float], data, generator: torch.Generator | None = None, **kwargs
) -> float:
    """The metric between two independent random halves of `data`: the floor a model is read against.

    Each half has n // 2 points; compare a model with the same number of points per sample, since
    W2 and sliced W2 of finite samples shrink with n.
    """
    metric = get_metric(metric)
    data = _as_points(data, "data")
    if data.shape[0] < 4:
        raise InvalidInputError(f"baseline needs at least 4 points of data, got {data.shape[0]}")
    order = torch.randperm(data.shape[0], generator=generator)
    half = data.shape[0] // 2
    first, second = data[order[:half]], data[order[half : 2 * half]]
    if "generator" in inspect.signature(metric).parameters:
        kwargs.setdefault("generator", generator)
    return float(metric(first, second, **kwargs))
