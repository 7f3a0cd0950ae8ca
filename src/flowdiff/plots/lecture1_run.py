"""Lecture 1's pictures from settings: build the process, simulate it once with `flowdiff.simulate`, draw it.

`run("ou", sigmas=[0.5, 1, 2])` writes `runs/simulate/ou.png` (and a GIF with `animate=True`); the figures
themselves are `flowdiff.plots.lecture1`. A `callback` sees every step of every simulation, with
the overall progress in "done" out of "total" steps and a "task" naming the simulation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flowdiff.errors import InvalidInputError


@dataclass(frozen=True)
class Defaults:
    """Per-process defaults of the settings a caller did not give."""

    sigmas: tuple[float, ...]
    paths: int
    steps: int
    t_end: float
    solver: str


DEFAULTS = {
    "brownian": Defaults(sigmas=(1.0,), paths=50, steps=500, t_end=5.0, solver="euler_maruyama"),
    "ou": Defaults(sigmas=(0.5, 1.0, 2.0), paths=11, steps=1000, t_end=20.0, solver="euler_maruyama"),
    "langevin": Defaults(sigmas=(0.6,), paths=1000, steps=1500, t_end=30.0, solver="euler_maruyama"),
    "flow": Defaults(sigmas=(0.0,), paths=12, steps=200, t_end=10.0, solver="rk4"),
}
"""The processes of Lecture 1 that `run` draws, with their defaults."""


@dataclass(frozen=True)
class Settings:
    """What to simulate: a process of DEFAULTS with every setting resolved and checked."""

    process: str
    sigmas: tuple[float, ...]
    paths: int
    steps: int
    t_end: float
    solver: str
    theta: float = 0.25
    omega: float = 1.0
    modes: int = 5
    seed: int = 0


def resolve(process: str, sigmas: Sequence[float] | None = None, paths: int | None = None, steps: int | None = None,
            t_end: float | None = None, solver: str | None = None, theta: float = 0.25, omega: float = 1.0,
            modes: int = 5, seed: int = 0) -> Settings:
    """The process's defaults with the given settings on top, checked (messages name the settings)."""
    if process not in DEFAULTS:
        raise InvalidInputError(f"unknown process {process!r}; choose one of: {', '.join(DEFAULTS)}")
    defaults = DEFAULTS[process]
    settings = Settings(process, tuple(sigmas) if sigmas else defaults.sigmas,
                        defaults.paths if paths is None else paths, defaults.steps if steps is None else steps,
                        defaults.t_end if t_end is None else t_end, solver or defaults.solver, theta, omega, modes,
                        seed)
    for value, name in ((settings.steps, "steps"), (settings.paths, "paths")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be an integer >= 1, got {value!r}")
    if not (math.isfinite(settings.t_end) and settings.t_end > 0):
        raise InvalidInputError(f"t_end must be a positive number, got {settings.t_end}")
    for value, name in ((settings.t_end, "t_end"), *((s, "sigma") for s in settings.sigmas), (theta, "theta")):
        if math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise InvalidInputError(f"{name}={value:g} is beyond the float32 numbers the simulation computes with "
                                    f"(at most {FLOAT32_MAX:.3g})")
    if not 1 <= modes <= 64:
        raise InvalidInputError(f"modes must be between 1 and 64, got {modes}")
    if not math.isfinite(omega) or abs(omega) > 1e3:
        raise InvalidInputError(f"omega must be a finite rotation rate with |omega| <= 1000, got {omega}")
    if process != "ou" and len(settings.sigmas) > 1:
        raise InvalidInputError(f"{process} takes one sigma, got {len(settings.sigmas)}; several sigmas are for 'ou'")
    for value, name in [*((s, "sigma") for s in settings.sigmas), (theta, "theta")]:
        if not (math.isfinite(value) and value >= 0):
            raise InvalidInputError(f"{name} must be a finite number >= 0, got {value}")
    _check_memory(settings)
    return settings


FLOAT32_MAX = float(torch.finfo(torch.float32).max)
"""The largest number a float32 state or time can hold."""

MEMORY_SHARE = 0.5
"""The largest share of the machine's memory that the saved paths may take."""


def _check_memory(settings: Settings) -> None:
    """Refuse up front paths x (steps + 1) x dimensions that cannot be held in memory, with the estimate."""
    dims = 1 if settings.process in ("brownian", "ou") else 2
    needed = 4 * settings.paths * (settings.steps + 1) * dims * len(settings.sigmas)  # float32 states, all saved
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > MEMORY_SHARE * available:
        raise InvalidInputError(
            f"{settings.paths} paths x {settings.steps + 1} times x {dims} coordinates need {needed / 2**30:.3g} GiB "
            f"to keep every state, more than half of this machine's {available / 2**30:.3g} GiB; use fewer paths or "
            "steps")


def check_finite(simulation_label: str, trajectory) -> None:
    """Refuse paths that became NaN or inf (a diverging or too stiff process), naming where."""
    finite = torch.isfinite(trajectory.states.reshape(len(trajectory.times), -1)).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise InvalidInputError(
            f"the {simulation_label} paths became NaN or inf at t = {float(trajectory.times[first]):.4g} (step "
            f"{first}): the process diverges at this step size; use a smaller theta or sigma, or more steps")


def flow_drift(theta: float, omega: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """u(x) = -theta x + omega J x: a linear field that contracts (theta) and rotates (omega)."""
    matrix = torch.tensor([[-theta, -omega], [omega, -theta]])

    def drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x @ matrix.to(x).T

    return drift


@dataclass
class Simulation:
    """The simulated paths: one (sigma, states) per simulation on the grid `times`, and what the figure needs."""

    settings: Settings
    times: torch.Tensor
    runs: list[tuple[float, torch.Tensor]]
    density: object = None
    drift: Callable | None = None


def _equations(settings: Settings, generator: torch.Generator):
    """(label, sigma, equation, x0) of each simulation, plus the target density (langevin) and drift (flow)."""
    from flowdiff.dynamics.densities import Gaussian, GaussianMixture
    from flowdiff.dynamics.equations import ODE
    from flowdiff.dynamics.processes import BrownianMotion, Langevin, OrnsteinUhlenbeck

    process, paths, sigma = settings.process, settings.paths, settings.sigmas[0]
    if process == "brownian":
        return [(process, sigma, BrownianMotion(sigma), torch.zeros(paths, 1))], None, None
    if process == "ou":
        starts = torch.linspace(-10.0, 10.0, paths)[:, None] if paths > 1 else torch.full((1, 1), 10.0)
        equations = [(f"ou sigma={s:g}", s, OrnsteinUhlenbeck(settings.theta, s), starts) for s in settings.sigmas]
        return equations, None, None
    if process == "langevin":
        density = GaussianMixture.symmetric_2d(nmodes=settings.modes, std=1.0, scale=10.0)
        x0 = Gaussian(torch.zeros(2), 15.0**2).sample(paths, generator=generator)
        return [(process, sigma, Langevin(density, sigma), x0)], density, None
    drift = flow_drift(settings.theta, settings.omega)
    angles = torch.arange(paths) * (2 * math.pi / paths)
    x0 = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return [(process, 0.0, ODE(drift), x0)], None, drift


def simulate_process(settings: Settings, callback: Callable[[dict], None] | None = None) -> Simulation:
    """Simulate each equation of the process once over the uniform grid 0..t_end (every state saved)."""
    from flowdiff.dynamics import grids
    from flowdiff.dynamics.simulate import simulate

    ts = grids.uniform(0.0, settings.t_end, settings.steps)
    generator = torch.Generator().manual_seed(settings.seed)
    equations, density, drift = _equations(settings, generator)
    total, runs = settings.steps * len(equations), []
    for k, (label, sigma, equation, x0) in enumerate(equations):
        step = _reporting(callback, label, k * settings.steps, total)
        trajectory = simulate(equation, x0, ts, settings.solver, save="all", generator=generator, callback=step)
        check_finite(label, trajectory)
        runs.append((sigma, trajectory.states))
    return Simulation(settings, trajectory.times, runs, density, drift)


def _reporting(callback: Callable[[dict], None] | None, task: str, before: int, total: int):
    """The callback of one simulation: simulate's step report with the task and the overall done/total added."""
    if callback is None:
        return None
    return lambda info: callback({**info, "task": task, "done": before + info["step"], "total": total})


def figure(simulation: Simulation):
    """The process's figure of `flowdiff.plots.lecture1` (a matplotlib Figure)."""
    from flowdiff.plots import lecture1

    settings, times, states = simulation.settings, simulation.times, simulation.runs[-1][1]
    if settings.process == "brownian":
        return lecture1.brownian_figure(times, states, settings.sigmas[0])
    if settings.process == "ou":
        return lecture1.ou_figure(times, simulation.runs, settings.theta)
    if settings.process == "langevin":
        return lecture1.langevin_figure(times, states, simulation.density)
    return lecture1.flow_figure(times, states, simulation.drift)


def run(process: str, sigmas: Sequence[float] | None = None, theta: float = 0.25, omega: float = 1.0,
        paths: int | None = None, steps: int | None = None, t_end: float | None = None, solver: str | None = None,
        modes: int = 5, seed: int = 0, out: str | Path = Path("runs/simulate"), animate: bool = False,
        callback: Callable[[dict], None] | None = None) -> list[Path]:
    """Simulate `process`, write `<out>/<process>.png` (and .gif with animate); return the files written."""
    from flowdiff.plots import lecture1

    settings = resolve(process, sigmas, paths, steps, t_end, solver, theta, omega, modes, seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"the figures go into a directory, but {out} is a file")
    simulation = simulate_process(settings, callback)
    written = [lecture1.save_figure(figure(simulation), out / f"{process}.png")]
    if animate:
        written.append(lecture1.save_animation(simulation.times, simulation.runs[-1][1], out / f"{process}.gif",
                                               density=simulation.density))
    return written
