"""Couplings: how a batch of noise points x0 ~ p_init is paired with a batch of data points x1.

Flow matching regresses on pairs (x0, x1); any coupling whose marginals are p_init and p_data
gives a valid target. `Independent` keeps the pairs as drawn. `MinibatchOT` re-pairs them by an
optimal transport plan for the squared Euclidean cost within the batch, which shortens and
straightens the conditional paths. Data points keep their order and their labels; only the
noise is re-assigned, so labels travel with x1. With labels, the OT is solved per label
(conditional OT): noise is paired only with data of the same label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from flowdiff.errors import InvalidInputError
from flowdiff.registry import build


@dataclass
class Coupled:
    """Paired batches: x0[i] (noise) is coupled with x1[i] (data), whose label is y[i]."""

    x0: torch.Tensor
    x1: torch.Tensor
    y: torch.Tensor | None = None


def _check(x0: torch.Tensor, x1: torch.Tensor, y: torch.Tensor | None) -> None:
    if x0.shape != x1.shape:
        raise InvalidInputError(
            f"noise and data batches must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}"
        )
    if y is not None and tuple(y.shape) != (x1.shape[0],):
        raise InvalidInputError(f"labels y must have shape ({x1.shape[0]},), got {tuple(y.shape)}")


class Coupling:
    """A rule pairing noise x0 with data x1: call it as coupling(x0, x1, y=None, generator=None)."""

    name = "coupling"
    pairs_batch = False
    """True when the pairing depends on the whole batch (then distributed training solves it on the global batch)."""

    def __call__(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        y: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Coupled:
        raise NotImplementedError

    def config(self) -> dict:
        """The registered name and the keyword arguments that rebuild this coupling."""
        return {"name": self.name, **vars(self)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Independent(Coupling):
    """The product coupling p_init x p_data: pairs are kept as drawn."""

    name = "independent"

    def __call__(self, x0, x1, y=None, generator=None) -> Coupled:
        _check(x0, x1, y)
        return Coupled(x0=x0, x1=x1, y=y)


def squared_distances(x0: torch.Tensor, x1: torch.Tensor) -> np.ndarray:
    """Cost matrix C_ij = |x0_i - x1_j|^2 of flattened points, float64 on the host."""
    from scipy.spatial.distance import cdist

    a = x0.detach().reshape(x0.shape[0], -1).cpu().numpy().astype(np.float64)
    b = x1.detach().reshape(x1.shape[0], -1).cpu().numpy().astype(np.float64)
    for points, name in ((a, "noise"), (b, "data")):
        if not np.isfinite(points).all():
            raise InvalidInputError(f"optimal transport needs finite points, but the {name} batch holds NaN or inf")
    return cdist(a, b, "sqeuclidean")


def transport_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared distance (1/n) sum_i |x0_i - x1_i|^2 of the pairs."""
    return float((x0 - x1).reshape(x0.shape[0], -1).pow(2).sum(1).mean())


class MinibatchOT(Coupling):
    """Minibatch optimal transport for the cost |x0 - x1|^2 (conditional per label when y is given).

    method="exact": the optimal assignment (a permutation of the noise batch) by POT's exact
    solver `ot.emd` (scipy's linear_sum_assignment as a fallback). method="sinkhorn": the
    entropic plan of POT's `ot.sinkhorn` with regularisation `reg` times the largest cost (so
    `reg` is scale-free);
    each data point x1_j then draws its noise partner from the plan's conditional pi(i | j) with
    the generator — with `replace=False` sequentially without replacement (every noise point used
    once, pairs a permutation), with `replace=True` independently (noise points may repeat).
    """

    name = "ot"
    pairs_batch = True

    def __init__(self, method: str = "exact", reg: float = 0.05, replace: bool = False) -> None:
        if method not in ("exact", "sinkhorn"):
            raise InvalidInputError(f"unknown OT method {method!r}; choose 'exact' or 'sinkhorn'")
        if not reg > 0:
            raise InvalidInputError(f"Sinkhorn regularisation reg must be > 0, got {reg}")
        self.method, self.reg, self.replace = method, float(reg), bool(replace)

    def __call__(self, x0, x1, y=None, generator=None) -> Coupled:
        _check(x0, x1, y)
        n = x0.shape[0]
        if y is None:
            groups = [np.arange(n)]
        else:
            labels = y.detach().cpu().numpy()
            groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        # Noise is i.i.d., so the noise points given to a label's group may be any of the right
        # number: take them in order, then solve OT within the group.
        index = np.empty(n, dtype=np.int64)
        start = 0
        for data_idx in groups:
            noise_idx = np.arange(start, start + len(data_idx))
            start += len(data_idx)
            cost = squared_distances(x0[noise_idx], x1[data_idx])
            index[data_idx] = noise_idx[self.assign(cost, generator)]
        return Coupled(x0=x0[torch.from_numpy(index).to(x0.device)], x1=x1, y=y)

    def assign(self, cost: np.ndarray, generator: torch.Generator | None = None) -> np.ndarray:
        """For each data point j (column of cost), the index of the noise point paired with it."""
        if cost.shape[0] == 1:
            return np.zeros(1, dtype=np.int64)
        if self.method == "exact":
            return _optimal_assignment(cost)
        plan = self.sinkhorn_plan(cost)
        if self.replace:
            return _draw_with_replacement(plan, generator)
        return _draw_without_replacement(plan, generator)

    def sinkhorn_plan(self, cost: np.ndarray) -> np.ndarray:
        """The entropic OT plan between uniform marginals for cost / max(cost) with regularisation reg."""
        import warnings

        import ot

        n, m = cost.shape
        scale = cost.max() if cost.max() > 0 else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # POT warns when it stops at numItermax; the plan is still usable
            plan = ot.sinkhorn(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost / scale, self.reg)
        if not np.all(np.isfinite(plan)) or plan.sum() <= 0:
            raise InvalidInputError(
                f"Sinkhorn failed (non-finite plan) with reg={self.reg}; use a larger reg or method='exact'"
            )
        return plan


