"""Sampling: carry X_0 ~ p_init to t = 1 along a learned field, as a flow (ODE) or a diffusion (SDE).

sigma = 0: the ODE dX = u_t(X) dt. sigma > 0: the SDE
dX = [u_t(X) + sigma_t^2 / 2 * grad log p_t(X)] dt + sigma_t dW (Lecture 3), which has the same
marginals p_t for any sigma_t >= 0; the score comes from the network's prediction through the
path (`GaussianPath.convert`), so a velocity or a score network samples the same way.

The end t = 1: the score from a velocity is s = (alpha_t u - d_alpha x) / (beta_t (d_alpha beta_t -
alpha_t d_beta)), which divides by beta_t -> 0: a network's small velocity error near t = 1 is
amplified by ~1/beta_t (for the linear path, t / (1 - t)), and noise added in a last step would
never be removed. So the SDE hands over to the noiseless ODE (Euler steps, same marginals) at the
last grid time <= t_max - ode_tail, and at the latest for the final grid step. With the default
ode_tail = 0.02 (SDE samplers of flow models commonly end with such a step), SDE drifts stay at
beta_t >= ~0.02; a trained 2-D model's sigma = 1 samples had ~13% too narrow modes without it
and the right width with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flowdiff.dynamics import grids
from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.dynamics.simulate import Trajectory, check_grid, simulate
from flowdiff.dynamics.solvers import Solver
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.guidance import ClassifierFreeGuidance, require_conditional
from flowdiff.learning.losses import draw
from flowdiff.learning.models.embeddings import check_labels
from flowdiff.learning.predictions import START_AFTER_ZERO
from flowdiff.paths.gaussian_path import PREDICTIONS, GaussianPath

GRIDS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform": grids.uniform,
    "shifted": grids.shifted,
    "rho": grids.rho,
}
"""Time grids by name: each is called as grid(t_min, t_max, steps)."""


def model_device(model) -> torch.device:
    """The device of the model's parameters (the CPU for a parameter-free field)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def time_grid(
    grid: str | torch.Tensor, steps: int, t_min: float = 0.0, t_max: float = 1.0, device=None
) -> torch.Tensor:
    """The increasing sampling grid from t_min to t_max: a named grid with `steps` steps, or given times."""
    if not 0.0 <= t_min < t_max <= 1.0:
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise InvalidInputError(f"unknown grid {grid!r}; choose one of: {', '.join(GRIDS)}, or a tensor")
        return GRIDS[grid](t_min, t_max, steps).to(device)
    if not isinstance(grid, torch.Tensor):
        raise InvalidInputError(f"grid must be a name ({', '.join(GRIDS)}) or a 1-d tensor of times")
    ts = check_grid(grid.detach().float())
    if not (bool(ts[1] > ts[0]) and float(ts[0]) >= 0.0 and float(ts[-1]) <= 1.0):
        raise InvalidInputError("a sampling grid must increase within [0, 1] (t = 0 noise, t = 1 data)")
    return ts.to(device)


class DiffusionDrift:
    """The SDE drift u_t(x) + sigma_t^2 / 2 * grad log p_t(x) from one network call."""

    def __init__(self, field, path: GaussianPath, prediction: str, sigma: Callable, cond: dict) -> None:
        self.field, self.path, self.prediction, self.sigma, self.cond = field, path, prediction, sigma, cond

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raw = self.field(x, t, **self.cond)
        velocity = self.path.convert(raw, x, t, self.prediction, "velocity")
        score = self.path.convert(raw, x, t, self.prediction, "score")
        return velocity + (0.5 * self.sigma(x, t) ** 2) * score


class NoiseScale:
    """sigma_t as a diffusion coefficient sigma(x, t): from a number or a callable sigma(t)."""

    def __init__(self, sigma: float | Callable) -> None:
        self.sigma = float(sigma) if isinstance(sigma, torch.Tensor) else sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | float:
        if not callable(self.sigma):
            return self.sigma  # a Python number: no tensor built on the device at every step
        return torch.as_tensor(self.sigma(t), dtype=x.dtype, device=x.device)


