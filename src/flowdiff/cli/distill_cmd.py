"""`flowdiff distill RUN --steps K --out RUN2`: a flow map that samples in K jumps (and in every divisor of K),
trained on the teacher's ODE states at the times k / K (stored in shards in OUT-trajectories, resumable)."""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, names
from flowdiff.cli.reflow_cmd import GUIDANCE_HELP
from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.solvers import solver_names

ODE_SOLVERS = solver_names(ODE)


def distill_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="The teacher: a run directory written by flowdiff train."),
    steps: int = typer.Option(..., "--steps", min=1, help="Jumps of the student (1 = a one-step generator)."),
    out: Path = typer.Option(..., "--out", help="Run directory of the student."),
    trajectories: int = typer.Option(20000, "--trajectories", min=1, help="Teacher ODE trajectories to store."),
    trajectories_dir: Path = typer.Option(None, "--trajectories-dir", help="Their folder (default: OUT-trajectories)."),
    ode_steps: int = typer.Option(64, "--ode-steps", min=1, help="Steps of the teacher's ODE solver per trajectory."),
    solver: str = typer.Option("heun", "--solver", parser=choice(ODE_SOLVERS, "ODE solver"),
                               help=f"The teacher's ODE solver: {names(ODE_SOLVERS)}."),
    train_steps: int = typer.Option(2000, "--train-steps", min=1, help="Training steps of the student."),
    batch: int = typer.Option(256, "--batch", min=1, help="Minibatch size."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate."),
    guidance: float = typer.Option(None, "--guidance", help=GUIDANCE_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the trajectories' noise (and labels) and of training."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted distillation in --out."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Distil RUN into a K-step flow map (regression on its ODE), into --out."""
    from flowdiff.cli.progress import TrainingProgress
    from flowdiff.cli.reflow_cmd import check_runs
    from flowdiff.learning.devices import configure_threads
    from flowdiff.runs.reflow import distill

    check_runs(run_dir, out, resume, force, guidance)
    configure_threads(None, "cpu", "vectors")
    trainer, result = distill(run_dir, steps, trajectories, out, trajectories_dir, ode_steps, solver, resume=resume,
                              force=force, hooks=[] if quiet else [TrainingProgress()],
                              guidance=1.0 if guidance is None else guidance, steps=train_steps, batch_size=batch,
                              lr=lr, seed=seed, device="cpu")
    if result.stopped:
        print(f"stopped at step {trainer.step}; continue with the same command and --resume")
        raise SystemExit(130)
    print(f"distilled {run_dir} into a {steps}-step flow map in {out} ({result.step} training steps); sample with: "
          f"flowdiff sample {out} --steps {steps}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff distill` to the command line."""
    app.command("distill")(distill_command)