def _optimal_assignment(cost: np.ndarray) -> np.ndarray:
    """The permutation minimising sum_j cost[partner[j], j].

    POT's network simplex (`ot.emd`) with uniform weights returns a permutation matrix and is
    several times faster than scipy's linear_sum_assignment for batches of a few hundred or
    more; the latter is the fallback if the plan is not a permutation (a degenerate case).
    """
    import ot

    n = cost.shape[0]
    uniform = np.full(n, 1.0 / n)
    plan = ot.emd(uniform, uniform, cost, numItermax=max(100_000, 20 * n * n))
    partner = plan.argmax(axis=0)
    if np.array_equal(np.sort(partner), np.arange(n)) and np.allclose(plan[partner, np.arange(n)], 1.0 / n):
        return partner
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    partner = np.empty(n, dtype=np.int64)
    partner[cols] = rows
    return partner


def _uniforms(m: int, generator: torch.Generator | None) -> np.ndarray:
    """m uniforms on [0, 1) drawn with the generator (on its device), as float64 on the host."""
    device = generator.device if generator is not None else "cpu"
    return torch.rand(m, generator=generator, device=device, dtype=torch.float64).cpu().numpy()


def _draw_with_replacement(plan: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    """For each data point j, an independent draw i ~ pi(i | j) by inverting the column's CDF."""
    uniforms = _uniforms(plan.shape[1], generator)
    cdf = np.cumsum(plan.T, axis=1)
    cdf /= cdf[:, -1:]
    return np.minimum((cdf <= uniforms[:, None]).sum(axis=1), plan.shape[0] - 1)


def _draw_without_replacement(plan: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    """Visit data points in a random order; each draws a still-unused noise point i ~ pi(i | j)."""
    n, m = plan.shape
    device = generator.device if generator is not None else "cpu"
    order = torch.randperm(m, generator=generator, device=device).cpu().numpy()
    uniforms = _uniforms(m, generator)
    weights = np.ascontiguousarray(plan.T, dtype=np.float64)  # row j: the column pi(., j)
    available = np.ones(n, dtype=bool)
    partner = np.empty(m, dtype=np.int64)
    for j, u in zip(order, uniforms):
        column = weights[j] * available
        total = column.sum()
        if total <= 0:  # the plan's mass in this column is used up: any free noise point
            column, total = available.astype(np.float64), float(available.sum())
        i = min(int(np.searchsorted(np.cumsum(column), u * total, side="right")), n - 1)
        while not available[i]:  # guards the float edge case u * total == a cumulative sum
            i -= 1
        partner[j] = i
        available[i] = False
    return partner


COUPLINGS: dict[str, Callable[..., Coupling]] = {
    "independent": Independent,
    "ot": MinibatchOT,
    "sinkhorn": lambda **kw: MinibatchOT(method="sinkhorn", **kw),
}
"""Couplings by name, for configuration files and the command line."""


def get_coupling(coupling: str | Coupling | dict | None = None, **kwargs) -> Coupling:
    """A coupling from itself, its name, its `config()` dict, or None (independent pairing)."""
    if coupling is None:
        return Independent()
    return build(COUPLINGS, coupling, "coupling", Coupling, **kwargs)
