"""A learned time grid: the K - 1 interior times of a K-step solver fitted to a high-accuracy teacher solve.

In the spirit of LD3 (Tong et al. 2024) and "Align Your Steps" (Sabour et al. 2024): for a trained
velocity field u and n fixed noise draws x_0, minimise over the grid t_min = t_0 < ... < t_K = t_max

    L(t) = mean_i || Solver_K(x_0^i; t) - X_teacher(x_0^i) ||^2 / d,

where X_teacher integrates the same ODE with adaptive Dormand–Prince at a tight tolerance. The times
are t_k = t_min + (t_max - t_min) (softmax(theta)_1 + ... + softmax(theta)_k), increasing for every theta;
theta = 0 is the uniform grid, where Adam starts, differentiating through the fixed-step solver. The
best grid seen is kept, so the result is never worse than the uniform grid on the draws it was fitted to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.simulate import simulate
from flowdiff.dynamics.solvers import Dopri5, FixedStepSolver, Solver, get_solver, solver_names
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.devices import model_device
from flowdiff.learning.sampling.builders import noise
from flowdiff.learning.sampling.multistep import find_multistep


@dataclass
class LearnedGrid:
    """The times of a learned K-step grid for one solver, with its fit (mean squared error per coordinate)."""

    solver: str
    steps: int
    times: list[float]
    loss: float
    uniform_loss: float
    n: int
    iterations: int
    teacher: str

    def tensor(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The grid as a 1-d tensor of steps + 1 times."""
        return torch.tensor(self.times, dtype=dtype, device=device)

    def to_dict(self) -> dict:
        """A JSON-ready dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, entry: dict) -> LearnedGrid:
        """The grid back from `to_dict`, checked: steps + 1 increasing times."""
        try:
            grid = cls(**entry)
        except TypeError as error:
            raise InvalidInputError(f"a stored learned grid is malformed: {error}") from None
        times = grid.times
        if len(times) != grid.steps + 1 or any(not b > a for a, b in zip(times, times[1:])):
            raise InvalidInputError(f"a stored learned grid for {grid.solver} is not {grid.steps} + 1 increasing times")
        return grid


def _grid(theta: torch.Tensor, t_min: float, t_max: float) -> torch.Tensor:
    """t_0 = t_min, t_k = t_min + (t_max - t_min) cumsum(softmax(theta))_k, t_K = t_max exactly."""
    interior = torch.cumsum(torch.softmax(theta, 0), 0)[:-1]
    ends = theta.new_tensor([t_min]), theta.new_tensor([t_max])
    return torch.cat([ends[0], t_min + (t_max - t_min) * interior, ends[1]])


def _check(solver: Solver, steps: int, n: int, iterations: int) -> None:
    if not isinstance(solver, FixedStepSolver) or solver.equation_type is not ODE:
        fixed = [name for name in solver_names(ODE) if isinstance(get_solver(name), FixedStepSolver)]
        raise IncompatibleError(f"a grid is learned by differentiating through a fixed-step ODE solver, not "
                                f"{solver.name!r}; choose one of: {', '.join(fixed)}")
    for value, what, least in ((steps, "steps", 2), (n, "n", 2), (iterations, "iterations", 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidInputError(f"{what} must be an integer >= {least}, got {value!r}")


def learn_grid(model: Callable, solver: str | Solver = "euler", steps: int = 8, n: int = 256, iterations: int = 150,
               lr: float = 0.05, t_min: float = 0.0, t_max: float = 1.0, tol: float = 1e-5,
               data_shape: tuple[int, ...] | None = None, generator: torch.Generator | None = None,
               callback: Callable[[dict], None] | None = None) -> LearnedGrid:
    """Fit the interior times of a `steps`-step grid for `solver` to a Dormand–Prince solve at rtol = atol = tol.

    `model` is the velocity field u(x, t); n noise draws come from `generator`. `callback` gets
    {"iteration", "loss", "best"} after each Adam step.
    """
    if find_multistep(solver) is not None:
        raise IncompatibleError(f"a grid is learned by differentiating through a fixed-step ODE solver, not the "
                                f"multistep {find_multistep(solver).name!r}; choose euler, midpoint, heun or rk4")
    solver = get_solver(solver)
    _check(solver, steps, n, iterations)
    if not (0.0 <= t_min < t_max <= 1.0 and tol > 0):
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1 and tol > 0, got {t_min}, {t_max}, {tol}")
    shape = data_shape if data_shape is not None else getattr(model, "data_shape", None)
    if shape is None:
        raise InvalidInputError("the model has no data_shape; pass data_shape")
    device = model_device(model) if isinstance(model, torch.nn.Module) else torch.device("cpu")
    x0 = noise(n, tuple(shape), generator, device)
    equation = ODE(lambda x, t: model(x, t))
    with torch.no_grad():
        target = simulate(equation, x0, torch.tensor([t_min, t_max]), Dopri5(rtol=tol, atol=tol)).final

    def loss_of(ts: torch.Tensor) -> torch.Tensor:
        return (simulate(equation, x0, ts.to(x0.dtype), solver).final - target).square().mean()

    theta = torch.zeros(steps, dtype=torch.float64, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=lr)
    with torch.no_grad():
        best_times = _grid(theta, t_min, t_max)
        uniform_loss = best_loss = float(loss_of(best_times))
    with torch.enable_grad():
        for iteration in range(1, iterations + 1):
            times = _grid(theta, t_min, t_max)
            loss = loss_of(times)
            value = float(loss.detach())
            if value < best_loss:  # the loss of these times, before the step moves them
                best_loss, best_times = value, times.detach()
            optimizer.zero_grad()
            loss.backward()
            if not bool(torch.isfinite(theta.grad).all()):
                break
            optimizer.step()
            if callback is not None:
                callback({"iteration": iteration, "loss": value, "best": best_loss})
    if not math.isfinite(best_loss):
        raise InvalidInputError("the field's samples are not finite on the uniform grid; no grid can be learned")
    return LearnedGrid(solver.name, steps, best_times.tolist(), best_loss, uniform_loss, n, iterations,
                       f"dopri5 rtol=atol={tol:g}")
