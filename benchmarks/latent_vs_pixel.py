"""Latent vs pixel flow matching at the same training time (not run in CI; results in docs/latent.md).

Times are CPU seconds of this process (`time.process_time`) on one torch thread: on a shared machine
they stay what a quiet machine's wall-clock would be, while wall-clock varies with the other load.

1. Trains the autoencoder (`flowdiff autoencoder`'s trainer) and measures its reconstruction error
   (MSE in [-1, 1] units over every image, PSNR) — its training time is reported apart.
2. Trains a label-conditioned flow (the default U-Net for the data's shape) on the pixels and one on
   the autoencoder's codes (`train --latent`), each for the same time budget: a probe of a few
   steps measures the seconds per step, and the run is given budget / (s per step) steps, so that
   both finish their learning-rate schedules.
3. Loads both runs with `fd.load` (the latent one decodes its samples) and, with a small CNN classifier
   trained on the same images, measures the conditional accuracy and the classifier-feature Fréchet
   distance (NOT Inception FID) at guidance w and Heun NFE 10 and 100, and the sampling speed.

The Fréchet distance compares generated images drawn with half B's labels against half A of the
real images; B itself against A is the real-data baseline (same sample size, same bias). A
classifier below --min-classifier-accuracy on held-out images, or with a degenerate baseline (not
positive, or a singular covariance), gets no generated-image scores: the run stops with the reason.
Samples are drawn (and saved as OUT/ARM/samples-*.pt) before the classifier is loaded or trained,
and results are written after every stage, so a stopped run keeps what it measured.

    python benchmarks/latent_vs_pixel.py                            # 8x8 digits, on one CPU thread
    python benchmarks/latent_vs_pixel.py --data mnist --budget 600  # the 28x28 MNIST-5k subset
    python benchmarks/latent_vs_pixel.py --data mnist --arms latent --reuse-ae  # one flow per process
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

CLOCK = time.process_time
"""CPU seconds of this process (with one thread: the wall-clock of a quiet machine)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--out", default="runs/bench_latent_vs_pixel")
    parser.add_argument("--budget", type=float, default=150.0, help="CPU seconds of flow training per model")
    parser.add_argument("--ae-steps", type=int, default=600)
    parser.add_argument("--arms", default="pixel,latent",
                        help="which flows to train and score; one arm per process lets two run side by side "
                             "(results-ARM.json)")
    parser.add_argument("--reuse-ae", action="store_true",
                        help="keep a finished autoencoder run already in OUT/ae (its training time is not measured)")
    parser.add_argument("--latent-channels", type=int, default=2)
    parser.add_argument("--beta", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--nfe", default="10,100", help="Heun NFE budgets (2 network calls per step)")
    parser.add_argument("--guidance", default="1,3")
    parser.add_argument("--settings", default="",
                        help="w:NFE pairs to measure instead of every --guidance x --nfe, e.g. 1:10,3:10,1:100")
    parser.add_argument("--min-classifier-accuracy", type=float, default=0.5,
                        help="below this held-out accuracy the classifier is broken: no generated-image scores")
    parser.add_argument("--samples", type=int, default=0,
                        help="generated images per setting (the first N labels of half B; 0: all of half B)")
    parser.add_argument("--classifier-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train_autoencoder(args, out: Path) -> dict:
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.plots.autoencoder_report import reconstruction_error, write_autoencoder_report
    from flowdiff.runs.autoencoder import autoencoder_trainer, load_autoencoder
    from flowdiff.runs.build import load_training_data

    config = TrainConfig(data=args.data, steps=args.ae_steps, batch_size=args.batch, lr=args.lr, warmup=50,
                         seed=args.seed, device=args.device, log_every=max(1, args.ae_steps // 10))
    reuse = args.reuse_ae and (out / "config.json").is_file()
    seconds = None
    if not reuse:
        trainer = autoencoder_trainer(config, out, beta=args.beta,
                                      architecture={"latent_channels": args.latent_channels}, force=True)
        start = CLOCK()
        trainer.fit()
        seconds = CLOCK() - start
    run = load_autoencoder(out, device=args.device)
    if reuse and (run.step != args.ae_steps or run.model.latent_shape[0] != args.latent_channels):
        raise SystemExit(f"--reuse-ae: {out} is at step {run.step} with {run.model.latent_shape[0]} latent channels, "
                         f"not {args.ae_steps} and {args.latent_channels}")
    error = reconstruction_error(run.model, load_training_data(config).x)
    write_autoencoder_report(out, device=args.device)
    took = "reused (time not measured)" if reuse else f"in {seconds:.0f} s"
    print(f"autoencoder: {args.ae_steps} steps {took}; code shape {run.model.latent_shape}; "
          f"MSE {error['mse']:.5f} +- {error['standard_error']:.5f}, PSNR {error['psnr_db']:.2f} dB", flush=True)
    return {"steps": args.ae_steps, "seconds": seconds, "reused": reuse, "beta": run.beta, "model": run.model.config(),
            "code_shape": list(run.model.latent_shape), "reconstruction": error}


def train_flow(args, out: Path, latent: Path | None) -> dict:
    """Train a flow for about `args.budget` seconds: a 20-step probe sets the number of steps."""
    from flowdiff.learning.training.config import TrainConfig
    from flowdiff.runs.build import build_trainer

    config = TrainConfig(data=args.data, latent=None if latent is None else str(latent.resolve()), steps=10_000,
                         batch_size=args.batch, lr=args.lr, seed=args.seed, device=args.device)
    probe = build_trainer(config)
    probe.fit(until=5)  # warm-up of the allocator and the kernels
    start = CLOCK()
    probe.fit(until=25)
    per_step = (CLOCK() - start) / 20
    steps = max(50, int(args.budget / per_step))
    config = config.updated(steps=steps, warmup=min(200, steps // 10), log_every=max(1, steps // 10))
    trainer = build_trainer(config, out, force=True)
    start = CLOCK()
    result = trainer.fit()
    seconds = CLOCK() - start
    name = "latent" if latent else "pixel"
    print(f"{name} flow: {steps} steps in {seconds:.0f} s ({1000 * seconds / steps:.1f} ms/step, probe "
          f"{1000 * per_step:.1f}); losses {[round(r['loss'], 3) for r in result.history]}", flush=True)
    return {"steps": steps, "seconds": seconds, "ms_per_step": 1000 * seconds / steps,
            "model": trainer.model.config(), "parameters": sum(p.numel() for p in trainer.model.parameters()),
            "losses": [round(r["loss"], 4) for r in result.history]}


@torch.no_grad()
def draw(run_dir: Path, labels, args) -> Iterator[tuple[dict, torch.Tensor]]:
    """Images for `labels` at every (guidance w, Heun NFE) setting, with the NFE spent and the images/s."""
    import flowdiff as fd

    run = fd.load(run_dir, device=args.device)
    for w, nfe in settings(args):
        spent = [0]

        def count(info: dict, spent: list = spent) -> None:
            spent[0] = int(info["nfe"])

        start = CLOCK()
        images = run.sample(y=labels, guidance=w, steps=nfe // 2, solver="heun",
                            generator=torch.Generator().manual_seed(args.seed + 1000),
                            callback=count).clamp(-1, 1).cpu()
        seconds = CLOCK() - start
        print(f"  {run_dir.name}: w={w:g} NFE {spent[0]}: {len(images) / seconds:.1f} images/s", flush=True)
        yield {"guidance": w, "heun_steps": nfe // 2, "nfe": spent[0], "n": len(images),
               "images_per_s": len(images) / seconds}, images


def score(name: str, row: dict, images: torch.Tensor, classifier, reference, labels) -> dict:
    """The row with the conditional accuracy and the feature Fréchet distance of its images."""
    from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance

    row = {**row, "accuracy": conditional_accuracy(classifier, images, labels),
           "feature_fd": feature_frechet_distance(classifier, reference, images)}
    print(f"  {name}: w={row['guidance']:g} NFE {row['nfe']}: accuracy {row['accuracy']:.4f}, "
          f"feature FD {row['feature_fd']:.2f}", flush=True)
    return row


def settings(args) -> list[tuple[float, int]]:
    """The (guidance w, Heun NFE) pairs to measure: --settings if given, else every --guidance x --nfe."""
    if args.settings:
        pairs = [item.split(":") for item in args.settings.split(",")]
        return [(float(w), int(nfe)) for w, nfe in pairs]
    return [(float(w), int(nfe)) for w in args.guidance.split(",") for nfe in args.nfe.split(",")]


def classifier_problem(accuracy: float, baseline_fd: float, singular: bool, least: float) -> str | None:
    """Why the metric classifier cannot be trusted (chance-level accuracy, degenerate features), or None."""
    if not accuracy >= least:
        return f"held-out accuracy {accuracy:.3f} is below {least}"
    if not baseline_fd > 0 or not math.isfinite(baseline_fd):
        return f"the real-data baseline Fréchet distance is {baseline_fd} (degenerate features)"
    if singular:
        return "the real-data baseline's feature covariance is singular (scipy LinAlgWarning)"
    return None


def score_baseline(classifier, reference, real) -> tuple[float, bool]:
    """Fréchet distance of real half B against half A, and whether scipy warned of a singular matrix."""
    from scipy.linalg import LinAlgWarning

    from flowdiff.learning.classifier import feature_frechet_distance

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LinAlgWarning)
        value = feature_frechet_distance(classifier, reference, real)
    return value, any(issubclass(w.category, LinAlgWarning) for w in caught)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from flowdiff.data.images import load_images
    from flowdiff.runs.classifier_cache import load_or_train_classifier

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"data": args.data, "device": args.device, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
               "budget_s": args.budget, "seed": args.seed, "argv": sys.argv[1:] if argv is None else list(argv)}
    arms = args.arms.split(",")
    file = out / ("results.json" if set(arms) == {"pixel", "latent"} else f"results-{'-'.join(arms)}.json")
    results["complete"] = False
    if "latent" in arms:
        results["autoencoder"] = train_autoencoder(args, out / "ae")
    for name in arms:
        results[name] = train_flow(args, out / name, out / "ae" if name == "latent" else None)
        file.write_text(json.dumps(results, indent=2))

    data = load_images(args.data)
    split = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed + 7))
    half_a, half_b = split[: len(data) // 2], split[len(data) // 2 :]
    if args.samples:
        half_b = half_b[: args.samples]  # the baseline uses the same sample size as the generated images
    reference, labels = data.images[half_a], data.labels[half_b]
    drawn = {}  # sampled before the classifier is trained or loaded: its cache may be filling meanwhile
    for name in arms:
        drawn[name] = []
        for row, images in draw(out / name, labels, args):
            drawn[name].append(images)
            torch.save(images, out / name / f"samples-w{row['guidance']:g}-nfe{row['nfe']}.pt")  # kept if stopped
            results[name].setdefault("sampling", []).append(row)
            file.write_text(json.dumps(results, indent=2))
    start = CLOCK()
    trained = load_or_train_classifier(data.images, data.labels, data.num_classes, out / "classifier",
                                       name=data.name, steps=args.classifier_steps,
                                       generator=torch.Generator().manual_seed(args.seed))
    results["samples_per_setting"] = len(half_b)
    results["classifier_test_accuracy"] = trained.test_accuracy
    results["classifier_from_cache"] = trained.from_cache
    results["classifier_seconds"] = CLOCK() - start
    baseline, singular = score_baseline(trained.classifier, reference, data.images[half_b])
    results["baseline_feature_fd"] = baseline
    print(f"classifier held-out accuracy {trained.test_accuracy:.4f}; real baseline FD {baseline:.2f}", flush=True)
    problem = classifier_problem(trained.test_accuracy, baseline, singular, args.min_classifier_accuracy)
    if problem:
        results["classifier_invalid"] = problem
        file.write_text(json.dumps(results, indent=2))
        raise SystemExit(f"INVALID metric classifier: {problem}; no generated-image scores reported "
                         f"(training results in {file})")
    for name in arms:
        results[name]["samples"] = [score(name, row, images, trained.classifier, reference, labels)
                                    for row, images in zip(results[name].pop("sampling"), drawn[name])]
    results["complete"] = True
    file.write_text(json.dumps(results, indent=2))
    print(f"wrote {file}")
    return results


if __name__ == "__main__":
    main()
