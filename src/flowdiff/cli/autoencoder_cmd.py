"""`flowdiff autoencoder`: train a small beta-VAE on images, into a run directory that `flowdiff train --latent`
takes as its latent space. The same trainer, checkpoints, resume and report as `flowdiff train`."""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.errors import InvalidInputError
from flowdiff.learning.training.config import TrainConfig

D = TrainConfig()
"""The defaults, shown in the help texts."""


def autoencoder_command(
    data: str = typer.Option(None, "--data", help="Image set: digits, mnist, a folder of images or an .npz."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    steps: int = typer.Option(None, "--steps", min=1, help=f"Training steps (default: {D.steps})."),
    batch: int = typer.Option(None, "--batch", min=1, help=f"Minibatch size (default: {D.batch_size})."),
    lr: float = typer.Option(None, "--lr", min=0.0, help=f"Peak learning rate of AdamW (default: {D.lr:g})."),
    beta: float = typer.Option(None, "--beta", min=0.0, help="Weight of the KL term per pixel (default: 1e-3)."),
    latent_channels: int = typer.Option(None, "--latent-channels", min=1, help="Channels of the code "
                                        "(default: 4)."),
    base_channels: int = typer.Option(None, "--base-channels", min=1, help="Channels of the first stage "
                                      "(default: 32, doubled per halving)."),
    downsamples: int = typer.Option(None, "--downsamples", min=0, help="Halvings of the image side (default: 1 "
                                    "up to 8 pixels, else 2: 28 -> 7)."),
    n_data: int = typer.Option(None, "--n-data", min=1, help="Train on a random subset of this many images."),
    image_size: int = typer.Option(None, "--image-size", min=1, help="Resize images to this size."),
    seed: int = typer.Option(None, "--seed", min=0, help=f"Seed of every random draw (default: {D.seed})."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or mps (default: auto)."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1,
                                         help=f"Steps between checkpoints (default: {D.checkpoint_every})."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: torch's)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write RUN/autoencoder_report.html (inputs "
                                "beside their reconstructions) after training."),
) -> None:
    """Train an autoencoder (beta-VAE) on images; use its run as the latent space of `flowdiff train --latent`."""
    from flowdiff.cli.progress import TrainingProgress
    from flowdiff.cli.train_cmd import fit_run, resolve_config, stored_config
    from flowdiff.learning.devices import configure_threads
    from flowdiff.runs.autoencoder import autoencoder_trainer

    if resume and force:
        raise InvalidInputError("--resume continues a run and --force replaces it; give one of them")
    given = dict(data=data, steps=steps, batch_size=batch, lr=lr, seed=seed, n_data=n_data, image_size=image_size,
                 checkpoint_every=checkpoint_every, labels=None if resume else False)
    settings = resolve_config({**given, "device": device}, stored_config(out) if resume else None)
    if settings.data is None:
        raise InvalidInputError("give the images to encode with --data (digits, mnist or a folder)")
    configure_threads(threads, settings.device, "images")
    architecture = dict(latent_channels=latent_channels, base_channels=base_channels, downsamples=downsamples)
    fitted = fit_run(lambda: autoencoder_trainer(settings, out, beta=beta, architecture=architecture, resume=resume,
                                                 force=force, hooks=[] if quiet else [TrainingProgress()]),
                     out, resume, f"flowdiff autoencoder --out {out} --resume")
    if fitted is None:
        return
    trainer, steps, loss_text = fitted
    print(f"trained the autoencoder {steps} steps on {trainer.device}{loss_text}; run directory: {out}")
    print(f"train a flow on its codes with: flowdiff train --data {settings.data} --latent {out} --out RUN")
    if report:
        from flowdiff.plots.autoencoder_report import write_autoencoder_report

        print(f"report: {write_autoencoder_report(out, device=trainer.device)}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff autoencoder` to the command line."""
    app.command("autoencoder")(autoencoder_command)
