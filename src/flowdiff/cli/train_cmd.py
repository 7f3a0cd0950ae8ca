"""`flowdiff train`: train a vector field on a built-in data set or a user's file, into a run directory.

The options become keyword arguments of `Trainer`; the run directory records them all
(config.json, under "cli") so that `--resume` rebuilds the very same run from the directory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import typer

from flowdiff.errors import IncompatibleError, InvalidInputError


@dataclass
class TrainOptions:
    """The resolved options of `flowdiff train` (what config.json records under "cli")."""

    data: str = "moons"
    steps: int = 5000
    batch: int = 256
    lr: float = 1e-3
    hidden: str = "256,256,256"
    model: str | None = None
    schedule: str = "linear"
    coupling: str = "independent"
    time_law: str = "uniform"
    loss: str = "flow_matching"
    seed: int = 0
    label_dropout: float = 0.1
    labels: bool | None = None
    label_column: str | None = None
    standardize: bool | None = None
    n_data: int | None = None
    image_size: int | None = None
    ema_decay: float = 0.999
    warmup: int = 100
    lr_schedule: str = "cosine"
    checkpoint_every: int = 1000
    log_every: int = 50


def parse_hidden(text: str) -> tuple[int, ...]:
    """"256,256,256" -> (256, 256, 256)."""
    try:
        widths = tuple(int(part) for part in str(text).replace(" ", "").split(",") if part)
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        raise InvalidInputError("--hidden must be comma-separated positive layer widths like "
                                f"256,256,256, got {text!r}")
    return widths


def resolve_options(given: dict, stored: dict | None = None) -> TrainOptions:
    """Fill the options a user did not give from the stored run (when resuming) or the defaults.

    When resuming, an option given with a value other than the stored one is an error: the
    run would no longer be the run it continues.
    """
    names = {f.name for f in fields(TrainOptions)}
    if stored is None:
        return TrainOptions(**{k: v for k, v in given.items() if k in names and v is not None})
    changed = [
        f"--{k.replace('_', '-')} {v!r} (the run has {stored.get(k)!r})"
        for k, v in given.items()
        if k in names and v is not None and v != stored.get(k)
    ]
    if changed:
        raise IncompatibleError(
            "--resume continues a run with its own settings; these differ: " + "; ".join(changed)
            + " (drop them, or start a new run with another --out)"
        )
    return TrainOptions(**{k: v for k, v in stored.items() if k in names})


def configure_threads(threads: int | None, device: str, kind: str) -> None:
    """Intra-op CPU threads: `threads` if given; else 1 for vector data on the CPU, torch's default otherwise.

    Networks on vectors multiply small matrices, where extra threads cost more in
    synchronisation than they give, and on a busy machine they slow each step many-fold.
    """
    import torch

    if threads is not None:
        if threads < 1:
            raise InvalidInputError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    elif kind == "vectors" and str(device) in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(1)


def check_options(options: TrainOptions) -> None:
    """Refuse out-of-range options whatever the data, before anything is loaded or written."""
    if not 0.0 <= options.label_dropout < 1.0:
        raise InvalidInputError(f"--label-dropout must lie in [0, 1), got {options.label_dropout}")
    if options.image_size is not None and options.image_size < 1:
        raise InvalidInputError(f"--image-size must be >= 1, got {options.image_size}")


def build_trainer(options: TrainOptions, out: Path | None, device: str = "auto", resume: bool = False,
                  force: bool = False, progress: bool = True, extra_config: dict | None = None,
                  threads: int | None = None):
    """Load the data, build the network and path, and return a ready `Trainer` for these options."""
    import torch

    from flowdiff.data.registry import load_dataset
    from flowdiff.learning.models import MLP, build_model
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.paths.gaussian_path import GaussianPath

    data_generator = torch.Generator().manual_seed(options.seed)
    dataset = load_dataset(
        options.data, n=options.n_data, generator=data_generator, label_column=options.label_column,
        standardize=options.standardize, image_size=options.image_size,
    )
    use_labels = options.labels if options.labels is not None else (
        dataset.y is not None and dataset.info.source != "toy"
    )
    configure_threads(threads, device, dataset.kind)
    if use_labels and dataset.y is None:
        raise InvalidInputError(f"--labels was given, but the data {options.data!r} has no labels")
    if not use_labels:
        dataset = dataset.without_labels()
    num_classes = dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        if dataset.kind == "images":
            if options.model in (None, "default"):
                from flowdiff.learning.models import default_image_model

                model = default_image_model(dataset.info.shape, num_classes)
            elif options.model == "mlp":
                raise InvalidInputError("--model mlp takes vectors; for images use --model unet or "
                                        "--model dit")
            else:
                channels, height, width = dataset.info.shape
                model = build_model({"name": options.model, "channels": channels,
                                     "image_size": [height, width], "num_classes": num_classes})
        else:
            if options.model not in (None, "mlp", "default"):
                raise InvalidInputError(f"--model {options.model} is for images; vector data uses --model "
                                        "mlp")
            model = MLP(dataset.info.shape[0], hidden=parse_hidden(options.hidden), num_classes=num_classes)
    return Trainer(
        model,
        GaussianPath(options.schedule),
        dataset.x,
        labels=dataset.y,
        loss=options.loss,
        coupling=options.coupling,
        time_law=options.time_law,
        batch_size=options.batch,
        steps=options.steps,
        lr=options.lr,
        warmup=min(options.warmup, max(0, options.steps - 1)),
        lr_schedule=options.lr_schedule,
        ema_decay=options.ema_decay,
        label_dropout=options.label_dropout if use_labels else 0.0,
        out=out,
        checkpoint_every=options.checkpoint_every,
        log_every=options.log_every,
        seed=options.seed,
        device=device,
        progress=progress,
        resume=resume,
        force=force,
        data_info=dataset.info,
        extra_config={"cli": asdict(options), **(extra_config or {})},
    )


def train_command(
    data: str = typer.Option(
        None, "--data", help="Built-in set (moons, circles, checkerboard, eight_gaussians, spirals, gmm, "
        "digits, mnist), a .npy/.npz/.csv file of vectors, or an image folder."),
    out: Path = typer.Option(..., "--out", help="Run directory to create (or to continue with --resume)."),
    steps: int = typer.Option(None, "--steps", help="Training steps (default: 5000)."),
    batch: int = typer.Option(None, "--batch", help="Minibatch size (default: 256)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate of AdamW (default: 1e-3)."),
    hidden: str = typer.Option(None, "--hidden", help="MLP layer widths (default: 256,256,256)."),
    model: str = typer.Option(
        None, "--model", help="Network: mlp (vectors), unet or dit (images) "
        "(default: mlp for vectors, the default image model for images)."),
    schedule: str = typer.Option(
        None, "--schedule", help="Noise schedule: linear, cosine, polynomial, vp (default: linear)."),
    coupling: str = typer.Option(
        None, "--coupling", help="Pairing of noise and data: independent, ot, sinkhorn "
        "(default: independent)."),
    loss: str = typer.Option(
        None, "--loss", help="flow_matching or score_matching (default: flow_matching)."),
    time_law: str = typer.Option(
        None, "--time-law", help="Law of the training time t: uniform, or early (density 2(1-t), "
        "best with --coupling ot at few steps) (default: uniform)."),
    seed: int = typer.Option(None, "--seed", help="Seed of every random draw (default: 0)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, mps."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out where it stopped."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing run in --out (its checkpoints are lost)."),
    label_dropout: float = typer.Option(
        None, "--label-dropout", help="Probability of dropping a label, for classifier-free guidance "
        "(default: 0.1)."),
    labels: bool = typer.Option(
        None, "--labels/--no-labels", help="Condition on the data's labels (default: yes for files and "
        "images with labels, no for the toy sets)."),
    label_column: str = typer.Option(None, "--label-column", help="CSV column holding the labels."),
    standardize: bool = typer.Option(
        None, "--standardize/--no-standardize", help="Scale each coordinate of a data file to mean 0, "
        "std 1 (mapped back when sampling) (default: yes)."),
    n_data: int = typer.Option(
        None, "--n-data", help="Number of data points (toy sets: drawn (default: 50000); files: a subset)."),
    image_size: int = typer.Option(None, "--image-size", help="Resize images to this size."),
    ema_decay: float = typer.Option(None, "--ema-decay", help="Decay of the EMA weights (default: 0.999)."),
    warmup: int = typer.Option(
        None, "--warmup", help="Linear warm-up steps of the learning rate (default: 100)."),
    lr_schedule: str = typer.Option(None, "--lr-schedule", help="cosine or constant (default: cosine)."),
    checkpoint_every: int = typer.Option(
        None, "--checkpoint-every", help="Steps between checkpoints (default: 1000)."),
    threads: int = typer.Option(
        None, "--threads", help="CPU threads (default: 1 for vectors, torch's default for images)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    report: bool = typer.Option(
        True, "--report/--no-report", help="Write a quick RUN/run_report.html after training (8 ODE steps; "
        "`flowdiff report RUN` draws a fuller one)."),
) -> None:
    """Train a flow (or score) model; writes config.json, metrics.jsonl and checkpoints to --out."""
    from flowdiff.learning.training.checkpoint import read_config

    given = dict(data=data, steps=steps, batch=batch, lr=lr, hidden=hidden, model=model, schedule=schedule,
                 coupling=coupling, time_law=time_law, loss=loss, seed=seed, label_dropout=label_dropout,
                 labels=labels,
                 label_column=label_column, standardize=standardize, n_data=n_data, image_size=image_size,
                 ema_decay=ema_decay, warmup=warmup, lr_schedule=lr_schedule,
                 checkpoint_every=checkpoint_every)
    if resume and force:
        raise InvalidInputError("--resume continues a run and --force replaces it; give one of them")
    stored = None
    if resume:
        config = read_config(out)
        if "cli" not in config:
            raise InvalidInputError(f"{out} was not made by `flowdiff train`; it cannot be resumed from "
                                    "the CLI")
        stored = config["cli"]
    elif data is None:
        raise InvalidInputError("give the data to train on with --data (for example --data moons)")
    options = resolve_options(given, stored)
    check_options(options)
    trainer = build_trainer(options, out, device=device, resume=resume, force=force, progress=not quiet,
                            threads=threads)
    if resume and trainer.step >= trainer.steps:
        print(f"{out} is already trained ({trainer.step} steps); nothing to do")
        return
    start = trainer.step
    try:
        result = trainer.fit()
    except KeyboardInterrupt:
        print(f"stopped at step {trainer.step}; checkpoint saved. Continue with: flowdiff train --out "
              f"{out} --resume")
        raise SystemExit(130) from None
    last = result.history[-1] if result.history else {}
    loss_text = f", final loss {last['loss']:.4f}" if "loss" in last else ""
    print(f"trained {result.step - start} steps on {trainer.device}{loss_text}; run directory: {out}")
    print(f"sample with: flowdiff sample {out} --n 1000")
    if report:
        from flowdiff.plots.run_report import write_run_report

        images = trainer.data_info.kind == "images"
        print(f"report: {write_run_report(out, n=4 if images else 500, steps=8, device=trainer.device)}")


def register(app: typer.Typer) -> None:
    """Add `flowdiff train` to the command line."""
    app.command("train")(train_command)
