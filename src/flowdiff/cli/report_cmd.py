"""`flowdiff report RUN`: write the run's run_report.html (loss curve, samples, trajectories) into RUN."""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.errors import IncompatibleError, InvalidInputError


def parse_guidance(text: str) -> tuple[float, ...]:
    """"0,1,3" -> (0.0, 1.0, 3.0): finite guidance scales."""
    from flowdiff.plots.run_report import check_guidance_scales

    try:
        values = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
        return check_guidance_scales(values)
    except (ValueError, InvalidInputError):
        raise InvalidInputError(f"--guidance must be comma-separated finite numbers like 0,1,3, got "
                                f"{text!r}") from None


def report_command(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run directory written by flowdiff train."),
    n: int = typer.Option(None, "--n", help="Samples per row for images (default 8), points for vectors "
                                            "(default 1000)."),
    steps: int = typer.Option(20, "--steps", help="Heun steps of the ODE sampler."),
    guidance: str = typer.Option(None, "--guidance", help="Guidance scales of the per-guidance grid "
                                                          "(labelled runs), default 0,1,3."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, mps or auto."),
) -> None:
    """Write RUN/run_report.html: training loss, samples (per class and guidance scale), trajectories."""
    from flowdiff.learning.devices import configure_threads
    from flowdiff.plots.run_report import DEFAULT_GUIDANCE, write_run_report
    from flowdiff.runs.layout import read_config

    scales = parse_guidance(guidance) if guidance is not None else DEFAULT_GUIDANCE
    if (n is not None and n < 1) or steps < 1:
        raise InvalidInputError(f"--n and --steps must be >= 1, got --n {n} --steps {steps}")
    config = read_config(run_dir)
    data = config.get("data", {})
    if guidance is not None and data.get("num_classes") is None:
        raise IncompatibleError(f"--guidance needs a label-conditioned model, but {run_dir} was trained "
                                "without labels (drop --guidance)")
    configure_threads(None, device, data.get("kind", "vectors"))
    path = write_run_report(run_dir, n=n, steps=steps, guidance_scales=scales, seed=seed, device=device)
    print(f"report: {path}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff report` to the command line."""
    app.command("report")(report_command)
