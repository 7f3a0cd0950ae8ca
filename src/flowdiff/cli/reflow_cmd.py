"""`flowdiff reflow RUN --pairs N --out RUN2`: rectified flow — a new flow trained on RUN's own ODE pairs.

The pairs (an ODE solve each) are stored in shards in --pairs-dir (default: RUN2-pairs beside RUN2); an
interrupted command continues with --resume, reusing the shards made and the checkpoints written.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, names
from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.solvers import solver_names

ODE_SOLVERS = solver_names(ODE)


def check_runs(run_dir: Path, out: Path, resume: bool, force: bool, guidance: float | None = None) -> None:
    """Before any ODE solve: the teacher is a run, --out is new (or --resume / --force says what to do), and
    --guidance is given only for a label-conditioned teacher."""
    from flowdiff.errors import IncompatibleError, InvalidInputError
    from flowdiff.runs.layout import CONFIG_FILE, is_run, read_config

    if resume and force:
        raise InvalidInputError("--resume continues a run and --force replaces it; give one of them")
    if not (run_dir / CONFIG_FILE).is_file():
        raise InvalidInputError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); give a run made by flowdiff "
                                "train")
    if is_run(out) and not (resume or force):
        raise InvalidInputError(f"run directory {out} already exists; continue it (--resume), replace it (--force), "
                                "or choose another --out")
    if guidance is not None and read_config(run_dir).get("data", {}).get("num_classes") is None:
        raise IncompatibleError(f"--guidance needs a label-conditioned teacher, but {run_dir} was trained without "
                                "labels (drop --guidance)")


GUIDANCE_HELP = ("Guidance scale w of a label-conditioned teacher's ODE (default 1: conditional, no guidance); "
                 "recorded with the stored shards.")


def reflow_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="The teacher: a run directory written by flowdiff train."),
    pairs: int = typer.Option(..., "--pairs", min=1, help="Number of (noise, sample) pairs to make with RUN's ODE."),
    out: Path = typer.Option(..., "--out", help="Run directory of the reflowed model."),
    pairs_dir: Path = typer.Option(None, "--pairs-dir", help="Folder of the stored pairs (default: OUT-pairs)."),
    ode_steps: int = typer.Option(50, "--ode-steps", min=1, help="Steps of the teacher's ODE solver per pair."),
    solver: str = typer.Option("heun", "--solver", parser=choice(ODE_SOLVERS, "ODE solver"),
                               help=f"The teacher's ODE solver: {names(ODE_SOLVERS)}."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Training steps of the reflowed model."),
    batch: int = typer.Option(256, "--batch", min=1, help="Minibatch size."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="Peak learning rate."),
    guidance: float = typer.Option(None, "--guidance", help=GUIDANCE_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the pairs' noise (and labels) and of training."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted reflow in --out."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Reflow (rectified flow): make RUN's ODE pairs and train a straighter flow on them, into --out."""
    from flowdiff.cli.progress import TrainingProgress
    from flowdiff.learning.devices import configure_threads
    from flowdiff.runs.reflow import reflow

    check_runs(run_dir, out, resume, force, guidance)
    configure_threads(None, "cpu", "vectors")
    trainer, result = reflow(run_dir, pairs, out, pairs_dir, ode_steps, solver, resume=resume, force=force,
                             hooks=[] if quiet else [TrainingProgress()],
                             guidance=1.0 if guidance is None else guidance, steps=steps, batch_size=batch, lr=lr,
                             seed=seed, device="cpu")
    if result.stopped:
        print(f"stopped at step {trainer.step}; continue with: flowdiff reflow {run_dir} --pairs {pairs} --out {out} "
              "--resume")
        raise SystemExit(130)
    print(f"reflowed {run_dir} with {pairs} ODE pairs into {out} ({result.step} steps); sample with: "
          f"flowdiff sample {out} --steps 1 --solver euler")


def register(app: typer.Typer) -> None:
    """Add `flowdiff reflow` to the command line."""
    app.command("reflow")(reflow_command)
