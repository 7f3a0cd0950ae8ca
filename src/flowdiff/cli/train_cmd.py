"""`flowdiff train`: train a vector field on a built-in data set or a user's file, into a run directory.

The options, a TOML file (`--config`) and the defaults of `TrainConfig` make one configuration
(flags override the file); the run directory records it, and `--resume` rebuilds the same run.
"""

from __future__ import annotations

from pathlib import Path

import typer

from flowdiff.cli.options import choice, names
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.discrete.loss import DISCRETE_LOSSES
from flowdiff.learning.flowmaps.common import VELOCITIES
from flowdiff.learning.losses import LOSSES, METHODS, TIME_LAWS
from flowdiff.learning.models import MODELS
from flowdiff.learning.training.config import LR_SCHEDULES, OT_SCOPES, PRECISIONS, TrainConfig
from flowdiff.paths.couplings import COUPLINGS
from flowdiff.paths.discrete import SOURCES
from flowdiff.paths.schedules import SCHEDULES

D = TrainConfig()
"""The defaults, shown in the help texts."""

FLAGS = {"batch_size": "--batch"}
"""Options whose name differs from the setting's."""


def resolve_config(given: dict, stored: TrainConfig | None) -> TrainConfig:
    """The run's configuration: the defaults with the given settings on top; when resuming, the stored
    one, where a given setting that changes the result is an error (checkpoint_every, device may change)."""
    from flowdiff.learning.training.config import NOT_RESULT_FIELDS

    given = {k: v for k, v in given.items() if v is not None}
    if stored is None:
        return TrainConfig.from_dict(given, source="the options")
    wanted = stored.updated(**given).to_dict()
    have = stored.to_dict()
    changed = [f"{FLAGS.get(k, '--' + k.replace('_', '-'))} {wanted[k]!r} (the run has {have[k]!r})"
               for k in given if k not in NOT_RESULT_FIELDS and wanted[k] != have[k]]
    if changed:
        raise IncompatibleError("--resume continues a run with its own settings; these differ: " + "; ".join(changed)
                                + " (drop them, or start a new run with another --out)")
    return stored.updated(**{k: v for k, v in given.items() if k in NOT_RESULT_FIELDS})


def stored_config(out: Path) -> TrainConfig:
    """The configuration recorded in a run directory made by `flowdiff train`."""
    from flowdiff.runs.layout import read_config

    training = read_config(out).get("training")
    if not isinstance(training, dict) or training.get("data") is None:
        raise InvalidInputError(f"{out} was not made by `flowdiff train`; it cannot be resumed from the CLI")
    return TrainConfig.from_dict(training, source=f"{out}/config.json")


