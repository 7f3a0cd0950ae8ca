"""`flowdiff simulate {brownian,ou,langevin,flow}`: draw the pictures of Lecture 1.

The command parses its options and calls `flowdiff.plots.lecture1_run.run`, which simulates each
process once with `flowdiff.simulate`; the simulation's callback drives the progress bar.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, names
from flowdiff.dynamics.solvers import SOLVERS
from flowdiff.plots.lecture1_run import DEFAULTS


def simulate_command(
    process: str = typer.Argument(..., parser=choice(DEFAULTS, "process"),
                                  help=f"What to simulate: {names(DEFAULTS)}."),
    sigma: list[float] = typer.Option(None, "--sigma", min=0.0, help="Noise level sigma (repeat for several OU "
                                      "rows). Default: ou 0.5 1 2, brownian 1, langevin 0.6."),
    theta: float = typer.Option(0.25, "--theta", min=0.0, help="OU mean reversion rate; flow contraction rate."),
    omega: float = typer.Option(1.0, "--omega", min=-1000.0, max=1000.0,
                                help="flow: rotation rate of u(x) = -theta x + omega J x."),
    paths: int = typer.Option(None, "--paths", min=1, help="Number of paths / points (default per process)."),
    steps: int = typer.Option(None, "--steps", min=1, help="Number of time steps (default per process)."),
    t_end: float = typer.Option(None, "--t-end", min=0.0, help="Final time T > 0 of the grid 0..T (default per "
                                "process)."),
    solver: str = typer.Option(None, "--solver", parser=choice(SOLVERS, "solver"),
                               help=f"Solver: {names(SOLVERS)} (default euler_maruyama; rk4 for flow)."),
    modes: int = typer.Option(5, "--modes", min=1, max=64, help="langevin: number of modes of the target mixture."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the random generator."),
    out: Path = typer.Option(Path("runs/simulate"), "--out", help="Directory for <process>.png (and .gif); "
                          "flowdiff's outputs live under runs/ unless told otherwise."),
    animate: bool = typer.Option(False, "--animate", help="Also write an animated GIF."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing figures of this process in --out."),
) -> None:
    """Simulate a process of Lecture 1 (brownian, ou, langevin, flow) and draw it as PNG (and GIF)."""
    from flowdiff.cli.options import refuse_overwrite
    from flowdiff.cli.progress import progress_bar
    from flowdiff.plots.lecture1_run import run

    refuse_overwrite([out / f"{process}.png", *([out / f"{process}.gif"] if animate else [])], force)
    with progress_bar() as bar:
        task = bar.add_task(process, total=None)

        def show(info: dict) -> None:
            bar.update(task, description=info["task"], completed=info["done"], total=info["total"])

        written = run(process, sigma, theta, omega, paths, steps, t_end, solver, modes, seed, out, animate,
                      callback=show)
    for path in written:
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add the `simulate` command to the flowdiff app."""
    app.command("simulate")(simulate_command)