def _check_sigma(sigma, ts: torch.Tensor) -> bool:
    """Validate sigma; return True when the sampler is an SDE."""
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    if callable(sigma):
        values = torch.stack([torch.as_tensor(sigma(t), dtype=torch.float64).reshape(()) for t in ts])
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise InvalidInputError("sigma(t) must be finite and >= 0 at every time of the grid")
        return True
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise InvalidInputError(f"sigma must be a number >= 0 or a callable sigma(t), got {sigma!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidInputError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma > 0


def _labels(model, y, guidance: float, n: int | None, device) -> tuple[torch.Tensor | None, int | None]:
    if not math.isfinite(float(guidance)):
        raise InvalidInputError(f"guidance must be a finite number, got {guidance}")
    if y is None:
        if guidance != 1.0:
            raise IncompatibleError(f"guidance={guidance} needs labels y to guide towards; pass y=<label>")
        return None, n
    num_classes = require_conditional(model, "labels y" if guidance == 1.0 else "classifier-free guidance")
    if isinstance(y, bool) or not isinstance(y, int | torch.Tensor):
        raise InvalidInputError(f"y must be an int label or a tensor of labels, got {type(y).__name__}")
    y = torch.as_tensor(y)
    if y.is_floating_point() or y.is_complex():
        raise InvalidInputError(f"labels y must be integers, got dtype {y.dtype}")
    y = y.to(device=device, dtype=torch.long)
    if y.ndim == 0:
        if n is None:
            raise InvalidInputError("give n (the number of samples) with a single label y")
        y = y.expand(n)
    elif y.ndim != 1 or (n is not None and y.shape[0] != n):
        raise InvalidInputError(
            f"labels y must be an int or have shape ({n if n else 'n'},), got {tuple(y.shape)}"
        )
    check_labels(y, num_classes)
    return y, y.shape[0]


@torch.no_grad()
def sample(
    model,
    path: GaussianPath,
    n: int | None = None,
    steps: int = 100,
    solver: str | Solver | None = None,
    sigma: float | Callable = 0.0,
    y: torch.Tensor | int | None = None,
    guidance: float = 1.0,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    x0: torch.Tensor | None = None,
    grid: str | torch.Tensor = "uniform",
    prediction: str = "velocity",
    t_min: float | None = None,
    t_max: float = 1.0,
    device=None,
    ode_tail: float = 0.02,
) -> torch.Tensor | Trajectory:
    """Draw n samples X_1 by integrating dX = u dt (sigma = 0) or dX = [u + sigma_t^2/2 score] dt + sigma_t dW

    `model` predicts `prediction` ("velocity", "score", "x1" or "noise"); y (an int or a (n,)
    tensor of labels) conditions it, and guidance = w != 1 mixes in the unconditional field
    (classifier-free guidance). X_0 ~ N(0, I) is drawn with `generator` unless x0 is given.
    Solver defaults: "heun" for the ODE, "euler_maruyama" for the SDE, which hands over to
    noiseless Euler steps for the last `ode_tail` of time (module docstring). Returns (n, *data_shape)
    samples, or with return_trajectory the `Trajectory` over the grid (states at every time).
    The grid runs from t_min (default 0; 1e-3 for a score or noise prediction, whose velocity is
    undefined at t = 0 where alpha_0 = 0) to t_max.
    """
    if prediction not in PREDICTIONS:
        raise InvalidInputError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
    device = (
        torch.device(device) if device is not None else (x0.device if x0 is not None else model_device(model))
    )
    if x0 is not None:
        if not isinstance(x0, torch.Tensor) or x0.ndim < 1:
            raise InvalidInputError("x0 must be a tensor of starting points (n, *data_shape)")
        if n is not None and n != x0.shape[0]:
            raise InvalidInputError(f"n={n} but x0 holds {x0.shape[0]} points")
        n = x0.shape[0]
    y, n = _labels(model, y, guidance, n, device)
    if n is None:
        raise InvalidInputError("give the number of samples n (or x0, or a tensor of labels y)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")
    if t_min is None:  # start at 0, unless the field cannot be evaluated there (see Converted)
        t_min = START_AFTER_ZERO if prediction in ("score", "noise") else getattr(model, "t_min", 0.0)
    ts = time_grid(grid, steps, t_min, t_max)
    stochastic = _check_sigma(sigma, ts)
    if not (isinstance(ode_tail, int | float) and 0.0 <= ode_tail <= 1.0):
        raise InvalidInputError(f"ode_tail must be a time span in [0, 1], got {ode_tail!r}")

    if x0 is None:
        shape = getattr(model, "data_shape", None)
        if shape is None:
            raise InvalidInputError("the model has no data_shape; pass the starting points x0")
        x0 = draw("normal", (n, *shape), generator, device, torch.float32)
    x0 = x0.to(device)
    ts = ts.to(device=device, dtype=x0.dtype)

    field = model
    if y is not None and guidance != 1.0:
        field = ClassifierFreeGuidance(model, guidance)
    cond = {} if y is None else {"y": y}

    def velocity(x, t):
        return path.convert(field(x, t, **cond), x, t, prediction, "velocity")

    if not stochastic:
        trajectory = simulate(
            ODE(velocity), x0, ts, solver or "heun", save="all" if return_trajectory else "final"
        )
        return trajectory if return_trajectory else trajectory.final

    save = "all" if return_trajectory else "final"
    parts: list[Trajectory] = []
    x = x0
    # Hand over to the noiseless ODE at the last grid time <= t_max - ode_tail (at the latest t_{N-1}).
    handover = max(int((ts[:-1] <= ts[-1] - ode_tail).sum()) - 1, 0)
    if handover >= 1:
        sde = SDE(DiffusionDrift(field, path, prediction, NoiseScale(sigma), cond), NoiseScale(sigma))
        sde_ts = ts[: handover + 1]
        noise = None
        if generator is not None and generator.device != x0.device:  # draw on the generator's device
            noise = draw("normal", (len(sde_ts) - 1, *x0.shape), generator, device, x0.dtype)
        parts.append(
            simulate(sde, x0, sde_ts, solver or "euler_maruyama", save=save, generator=generator, noise=noise)
        )
        x = parts[-1].final
    elif solver is not None:
        from flowdiff.dynamics.solvers import get_solver

        get_solver(solver).check(SDE(velocity, 0.0))  # same errors as a longer run for a bad solver
    parts.append(simulate(ODE(velocity), x, ts[handover:], "euler", save=save))  # the noiseless tail
    if not return_trajectory:
        return parts[-1].final
    if len(parts) == 1:
        return parts[0]
    sde_part, last = parts
    return Trajectory(
        times=torch.cat([sde_part.times, last.times[1:]]),
        states=torch.cat([sde_part.states, last.states[1:]]),
        nfe=sde_part.nfe + last.nfe,
    )