def train_command(
    data: str = typer.Option(None, "--data", help="Built-in set (moons, circles, checkerboard, eight_gaussians, "
                             "spirals, gmm, digits, mnist), a .npy/.npz/.csv file of vectors, or an image folder."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    config: Path = typer.Option(None, "--config", help="TOML file of settings (names as below, with "
                                "underscores: batch_size = 512); options given here override it."),
    steps: int = typer.Option(None, "--steps", min=1, help=f"Training steps (default: {D.steps})."),
    batch: int = typer.Option(None, "--batch", min=1, help=f"Minibatch size (default: {D.batch_size})."),
    lr: float = typer.Option(None, "--lr", min=0.0,
                             help=f"Peak learning rate of AdamW (default: {D.lr:g})."),
    hidden: str = typer.Option(None, "--hidden", help="MLP layer widths (default: 256,256,256)."),
    model: str = typer.Option(None, "--model", parser=choice(["default", *MODELS], "model"),
                              help=f"Network: default, {names(MODELS)} (default: mlp for vectors, a U-Net for "
                              "images)."),
    schedule: str = typer.Option(None, "--schedule", parser=choice(SCHEDULES, "schedule"),
                                 help=f"Noise schedule: {names(SCHEDULES)} (default: {D.schedule})."),
    coupling: str = typer.Option(None, "--coupling", parser=choice(COUPLINGS, "coupling"),
                                 help=f"Pairing of noise and data: {names(COUPLINGS)} (default: {D.coupling})."),
    ot_scope: str = typer.Option(None, "--ot-scope", parser=choice(OT_SCOPES, "OT scope"),
                                 help="Under torchrun, solve minibatch OT on the global batch (global) or on each "
                                 f"process's share (local) (default: {D.ot_scope})."),
    precision: str = typer.Option(None, "--precision", parser=choice(PRECISIONS, "precision"),
                                  help="fp32, or autocast to bf16 / fp16 (with a gradient scaler); weights, EMA and "
                                  f"optimizer state stay fp32 (default: {D.precision})."),
    method: str = typer.Option(None, "--method", parser=choice(METHODS, "method"),
                               help=f"Training method: {names(METHODS)}; meanflow and shortcut train a flow map "
                               "u(x, r, t) that samples in 1-2 steps; discrete trains on tokens (an integer .npy, an "
                               ".npz with labels, a .txt read as characters, markov_tokens, checkerboard_tokens) "
                               f"(default: {D.method})."),
    source: str = typer.Option(None, "--source", parser=choice(SOURCES, "token source"),
                               help=f"Discrete source: mask or uniform (default: {D.source})."),
    discrete_loss: str = typer.Option(None, "--discrete-loss", parser=choice(DISCRETE_LOSSES, "discrete loss"),
                                      help=f"Discrete loss: {names(DISCRETE_LOSSES)} (default: {D.discrete_loss})."),
    loss: str = typer.Option(None, "--loss", parser=choice(LOSSES, "loss"),
                             help=f"Loss: {names(LOSSES)} (default: {D.loss})."),
    time_law: str = typer.Option(None, "--time-law", parser=choice(TIME_LAWS, "time law"),
                                 help=f"Law of the training time t: {names(TIME_LAWS)}; early has density 2(1-t), "
                                 f"best with --coupling ot at few steps (default: {D.time_law})."),
    velocity: str = typer.Option(None, "--velocity", parser=choice(VELOCITIES, "velocity"),
                                 help="What a flow-map method (meanflow, imeanflow, shortcut) regresses on as the "
                                 "velocity: the pair's conditional velocity, or stable, its average over the batch's "
                                 f"posterior (less noise; independent pairs) (default: {D.velocity})."),
    seed: int = typer.Option(None, "--seed", min=0, help=f"Seed of every random draw (default: {D.seed})."),
    device: str = typer.Option(None, "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps "
                               "(default: auto)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    force: bool = typer.Option(False, "--force", help="Replace an existing run in --out (its checkpoints are lost)."),
    label_dropout: float = typer.Option(None, "--label-dropout", min=0.0, max=1.0,
                                        help="Probability of dropping a label, for classifier-free guidance "
                                        f"(default: {D.label_dropout})."),
    labels: bool = typer.Option(None, "--labels/--no-labels", help="Condition on the data's labels (default: yes "
                                "for files and images with labels, no for the toy sets)."),
    label_column: str = typer.Option(None, "--label-column", help="CSV column holding the labels."),
    standardize: bool = typer.Option(None, "--standardize/--no-standardize", help="Scale each coordinate of a data "
                                     "file to mean 0, std 1 (mapped back when sampling) (default: yes)."),
    n_data: int = typer.Option(None, "--n-data", min=1, help="Number of data points (toy sets: drawn (default: "
                               "50000); files: a subset)."),
    image_size: int = typer.Option(None, "--image-size", min=1, help="Resize images to this size."),
    latent: Path = typer.Option(None, "--latent", help="An autoencoder run (flowdiff autoencoder): train the flow "
                                "on the codes of the images; samples are decoded back to images."),
    stream: bool = typer.Option(None, "--stream/--no-stream", help="Read an image folder (or a .npy of uint8 "
                                "images) batch by batch instead of loading it whole (default: no)."),
    workers: int = typer.Option(None, "--workers", min=0, help="Worker processes decoding a --stream (default: 0)."),
    flip: bool = typer.Option(None, "--flip/--no-flip", help="Random horizontal flips of streamed images (needs "
                              "--stream) (default: no)."),
    ema_decay: float = typer.Option(None, "--ema-decay", min=0.0, max=1.0,
                                    help=f"Decay of the EMA weights (default: {D.ema_decay})."),
    warmup: int = typer.Option(None, "--warmup", min=0, help=f"Linear warm-up steps (default: {D.warmup})."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", parser=choice(LR_SCHEDULES, "learning-rate schedule"),
                                    help=f"{names(LR_SCHEDULES)} (default: {D.lr_schedule})."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", min=1,
                                         help=f"Steps between checkpoints (default: {D.checkpoint_every})."),
    threads: int = typer.Option(None, "--threads", min=1, help="CPU threads (default: 1 for vectors, torch's "
                                "default for images)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log the metrics to RUN/tensorboard "
                                     "(needs the tensorboard package)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write a quick RUN/run_report.html after "
                                "training (8 ODE steps; `flowdiff report RUN` draws a fuller one)."),
) -> None:
    """Train a flow, score, flow-map or token model (--method); writes config.json, metrics and checkpoints to --out."""
    from flowdiff.learning.training.config import read_toml

    given = dict(data=data, steps=steps, batch_size=batch, lr=lr, hidden=hidden, model=model, schedule=schedule,
                 coupling=coupling, ot_scope=ot_scope, time_law=time_law, method=method, loss=loss, seed=seed,
                 velocity=velocity,
                 label_dropout=label_dropout, precision=precision,
                 labels=labels, label_column=label_column, standardize=standardize, n_data=n_data,
                 image_size=image_size, stream=stream, workers=workers, flip=flip, ema_decay=ema_decay,
                 warmup=warmup, lr_schedule=lr_schedule, checkpoint_every=checkpoint_every, source=source,
                 discrete_loss=discrete_loss, latent=None if latent is None else str(latent.resolve()))
    if resume and force:
        raise InvalidInputError("--resume continues a run and --force replaces it; give one of them")
    given = {**(read_toml(config) if config is not None else {}), **{k: v for k, v in given.items() if v is not None}}
    settings = resolve_config({**given, "device": device}, stored_config(out) if resume else None)
    if settings.data is None:
        raise InvalidInputError("give the data to train on with --data (for example --data moons)")
    run(settings, out, resume, force, threads, quiet, tensorboard, report)


def run(settings: TrainConfig, out: Path, resume: bool, force: bool, threads: int | None, quiet: bool,
        tensorboard: bool, report: bool) -> None:
    """Build the run, fit it with the terminal's hooks, print where it went and write the quick report.

    Under torchrun every process runs this (DDP on the global batch); rank 0 alone prints and writes.
    """
    from flowdiff.learning.training.distributed import process_group

    with process_group(settings.device):
        trained = _run(settings, out, resume, force, threads, quiet, tensorboard)
    if trained is not None and report and settings.method == "flow":  # the quick report draws ODE samples
        from flowdiff.plots.run_report import write_run_report

        # after the group is closed: the other ranks do not wait in a barrier while rank 0 draws the report
        images = len(trained.data.shape) > 1
        print(f"report: {write_run_report(out, n=4 if images else 500, steps=8, device=trained.device)}")


def _run(settings: TrainConfig, out: Path, resume: bool, force: bool, threads: int | None, quiet: bool,
         tensorboard: bool):
    """Fit the run; its trainer on the main process once it is trained, else None (nothing more to do)."""
    from flowdiff.cli.progress import TrainingProgress
    from flowdiff.learning.devices import configure_threads
    from flowdiff.learning.training.distributed import is_main
    from flowdiff.runs.build import build_trainer
    from flowdiff.runs.sinks import TensorBoard

    hooks = ([] if quiet else [TrainingProgress()]) + ([TensorBoard(out / "tensorboard")]
                                                       if tensorboard and is_main() else [])
    configure_threads(threads, settings.device, "images" if _images(settings) else "vectors")
    fitted = fit_run(lambda: build_trainer(settings, out, resume=resume, force=force, hooks=hooks), out, resume,
                     f"flowdiff train --out {out} --resume")
    if fitted is None or not is_main():
        return None
    trainer, steps, loss_text = fitted
    print(f"trained {steps} steps on {trainer.device}{loss_text}; run directory: {out}")
    print(f"sample with: flowdiff sample {out} --n 1000")
    return trainer


def fit_run(build, out: Path, resume: bool, continue_with: str):
    """Build a run's trainer (`build()`) and fit it: None when a resumed run is already trained (said on rank 0);
    exit 130 with the command to continue (`continue_with`) when stopped; else (trainer, steps taken this time,
    ", final loss L" or "")."""
    from flowdiff.learning.training.distributed import is_main
    from flowdiff.runs.directory import RunExistsError

    try:
        trainer = build()
    except RunExistsError as error:
        raise InvalidInputError(f"{error} (--resume, --force, or another --out)") from None
    if resume and trainer.step >= trainer.steps:
        trainer.close()
        if is_main():
            print(f"{out} is already trained ({trainer.step} steps); nothing to do")
        return None
    start = trainer.step
    result = trainer.fit()
    if result.stopped:
        print(f"stopped at step {trainer.step}; checkpoint saved. Continue with: {continue_with}")
        raise SystemExit(130)
    last = result.history[-1] if result.history else {}
    loss_text = f", final loss {last['loss']:.4f}" if "loss" in last else ""
    return trainer, result.step - start, loss_text


def _images(settings: TrainConfig) -> bool:
    """True when the data names an image set (decides the CPU threads before anything is loaded)."""
    from flowdiff.data.images import is_image_spec

    return is_image_spec(str(settings.data))


def register(app: typer.Typer) -> None:
    """Add `flowdiff train` to the command line."""
    app.command("train")(train_command)
