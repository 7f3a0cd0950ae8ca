"""`flowdiff demo`: train a flow on a 2-D toy set, sample it as an ODE and as an SDE, and write a report."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from flowdiff.cli.options import number_list
from flowdiff.errors import InvalidInputError


def free_directory(base: Path) -> Path:
    """`base` if it does not exist yet, else the first of base-2, base-3, ... that does not."""
    if not base.exists():
        return base
    k = 2
    while Path(f"{base}-{k}").exists():
        k += 1
    return Path(f"{base}-{k}")


def demo_command(
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/demo, or runs/demo-2, ...)."),
    data: str = typer.Option("moons", "--data", help="Toy 2-D set: moons, circles, checkerboard, eight_gaussians, "
                             "spirals, gmm."),
    steps: int = typer.Option(4000, "--steps", min=1, help="Training steps."),
    batch: int = typer.Option(512, "--batch", min=1, help="Minibatch size."),
    lr: float = typer.Option(3e-3, "--lr", help="Peak learning rate."),
    hidden: str = typer.Option("128,128,128", "--hidden", help="MLP layer widths."),
    coupling: str = typer.Option("independent", "--coupling", help="independent, ot or sinkhorn."),
    sigma: float = typer.Option(1.0, "--sigma", help="Noise level of the SDE sampler (> 0)."),
    n: int = typer.Option(2000, "--n", min=8, help="Samples drawn for the figures."),
    n_eval: int = typer.Option(1000, "--n-eval", min=8, help="Samples per entry of the quality table."),
    quality_steps: str = typer.Option("1,2,4,8,16,32,64", "--quality-steps", help="Step counts of the table.",
                                      parser=number_list(int, 1, "--quality-steps")),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random draw."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: 1, fastest for a small MLP)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train on a 2-D toy set, sample with the ODE and the SDE, and write report.html."""
    import math

    from flowdiff.cli.progress import TrainingProgress
    from flowdiff.data.toy2d import TOY_DATASETS
    from flowdiff.learning.devices import configure_threads
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.plots.demo_report import DemoSettings, write_demo_report
    from flowdiff.runs.build import build_trainer
    from flowdiff.runs.directory import RunExistsError

    if data not in TOY_DATASETS:
        raise InvalidInputError(f"the demo runs on a 2-D toy set; choose --data from {', '.join(TOY_DATASETS)}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise InvalidInputError(f"--sigma is the SDE's noise level and must be > 0, got {sigma}")
    settings = DemoSettings(n=n, n_eval=n_eval, table_steps=tuple(sorted(set(quality_steps))), sigma=sigma, seed=seed)
    config = TrainConfig(data=data, steps=steps, batch_size=batch, lr=lr, hidden=hidden, coupling=coupling,
                         seed=seed, n_data=20_000, warmup=min(100, steps // 10), checkpoint_every=max(500, steps),
                         log_every=max(1, min(50, steps // 20)), device=device)
    out = Path(out) if out is not None else free_directory(Path("runs") / "demo")
    configure_threads(threads, device, "vectors")
    started = time.perf_counter()
    try:
        trainer = build_trainer(config, out, force=force, hooks=[] if quiet else [TrainingProgress()])
    except RunExistsError:
        raise InvalidInputError(f"{out} already holds a run; replace it with --force or choose another --out") from None
    result = trainer.fit()
    train_seconds = time.perf_counter() - started
    report = write_demo_report(out, result.history, settings, train_seconds)
    print(f"trained {config.steps} steps on {data} in {train_seconds:.0f} s ({trainer.device})")
    print(f"report: {report}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff demo` to the command line."""
    app.command("demo")(demo_command)
