"""Compiled fixed-grid sampling: each Runge–Kutta step (all its stages, guidance batched in one network call)
is one `torch.compile`d graph, and the loop over the grid feeds it 0-d time tensors — no `.item()`, no
`float(t)`, no host synchronisation inside the loop (`fullgraph=True` makes any graph break an error).

One compiled step serves every grid and step count; a new batch size, dtype or device recompiles it
(`dynamic=False`: shapes are guarded, never silently reused). On a GPU this is the graph a CUDA-graph
capture would replay; that path is not in flowdiff until it has been run on one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.simulate import Trajectory
from flowdiff.dynamics.solvers import FixedStepSolver, RungeKutta, Solver, get_solver, solver_names
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.sampling.multistep import find_multistep

_COMPILED: dict[str, Callable] = {}


def _step(solver: RungeKutta, equation: ODE, x: torch.Tensor, t: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """One Runge–Kutta step x' = x + dt sum_i b_i k_i (the function that is compiled)."""
    return solver.step(equation, x, t, dt)


def compiled_step(backend: str = "inductor") -> Callable:
    """`_step` through torch.compile with this backend (compiled once per backend and process)."""
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_step, backend=backend, dynamic=False, fullgraph=True)
    return _COMPILED[backend]


def compiled_solver(solver: str | Solver) -> RungeKutta:
    """The fixed-step Runge–Kutta solver that compiled sampling runs, or an error naming the ones it can."""
    found = find_multistep(solver) or (get_solver(solver) if isinstance(solver, str | Solver) else solver)
    if not isinstance(found, RungeKutta):
        names = [n for n in solver_names(ODE) if isinstance(get_solver(n), RungeKutta)]
        name = getattr(found, "name", type(found).__name__)
        raise IncompatibleError(f"compiled sampling runs a fixed-step Runge–Kutta solver of the ODE, not {name!r}; "
                                f"choose one of: {', '.join(names)} (or sample without compile)")
    return found


class _CompiledStep(FixedStepSolver):
    """A Runge–Kutta solver whose step is the compiled `_step`: the grid loop stays `FixedStepSolver.integrate`."""

    def __init__(self, solver: RungeKutta, backend: str) -> None:
        self.solver, self.name, self.stages = solver, solver.name, solver.stages
        self.compiled = compiled_step(backend)

    def step(self, equation, x, t, dt, dw):
        """One compiled step of the wrapped solver (dw is None: an ODE)."""
        return self.compiled(self.solver, equation, x, t, dt)


def compiled_ode_sampler(velocity: Callable, x0: torch.Tensor, ts: torch.Tensor, solver: str | Solver = "heun",
                         save: str = "final", callback: Callable[[dict], None] | None = None,
                         backend: str = "inductor") -> Trajectory:
    """Integrate dX = u_t(X) dt from x0 over ts with a compiled Runge–Kutta step; `Trajectory.nfe` counts calls."""
    solver = compiled_solver(solver)
    if save not in ("final", "all"):
        raise InvalidInputError(f"save must be 'final' or 'all', got {save!r}")
    states, nfe = _CompiledStep(solver, backend).integrate(ODE(velocity), x0, ts, save == "all", callback=callback)
    return Trajectory(times=ts if save == "all" else ts[-1:], states=torch.stack(states), nfe=nfe)
