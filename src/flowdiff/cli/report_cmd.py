"""`flowdiff report RUN`: write the run's run_report.html (loss curve, samples, trajectories) into RUN."""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import number_list
from flowdiff.errors import IncompatibleError
from flowdiff.plots.run_report import DEFAULT_GUIDANCE


def report_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    n: int = typer.Option(None, "--n", min=1, help="Samples per row for images (default 8), points for vectors "
                          "(default 1000)."),
    steps: int = typer.Option(20, "--steps", min=1, help="Heun steps of the ODE sampler."),
    guidance: str = typer.Option(None, "--guidance", parser=number_list(float, None, "guidance scales"),
                                 help="Guidance scales of the per-guidance grid (labelled runs), default "
                                 f"{','.join(f'{w:g}' for w in DEFAULT_GUIDANCE)}."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the noise."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
) -> None:
    """Write RUN/run_report.html: training loss, samples (per class and guidance scale), trajectories."""
    from flowdiff.learning.devices import configure_threads
    from flowdiff.plots.run_report import write_run_report
    from flowdiff.runs.layout import read_config

    data = read_config(run_dir).get("data", {})
    if data.get("kind") == "tokens":
        raise IncompatibleError(f"{run_dir} is a discrete (token) run; the report draws ODE samples of vectors or "
                                f"images: use flowdiff sample {run_dir} and flowdiff eval {run_dir}")
    if guidance is not None and data.get("num_classes") is None:
        raise IncompatibleError(f"--guidance needs a label-conditioned model, but {run_dir} was trained "
                                "without labels (drop --guidance)")
    configure_threads(None, device, data.get("kind", "vectors"))
    path = write_run_report(run_dir, n=n, steps=steps, guidance_scales=guidance or DEFAULT_GUIDANCE, seed=seed,
                            device=device)
    print(f"report: {path}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff report` to the command line."""
    app.command("report")(report_command)
