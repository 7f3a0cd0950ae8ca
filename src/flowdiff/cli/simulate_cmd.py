"""`flowdiff simulate {brownian,ou,langevin,flow}`: draw the pictures of Lecture 1.

Each process is an equation of `flowdiff.dynamics` simulated with `flowdiff.simulate`
(in chunks of the time grid, so that long runs can show a progress bar; the generator is
consumed exactly as by one call) and drawn by `flowdiff.plots.lecture1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import typer

from flowdiff.errors import InvalidInputError


@dataclass(frozen=True)
class Defaults:
    """Per-process defaults of the options a user did not give."""

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
"""The processes that `flowdiff simulate` draws, with their defaults."""

PROGRESS_WORK = 200_000
"""Show a progress bar when steps x paths x coordinates exceeds this."""


def simulate_with_progress(equation, x0, ts, solver, generator, show: bool, label: str = "simulating"):
    """`simulate(..., save="all")` over 50 consecutive chunks of ts, advancing a rich progress bar on
    a terminal (and in one call when `show` is false or stderr is not a terminal)."""
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from flowdiff.dynamics.simulate import Trajectory, simulate

    console = Console(stderr=True)
    if not (show and console.is_terminal):
        return simulate(equation, x0, ts, solver=solver, save="all", generator=generator)
    steps = len(ts) - 1
    bounds = sorted({round(k * steps / 50) for k in range(51)})
    states, nfe, x = [x0], 0, x0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(label, total=steps)
        for a, b in zip(bounds[:-1], bounds[1:]):
            part = simulate(equation, x, ts[a : b + 1], solver=solver, save="all", generator=generator)
            states.extend(part.states[1:].unbind(0))
            nfe, x = nfe + part.nfe, part.final
            progress.update(task, completed=b)
    return Trajectory(times=ts, states=torch.stack(states), nfe=nfe)


def _flow_drift(theta: float, omega: float):
    """u(x) = -theta x + omega J x: a linear field that contracts (theta) and rotates (omega)."""
    import torch

    matrix = torch.tensor([[-theta, -omega], [omega, -theta]])

    def drift(x, t):
        return x @ matrix.to(x).T

    return drift


def run(
    process: str,
    sigmas: list[float] | None = None,
    theta: float = 0.25,
    omega: float = 1.0,
    paths: int | None = None,
    steps: int | None = None,
    t_end: float | None = None,
    solver: str | None = None,
    modes: int = 5,
    seed: int = 0,
    out: Path = Path("figures"),
    animate: bool = False,
) -> list[Path]:
    """Simulate `process`, write `<out>/<process>.png` (and .gif with animate); return the files written."""
    if process not in DEFAULTS:
        raise InvalidInputError(f"unknown process {process!r}; choose one of: {', '.join(DEFAULTS)}")
    defaults = DEFAULTS[process]
    sigmas = list(sigmas) if sigmas else list(defaults.sigmas)
    paths = defaults.paths if paths is None else paths
    steps = defaults.steps if steps is None else steps
    t_end = defaults.t_end if t_end is None else t_end
    solver = solver or defaults.solver
    if steps < 1:
        raise InvalidInputError(f"--steps must be >= 1, got {steps}")
    if paths < 1:
        raise InvalidInputError(f"--paths must be >= 1, got {paths}")
    if not (math.isfinite(t_end) and t_end > 0):
        raise InvalidInputError(f"--t-end must be a positive number, got {t_end}")
    if not 1 <= modes <= 64:
        raise InvalidInputError(f"--modes must be between 1 and 64, got {modes}")
    if not math.isfinite(omega) or abs(omega) > 1e3:
        raise InvalidInputError(f"--omega must be a finite rotation rate with |omega| <= 1000, got {omega}")
    if process != "ou" and len(sigmas) > 1:
        raise InvalidInputError(
            f"{process} takes one --sigma, got {len(sigmas)}; several sigmas are for 'ou'"
        )
    for value, name in [*((s, "--sigma") for s in sigmas), (theta, "--theta")]:
        if not value >= 0:
            raise InvalidInputError(f"{name} must be >= 0, got {value}")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out must be a directory, but {out} is a file")

    # The input is checked: now the heavy imports (torch, matplotlib).
    import torch

    from flowdiff.dynamics import grids
    from flowdiff.dynamics.densities import Gaussian, GaussianMixture
    from flowdiff.dynamics.equations import ODE
    from flowdiff.dynamics.processes import BrownianMotion, Langevin, OrnsteinUhlenbeck
    from flowdiff.plots import lecture1

    ts = grids.uniform(0.0, t_end, steps)
    generator = torch.Generator().manual_seed(seed)
    show = steps * paths * (2 if process in ("langevin", "flow") else 1) * len(sigmas) > PROGRESS_WORK
    density = None

    def simulate(equation, x0, label=process):
        return simulate_with_progress(equation, x0, ts, solver, generator, show, label)

    if process == "brownian":
        equation = BrownianMotion(sigmas[0])
        trajectory = simulate(equation, torch.zeros(paths, 1))
        fig = lecture1.brownian_figure(trajectory.times, trajectory.states, sigmas[0])
    elif process == "ou":
        starts = torch.linspace(-10.0, 10.0, paths)[:, None] if paths > 1 else torch.full((1, 1), 10.0)
        runs = []
        for sigma in sigmas:
            trajectory = simulate(OrnsteinUhlenbeck(theta, sigma), starts, f"ou sigma={sigma:g}")
            runs.append((sigma, trajectory.states))
        fig = lecture1.ou_figure(trajectory.times, runs, theta)
    elif process == "langevin":
        density = GaussianMixture.symmetric_2d(nmodes=modes, std=1.0, scale=10.0)
        x0 = Gaussian(torch.zeros(2), 15.0**2).sample(paths, generator=generator)
        trajectory = simulate(Langevin(density, sigmas[0]), x0)
        fig = lecture1.langevin_figure(trajectory.times, trajectory.states, density)
    else:
        drift = _flow_drift(theta, omega)
        angles = torch.arange(paths) * (2 * math.pi / paths)
        x0 = 4.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
        trajectory = simulate(ODE(drift), x0)
        fig = lecture1.flow_figure(trajectory.times, trajectory.states, drift)

    out.mkdir(parents=True, exist_ok=True)
    written = [lecture1.save_figure(fig, out / f"{process}.png")]
    if animate:
        states = trajectory.states if process != "ou" else runs[-1][1]
        gif = out / f"{process}.gif"
        written.append(lecture1.save_animation(trajectory.times, states, gif, density=density))
    return written


def simulate_command(
    process: str = typer.Argument(..., help="What to simulate: brownian, ou, langevin or flow."),
    sigma: list[float] = typer.Option(
        None, "--sigma", help="Noise level sigma (repeat for several OU rows). Default: ou 0.5 1 2, "
        "brownian 1, langevin 0.6."),
    theta: float = typer.Option(0.25, "--theta", help="OU mean reversion rate; flow contraction rate."),
    omega: float = typer.Option(1.0, "--omega", help="flow: rotation rate of u(x) = -theta x + omega J x."),
    paths: int = typer.Option(None, "--paths", help="Number of paths / points (default per process)."),
    steps: int = typer.Option(None, "--steps", help="Number of time steps (default per process)."),
    t_end: float = typer.Option(None, "--t-end", help="Final time T of the grid 0..T (default per process)."),
    solver: str = typer.Option(None, "--solver", help="Solver name (default euler_maruyama; rk4 for flow)."),
    modes: int = typer.Option(5, "--modes", help="langevin: number of modes of the target mixture."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random generator."),
    out: Path = typer.Option(Path("figures"), "--out", help="Directory for <process>.png (and .gif)."),
    animate: bool = typer.Option(False, "--animate", help="Also write an animated GIF."),
) -> None:
    """Simulate a process of Lecture 1 (brownian, ou, langevin, flow) and draw it as PNG (and GIF)."""
    written = run(process, sigma, theta, omega, paths, steps, t_end, solver, modes, seed, out, animate)
    for path in written:
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to the flowdiff app."""
    app.command("simulate")(simulate_command)
