"""`simulate`: carry X_0 along a time grid under an ODE or SDE, returning a `Trajectory`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.dynamics.solvers import Solver, get_solver
from flowdiff.errors import IncompatibleError, InvalidInputError


@dataclass
class Trajectory:
    """Simulated states X_t at `times`; `states` has shape (len(times), batch, *shape).

    `nfe` counts drift calls; `steps` holds an adaptive solver's {"accepted", "rejected"} step counts.
    """

    times: torch.Tensor
    states: torch.Tensor
    nfe: int
    steps: dict = field(default_factory=dict)

    @property
    def final(self) -> torch.Tensor:
        """The last state X_{t_N}."""
        return self.states[-1]


def check_grid(ts: torch.Tensor) -> torch.Tensor:
    """Return ts if it is a 1-d strictly monotone grid of at least two finite times."""
    ts = torch.as_tensor(ts)
    if ts.ndim != 1 or ts.numel() < 2:
        raise InvalidInputError(f"time grid must be 1-d with >= 2 times, got shape {tuple(ts.shape)}")
    if not torch.is_floating_point(ts):
        ts = ts.to(torch.get_default_dtype())
    steps = ts[1:] - ts[:-1]
    if not bool(torch.isfinite(ts).all()):
        raise InvalidInputError("time grid contains NaN or inf")
    if not (bool((steps > 0).all()) or bool((steps < 0).all())):
        raise InvalidInputError("time grid must be strictly increasing or strictly decreasing")
    return ts


def check_state(x0: torch.Tensor) -> None:
    """Raise unless x0 is a finite floating tensor of shape (batch, *shape)."""
    if not isinstance(x0, torch.Tensor):
        raise IncompatibleError(f"x0 must be a torch.Tensor, got {type(x0).__name__}")
    if x0.ndim < 1 or not torch.is_floating_point(x0):
        raise InvalidInputError(f"x0 must be a floating tensor (batch, *shape), got {x0.dtype}")
    if not bool(torch.isfinite(x0).all()):
        raise InvalidInputError("x0 contains NaN or inf")


def simulate(
    equation: ODE | SDE,
    x0: torch.Tensor,
    ts: torch.Tensor,
    solver: str | Solver = "euler",
    save: str = "final",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
) -> Trajectory:
    """Simulate dX = u dt (+ sigma dW) from X_{ts[0]} = x0 over the grid ts with `solver`.

    `save="all"` keeps every state, `"final"` only the last. SDEs draw their Brownian
    increments from `generator`, or take them as `noise` (standard normals of shape
    (len(ts) - 1, *x0.shape), scaled by sqrt(|dt|) inside). ODEs may run backwards
    (decreasing ts); SDEs run forwards only. `callback` is called after each step with
    {"step", "t", "x", "nfe"} (progress bars, NFE counts, intermediate states).
    """
    solver = get_solver(solver)
    if not isinstance(equation, ODE | SDE):
        raise IncompatibleError(f"equation must be an ODE or SDE, got {type(equation).__name__}")
    solver.check(equation)
    check_state(x0)
    ts = check_grid(ts).to(device=x0.device, dtype=x0.dtype)
    if save not in ("final", "all"):
        raise InvalidInputError(f"save must be 'final' or 'all', got {save!r}")
    if isinstance(equation, SDE) and not bool(ts[1] > ts[0]):
        raise InvalidInputError("an SDE is simulated forwards in time: ts must increase")
    if noise is not None and tuple(noise.shape) != (len(ts) - 1, *x0.shape):
        raise InvalidInputError(
            f"noise must have shape {(len(ts) - 1, *x0.shape)}, got {tuple(noise.shape)}"
        )
    save_all = save == "all"
    try:
        states, nfe, *counts = solver.integrate(equation, x0, ts, save_all, generator, noise, callback)
    except RuntimeError as error:
        if "must match the size" not in str(error):
            raise
        raise InvalidInputError(
            f"the drift or diffusion returned a tensor that does not broadcast to x of shape "
            f"{tuple(x0.shape)} ({error})"
        ) from None
    times = ts if save_all else ts[-1:]
    return Trajectory(times=times, states=torch.stack(states), nfe=nfe, steps=counts[0] if counts else {})
