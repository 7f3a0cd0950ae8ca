"""`sample`: the convenience on top of the samplers — draw the noise, build the grid and the field, integrate."""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.dynamics.simulate import Trajectory
from flowdiff.dynamics.solvers import Solver
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.devices import model_device
from flowdiff.learning.predictions import START_AFTER_ZERO, as_velocity
from flowdiff.learning.sampling.builders import (
    NoiseScale,
    check_labels_for_sampling,
    check_sigma,
    diffusion_drift,
    guided_field,
    noise,
    time_grid,
)
from flowdiff.learning.sampling.compiled import compiled_ode_sampler
from flowdiff.learning.sampling.few_step import flow_map_sampler, uses_jumps
from flowdiff.learning.sampling.multistep import MultistepSolver, find_multistep
from flowdiff.learning.sampling.samplers import ode_sampler, sde_sampler
from flowdiff.paths.gaussian_path import PREDICTIONS, GaussianPath


def start_time(model, prediction: str, t_min: float | None) -> float:
    """Where sampling starts: t_min given, or the first time where the field can be evaluated.

    A score or noise prediction has no velocity at t = 0 (alpha_0 = 0): start at 1e-3. Wrapped
    fields (`Converted`) say so themselves through their t_min.
    """
    if t_min is None:
        t_min = START_AFTER_ZERO if prediction in ("score", "noise") else getattr(model, "t_min", 0.0)
    return float(t_min)


def _start(model, x0, n, device) -> tuple[torch.Tensor | None, int | None, torch.device]:
    if x0 is not None:  # checked before its device is read
        if not isinstance(x0, torch.Tensor) or x0.ndim < 1:
            raise InvalidInputError("x0 must be a tensor of starting points (n, *data_shape)")
        if n is not None and n != x0.shape[0]:
            raise InvalidInputError(f"n={n} but x0 holds {x0.shape[0]} points")
        n = x0.shape[0]
    device = torch.device(device) if device is not None else (x0.device if x0 is not None else model_device(model))
    return x0, n, device


def _check_counts(n, steps) -> None:
    if n is None:
        raise InvalidInputError("give the number of samples n (or x0, or a tensor of labels y)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"n must be a positive integer, got {n!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")


@torch.no_grad()
def sample(
    model,
    path: GaussianPath,
    n: int | None = None,
    steps: int = 100,
    solver: str | Solver | MultistepSolver | None = None,
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
    callback: Callable[[dict], None] | None = None,
    compile: bool | str = False,
) -> torch.Tensor | Trajectory:
    """Draw n samples X_1 by integrating dX = u dt (sigma = 0) or dX = [u + sigma_t^2/2 score] dt + sigma_t dW.

    `model` predicts `prediction` ("velocity", "score", "x1" or "noise"); y (an int or a (n,)
    tensor of labels) conditions it, and guidance = w != 1 mixes in the unconditional field
    (classifier-free guidance, one batched call). X_0 ~ N(0, I) is drawn with `generator` unless
    x0 is given. `solver` may also be a multistep solver of the path ("dpmpp_2m", "unipc"; NFE = steps;
    `flowdiff.learning.sampling.multistep`). Solver defaults: "heun" for the ODE, "euler_maruyama" for the
    SDE, which hands over to noiseless Euler steps for the last `ode_tail` of time. `callback` receives
    {"step", "t", "x", "nfe"} after every step. Returns (n, *data_shape) samples, or with
    return_trajectory the `Trajectory` over the grid (its `nfe` counts the network's calls).
    `compile=True` (or a torch.compile backend name) runs each step of a fixed-step Runge–Kutta ODE solver as
    one compiled graph (`flowdiff.learning.sampling.compiled`).
    A flow map u(x, r, t) with no solver named jumps x_r = x_t + (r - t) u(x_t, r, t) (`few_step`).
    """
    if prediction not in PREDICTIONS:
        raise InvalidInputError(f"unknown prediction {prediction!r}; choose one of: {', '.join(PREDICTIONS)}")
    x0, n, device = _start(model, x0, n, device)
    y, n = check_labels_for_sampling(model, y, guidance, n, device)
    _check_counts(n, steps)
    t_min = start_time(model, prediction, t_min)
    ts = time_grid(grid, steps, t_min, t_max, dtype=x0.dtype if x0 is not None else torch.float32)
    stochastic = check_sigma(sigma, ts)
    if x0 is None:
        shape = getattr(model, "data_shape", None)
        if shape is None:
            raise InvalidInputError("the model has no data_shape; pass the starting points x0")
        x0 = noise(n, tuple(shape), generator, device)
    x0 = x0.to(device)
    ts = ts.to(device=device, dtype=x0.dtype)

    field = guided_field(model, y, guidance)
    velocity = as_velocity(field, path, prediction)
    save = "all" if return_trajectory else "final"
    multistep = find_multistep(solver)
    if stochastic and (compile or multistep is not None):
        what = "compiled sampling" if compile else f"the multistep solver {multistep.name!r}"
        raise IncompatibleError(f"{what} integrates the ODE (sigma = 0), not an SDE; choose sigma = 0, or sample the "
                                "SDE without it (an SDE solver such as euler_maruyama)")
    if uses_jumps(model, solver, stochastic, prediction):
        trajectory = flow_map_sampler(field, x0, ts, save, callback)
    elif compile:
        trajectory = compiled_ode_sampler(velocity, x0, ts, solver or "heun", save, callback,
                                          backend="inductor" if compile is True else compile)
    elif multistep is not None:
        trajectory = multistep.sample(velocity, path, x0, ts, save, callback)
    elif stochastic:
        trajectory = sde_sampler(diffusion_drift(field, path, prediction, sigma), velocity, x0, ts,
                                 NoiseScale(sigma), solver or "euler_maruyama", ode_tail, generator, save, callback)
    else:
        trajectory = ode_sampler(velocity, x0, ts, solver or "heun", save, callback)
    if not bool(torch.isfinite(trajectory.final).all()):
        raise InvalidInputError(
            f"the samples became NaN or inf (steps={steps}, sigma={sigma if not callable(sigma) else 'sigma(t)'}, "
            f"guidance={guidance}): the field diverges on this grid; use more steps, a smaller sigma or guidance, "
            "or check the model's weights")
    return trajectory if return_trajectory else trajectory.final

