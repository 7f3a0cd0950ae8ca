"""Image quality of a conditional flow model, measured without downloads (not run in CI).

Trains a label-conditioned U-Net by flow matching (with label dropout 0.1) on an image set
for a fixed number of steps, trains a small CNN classifier on the same set, then samples
with classifier-free guidance at several scales w and reports

- conditional accuracy: the fraction of samples drawn for label y that the classifier calls y;
- feature Fréchet distance (a data-set-specific measure, NOT Inception FID) between the
  classifier's penultimate features of generated and real images.

The real images are split at random into halves A and B. The Fréchet distances compare
n_B images with A: generated images drawn with exactly B's labels, and, as the real-data
baseline, B itself (the same sample size, so the same finite-sample bias). The classifier's
accuracy on its own held-out real images is the baseline for the conditional accuracy.

    python benchmarks/digits_quality.py                          # 8x8 digits on the CPU
    python benchmarks/digits_quality.py --data mnist --device cuda --base-channels 64 \
        --res-blocks 2 --steps 6000 --guidance 0,1,2,3,5         # 28x28 MNIST subset on a GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="digits", help="digits, mnist, a folder or an .npz (with labels)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=1500, help="training steps")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--base-channels", type=int, default=None, help="[default: the default image model]")
    parser.add_argument("--res-blocks", type=int, default=1)
    parser.add_argument("--label-dropout", type=float, default=0.1)
    parser.add_argument("--loss", default="flow_matching", choices=["flow_matching", "stable_target"],
                        help="the training loss (stable_target: the batch-posterior target, docs/paths.md)")
    parser.add_argument("--guidance", default="1,3", help="comma-separated guidance scales w")
    parser.add_argument("--sample-steps", type=int, default=20, help="Heun steps of the ODE sampler")
    parser.add_argument("--sample-batch", type=int, default=2500)
    parser.add_argument("--classifier-steps", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench_digits_quality")
    parser.add_argument("--cache", default=None, help="classifier cache folder [default: OUT/cache]")
    return parser.parse_args(argv)


def build_model(args, data_shape, num_classes):
    from flowdiff.learning.models import default_image_model
    from flowdiff.learning.models.unet import UNet

    model = default_image_model(data_shape, num_classes)
    if args.base_channels is not None or args.res_blocks != 1:
        config = model.config()
        config.pop("name")
        config["base_channels"] = args.base_channels or config["base_channels"]
        config["num_res_blocks"] = args.res_blocks
        model = UNet(**config)
    return model


@torch.no_grad()
def generate(model, path, labels, guidance, args, device, generator):
    """Samples for the given labels, in batches; returns (images on the CPU, seconds)."""
    from flowdiff.learning.sampling import sample

    pieces = []
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, len(labels), args.sample_batch):
        y = labels[first : first + args.sample_batch].to(device)
        pieces.append(sample(model, path, y=y, guidance=guidance, steps=args.sample_steps, solver="heun",
                             generator=generator).clamp(-1, 1))
    synchronize(device)
    seconds = time.perf_counter() - start
    return torch.cat(pieces).cpu(), seconds


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    from flowdiff.data.images import load_images
    from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.paths.gaussian_path import GaussianPath
    from flowdiff.plots.images import save_image_strip, save_labelled_rows
    from flowdiff.runs.classifier_cache import load_or_train_classifier

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_images(args.data)
    if data.labels is None:
        sys.exit(f"error: {args.data} has no labels; conditional generation needs labelled images")
    guidances = [float(w) for w in args.guidance.split(",")]
    print(f"data {data.name}: {len(data)} images of shape {data.data_shape}, {data.num_classes} classes; "
          f"device {device}, torch threads {torch.get_num_threads()}", flush=True)

    # 1. the flow model
    torch.manual_seed(args.seed)
    model = build_model(args, data.data_shape, data.num_classes)
    parameters = sum(p.numel() for p in model.parameters())
    path = GaussianPath("linear")
    trainer = Trainer(model, path, data.images, labels=data.labels, batch_size=args.batch, steps=args.steps,
                      lr=args.lr, warmup=min(200, args.steps // 10), label_dropout=args.label_dropout, loss=args.loss,
                      ema_decay=0.999, device=device, seed=args.seed,
                      log_every=max(1, args.steps // 10))
    synchronize(device)
    start = time.perf_counter()
    result = trainer.fit()
    synchronize(device)
    train_seconds = time.perf_counter() - start
    losses = [round(r["loss"], 4) for r in result.history]
    print(f"trained {model.config()} ({parameters} parameters) for {args.steps} steps of {args.batch} in "
          f"{train_seconds:.1f} s = {args.steps * args.batch / train_seconds:.0f} images/s; losses {losses}",
          flush=True)
    network = result.sampling_model.eval()

    # 2. the classifier (cached by data set)
    start = time.perf_counter()
    classifier_gen = torch.Generator().manual_seed(args.seed)
    trained = load_or_train_classifier(data.images, data.labels, data.num_classes,
                                       args.cache or out / "cache", name=data.name,
                                       steps=args.classifier_steps, generator=classifier_gen, device=device)
    classifier = trained.classifier
    print(f"classifier: held-out accuracy {trained.test_accuracy:.4f} "
          f"({'cached' if trained.from_cache else f'trained in {time.perf_counter() - start:.1f} s'})",
          flush=True)

    # 3. real-data baseline: halves A (reference) and B
    split = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed + 7))
    half_a, half_b = split[: len(data) // 2], split[len(data) // 2 :]
    reference = data.images[half_a]
    labels_b = data.labels[half_b]
    baseline_fd = feature_frechet_distance(classifier, reference, data.images[half_b])
    print(f"real baseline: feature FD(A, B) = {baseline_fd:.3f} with n_A={len(half_a)}, n_B={len(half_b)}",
          flush=True)

    # 4. samples at each guidance scale, with B's labels
    rows = {}
    report = []
    for w in guidances:
        generator = torch.Generator(device=device).manual_seed(args.seed + 1000)
        fake, seconds = generate(network, path, labels_b, w, args, device, generator)
        accuracy = conditional_accuracy(classifier, fake, labels_b)
        fd = feature_frechet_distance(classifier, reference, fake)
        nfe = 2 * args.sample_steps * (1 if w == 1.0 else 2)
        report.append({"guidance": w, "conditional_accuracy": accuracy, "feature_fd": fd,
                       "n": len(fake), "sample_seconds": seconds, "images_per_s": len(fake) / seconds,
                       "network_evaluations_per_image": nfe})
        print(f"w={w:g}: conditional accuracy {accuracy:.4f}, feature FD {fd:.3f}, "
              f"{len(fake)} samples in {seconds:.1f} s = {len(fake) / seconds:.0f} images/s ({nfe} NFE)",
              flush=True)
        per_class = [fake[labels_b == k][:10] for k in range(data.num_classes)]
        save_labelled_rows(per_class, out / f"samples_w{w:g}.png",
                           row_labels=[str(k) for k in range(data.num_classes)], title=f"guidance w = {w:g}")
        rows[w] = fake[labels_b == 3][:10]
    save_labelled_rows(list(rows.values()), out / "guidance_label3.png",
                       row_labels=[f"w={w:g}" for w in rows], title="label 3 at each guidance scale")
    from flowdiff.learning.sampling import sample

    strip_labels = torch.arange(min(8, data.num_classes), device=device)
    trajectory = sample(network, path, y=strip_labels, guidance=guidances[-1], steps=args.sample_steps,
                        solver="heun", return_trajectory=True,
                        generator=torch.Generator(device=device).manual_seed(args.seed))
    save_image_strip(trajectory.states.cpu(), out / "trajectories.png", frames=8)

    results = {
        "data": data.name, "data_shape": list(data.data_shape), "images": len(data),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "model": model.config(), "parameters": parameters,
        "train": {"steps": args.steps, "batch": args.batch, "lr": args.lr,
                  "label_dropout": args.label_dropout, "seconds": train_seconds,
                  "images_per_s": args.steps * args.batch / train_seconds,
                  "losses": losses},
        "classifier": {"test_accuracy": trained.test_accuracy, "steps": args.classifier_steps},
        "baseline_feature_fd": baseline_fd,
        "sampler": {"solver": "heun", "steps": args.sample_steps},
        "guidance": report,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results["guidance"], indent=1))
    return results


if __name__ == "__main__":
    main()
