"""Solvers: fixed-step Runge–Kutta methods driven by their coefficients, an adaptive Dopri5
(`flowdiff.dynamics.adaptive`), and the Euler–Maruyama and stochastic Heun methods for SDEs.

A solver knows nothing of models: it sees an equation (drift, diffusion), a state and times.
Every fixed-step solver shares one loop, `FixedStepSolver.integrate`; a method only says how
to take one step. `get_solver` turns a registered name ("heun") or an object into a solver.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import torch

from flowdiff.dynamics.adaptive import NORMS, dormand_prince
from flowdiff.dynamics.equations import ODE, SDE
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.registry import build


class Solver:
    """A numerical method for an ODE or an SDE; `order` is its (strong, for SDEs) order."""

    name: str = "solver"
    order: float = 0.0
    equation_type: type = ODE

    def check(self, equation) -> None:
        """Raise unless this solver can integrate `equation` (no silent ODE/SDE fallback)."""
        if not isinstance(equation, self.equation_type):
            want, got = self.equation_type.__name__, type(equation).__name__
            raise IncompatibleError(
                f"solver '{self.name}' integrates an {want}, got an {got}; "
                f"choose one of: {', '.join(solver_names(type(equation)))}"
            )

    def integrate(
        self,
        equation,
        x0: torch.Tensor,
        ts: torch.Tensor,
        save_all: bool,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> tuple[list[torch.Tensor], int] | tuple[list[torch.Tensor], int, dict]:
        """Integrate from x0 along ts; return the saved states and the number of drift calls (an adaptive
        solver adds a dict of step counts, {"accepted", "rejected"}).

        `callback`, if given, is called after each step with {"step", "t", "x", "nfe"} (the step's
        index from 1, the time reached, the state there, the drift calls so far).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FixedStepSolver(Solver):
    """A one-step method on a given grid: subclasses define `step`; this class owns the loop."""

    stages: int = 1

    def step(self, equation, x, t, dt, dw):  # pragma: no cover - interface
        """Advance x at time t by dt (dw: the Brownian increment, None for ODEs)."""
        raise NotImplementedError

    def integrate(self, equation, x0, ts, save_all, generator=None, noise=None, callback=None):
        dts = (ts[1:] - ts[:-1]).unbind(0)
        increments = self._increments(x0, ts, generator, noise)
        step, x, states = self.step, x0, [x0] if save_all else []
        for k, (t, dt, dw) in enumerate(zip(ts.unbind(0), dts, increments), start=1):
            x = step(equation, x, t, dt, dw)
            if save_all:
                states.append(x)
            if callback is not None:
                callback({"step": k, "t": ts[k], "x": x, "nfe": self.stages * k})
        if not save_all:
            states.append(x)
        if x.shape != x0.shape:  # broadcasting only grows shapes, so checking the end suffices
            raise InvalidInputError(
                f"the state of shape {tuple(x0.shape)} became {tuple(x.shape)}: "
                "the drift and diffusion must return tensors broadcastable to x"
            )
        return states, self.stages * len(dts)

    def _increments(self, x0, ts, generator, noise) -> Iterator[torch.Tensor | None]:
        """The Brownian increments dW of each step (None for each step of an ODE)."""
        return itertools.repeat(None)


class RungeKutta(FixedStepSolver):
    """An explicit Runge–Kutta method given by its Butcher tableau (a, b, c)."""

    def __init__(
        self,
        name: str,
        order: int,
        a: Sequence[Sequence[float]],
        b: Sequence[float],
        c: Sequence[float],
    ) -> None:
        if not (len(a) == len(b) == len(c)):
            raise InvalidInputError("Butcher tableau rows a, weights b and nodes c must match")
        self.name, self.order, self.stages = name, order, len(b)
        self.a = [tuple(row) for row in a]
        self.b, self.c = tuple(b), tuple(c)
        self._rows = [tuple((j, a_ij) for j, a_ij in enumerate(row) if a_ij) for row in self.a]
        self._one_stage = self.b == (1.0,) and self.c == (0.0,)  # the tableau reduces to Euler

    def step(self, equation, x, t, dt, dw=None):
        """k_i = u(x + dt sum_j a_ij k_j, t + c_i dt); x' = x + dt sum_i b_i k_i."""
        drift = equation.drift
        if self._one_stage:
            return x + dt * drift(x, t)
        ks: list[torch.Tensor] = []
        for row, c in zip(self._rows, self.c):
            xi = x
            for j, a_ij in row:
                xi = xi + (dt if a_ij == 1 else a_ij * dt) * ks[j]
            ks.append(drift(xi, t if not c else (t + dt if c == 1 else t + c * dt)))
        return x + dt * _weighted_sum(self.b, ks)

    def __repr__(self) -> str:
        return f"RungeKutta({self.name!r}, order={self.order})"


def _weighted_sum(weights: Sequence[float], terms: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i w_i k_i, skipping zero weights and unit multiplications."""
    total = None
    for w, k in zip(weights, terms):
        if w:
            term = k if w == 1 else w * k
            total = term if total is None else total + term
    return total


def euler() -> RungeKutta:
    """Euler's method x' = x + dt u(x, t): order 1."""
    return RungeKutta("euler", 1, a=[[]], b=[1.0], c=[0.0])


def midpoint() -> RungeKutta:
    """The explicit midpoint method: order 2."""
    return RungeKutta("midpoint", 2, a=[[], [0.5]], b=[0.0, 1.0], c=[0.0, 0.5])


def heun() -> RungeKutta:
    """Heun's method (explicit trapezoid): order 2."""
    return RungeKutta("heun", 2, a=[[], [1.0]], b=[0.5, 0.5], c=[0.0, 1.0])


def rk4() -> RungeKutta:
    """The classical fourth-order Runge–Kutta method: order 4."""
    return RungeKutta(
        "rk4",
        4,
        a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
        b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
        c=[0.0, 0.5, 0.5, 1.0],
    )


class Dopri5(Solver):
    """Adaptive Dormand–Prince 5(4) with a PI step-size controller (`flowdiff.dynamics.adaptive`): order 5.

    The local error is kept below atol + rtol |x| in the RMS norm over the whole batch
    (norm="batch") or for every sample (norm="sample"); at most `max_steps` steps are tried.
    `integrate` also returns the accepted and rejected step counts.
    """

    name = "dopri5"
    order = 5

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-5, norm: str = "batch", max_steps: int = 100_000) -> None:
        if not (rtol > 0 and atol > 0):
            raise InvalidInputError(f"rtol and atol must be > 0, got {rtol}, {atol}")
        if norm not in NORMS:
            raise InvalidInputError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise InvalidInputError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.rtol, self.atol, self.norm, self.max_steps = rtol, atol, norm, max_steps

    def integrate(self, equation, x0, ts, save_all, generator=None, noise=None, callback=None):
        result = dormand_prince(equation.drift, x0, ts, save_all, self.rtol, self.atol, self.norm, self.max_steps,
                                callback=callback)
        return result.states, result.nfe, {"accepted": result.accepted, "rejected": result.rejected}

    def __repr__(self) -> str:
        return f"Dopri5(rtol={self.rtol}, atol={self.atol}, norm={self.norm!r})"


class SDESolver(FixedStepSolver):
    """A fixed-step SDE method: draws Brownian increments dW ~ N(0, |dt| I) from the generator."""

    equation_type = SDE
    weak_order: float = 1.0

    def _increments(self, x0, ts, generator, noise):
        scales = (ts[1:] - ts[:-1]).abs().sqrt().unbind(0)
        if noise is not None:
            return (scale * z for scale, z in zip(scales, noise.unbind(0)))
        return (
            scale * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            for scale in scales
        )


class EulerMaruyama(SDESolver):
    """Euler–Maruyama x' = x + u(x, t) dt + sigma_t dW: strong order 1/2, weak order 1."""

    name = "euler_maruyama"
    order = 0.5
    weak_order = 1.0

    def step(self, equation, x, t, dt, dw):
        return x + dt * equation.drift(x, t) + equation.diffusion(x, t) * dw


class StochasticHeun(SDESolver):
    """Stochastic Heun (predictor–corrector trapezoid) for additive noise: strong order 1.

    With state-dependent noise sigma(x, t) the trapezoid rule converges to the *Stratonovich*
    solution, not the Itô one that Euler–Maruyama and the rest of flowdiff mean (on geometric
    Brownian motion dX = X dW it gives E[X_1] = e^{1/2} instead of 1), so `check` refuses an
    SDE whose noise is not declared additive.
    """

    name = "stochastic_heun"
    order = 1.0
    weak_order = 1.0
    stages = 2

    def check(self, equation) -> None:
        """Refuse ODEs and SDEs with noise that may depend on the state."""
        super().check(equation)
        if not equation.additive:
            raise IncompatibleError(
                "stochastic Heun converges to the Stratonovich solution when sigma depends on x, "
                "not to the Itô solution of this SDE; use euler_maruyama, or, if sigma(x, t) "
                "depends on t only, declare it with SDE(drift, diffusion, additive=True)"
            )

    def step(self, equation, x, t, dt, dw):
        drift, diffusion = equation.drift, equation.diffusion
        f0, g0 = drift(x, t), diffusion(x, t)
        predictor = x + dt * f0 + g0 * dw
        t1 = t + dt
        f1, g1 = drift(predictor, t1), diffusion(predictor, t1)
        return x + (0.5 * dt) * (f0 + f1) + (0.5 * (g0 + g1)) * dw


SOLVERS: dict[str, Callable[[], Solver]] = {
    "euler": euler,
    "midpoint": midpoint,
    "heun": heun,
    "rk4": rk4,
    "dopri5": Dopri5,
    "euler_maruyama": EulerMaruyama,
    "stochastic_heun": StochasticHeun,
}
"""The registry: a solver's name -> a function that makes it."""


def register(name: str, factory: Callable[[], Solver]) -> None:
    """Add a solver to the registry under `name`."""
    SOLVERS[name] = factory


def solver_names(equation_type: type | None = None) -> list[str]:
    """Registered solver names, optionally only those for ODE or SDE."""
    if equation_type is None:
        return list(SOLVERS)
    return [n for n, f in SOLVERS.items() if issubclass(equation_type, f().equation_type)]


def get_solver(solver: str | Solver) -> Solver:
    """Return `solver` itself, or the registered solver of that name."""
    return build(SOLVERS, solver, "solver", Solver)
