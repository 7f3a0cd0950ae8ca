"""Few-step sampling on MNIST-5k in latent space: a shortcut model against a flow model (not run in CI; results in
docs/few_step.md).

Both runs are label-conditioned U-Nets on the codes of one autoencoder (`flowdiff autoencoder`), trained by
`flowdiff train --latent AE --method shortcut|flow` for the same number of steps. This script loads them with
`fd.load` (the samples are decoded to 28x28 images), draws images for the labels of half B of the data at several
NFE, and scores them against half A with the metric classifier (`load_or_train_classifier`, cached; the split and
the classifier are those of `benchmarks/latent_vs_pixel.py`, so its cache can be reused): conditional accuracy
and the classifier-feature Fréchet distance (NOT Inception FID). It also saves one picture per sampler: one row
per label 0-9.

    flowdiff autoencoder --data mnist --steps 300 --out AE            # or latent_vs_pixel.py's OUT/ae
    flowdiff train --data mnist --latent AE --method shortcut --steps 1500 --lr 2e-3 --threads 1 --out SC
    flowdiff train --data mnist --latent AE --method flow --steps 1500 --lr 2e-3 --threads 1 --out FLOW
    python benchmarks/mnist_latent_few_step.py --shortcut SC --flow FLOW --classifier-cache OUT/classifier \
        --out /tmp/mnist_few_step
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

CLOCK = time.process_time
"""CPU seconds of this process (one thread: the wall-clock of a quiet machine)."""

# (label in the table, run, solver or None for the flow map's jumps, steps)
SAMPLERS = (
    ("shortcut, 1 jump", "shortcut", None, 1),
    ("shortcut, 2 jumps", "shortcut", None, 2),
    ("shortcut, 4 jumps", "shortcut", None, 4),
    ("flow, Euler 1 step", "flow", "euler", 1),
    ("flow, Euler 2 steps", "flow", "euler", 2),
    ("flow, Euler 4 steps", "flow", "euler", 4),
    ("flow, Euler 100 steps", "flow", "euler", 100),
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shortcut", type=Path, required=True, help="the shortcut run (train --method shortcut)")
    parser.add_argument("--flow", type=Path, required=True, help="the flow run (train --method flow)")
    parser.add_argument("--classifier-cache", type=Path, required=True)
    parser.add_argument("--classifier-steps", type=int, default=800)
    parser.add_argument("--samples", type=int, default=400, help="images per sampler (labels of half B)")
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/mnist_latent_few_step"))
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    import flowdiff as fd
    from flowdiff.data.images import load_images
    from flowdiff.learning.classifier import conditional_accuracy, feature_frechet_distance
    from flowdiff.plots.images import save_labelled_rows
    from flowdiff.runs.classifier_cache import load_or_train_classifier

    args.out.mkdir(parents=True, exist_ok=True)
    data = load_images("mnist")
    split = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed + 7))
    half_a, half_b = split[: len(data) // 2], split[len(data) // 2:][: args.samples]
    reference, labels = data.images[half_a], data.labels[half_b]
    trained = load_or_train_classifier(data.images, data.labels, data.num_classes, args.classifier_cache,
                                       name=data.name, steps=args.classifier_steps,
                                       generator=torch.Generator().manual_seed(args.seed))
    classifier = trained.classifier
    results = {"samples": len(labels), "guidance": args.guidance, "seed": args.seed,
               "classifier_test_accuracy": trained.test_accuracy, "classifier_from_cache": trained.from_cache,
               "baseline": {"accuracy": conditional_accuracy(classifier, data.images[half_b], labels),
                            "feature_fd": feature_frechet_distance(classifier, reference, data.images[half_b])},
               "runs": {"shortcut": str(args.shortcut), "flow": str(args.flow)}, "rows": []}
    print(f"classifier held-out accuracy {trained.test_accuracy:.4f}; real B vs A: accuracy "
          f"{results['baseline']['accuracy']:.4f}, feature FD {results['baseline']['feature_fd']:.2f}", flush=True)
    runs = {"shortcut": fd.load(args.shortcut), "flow": fd.load(args.flow)}
    picture_labels = torch.arange(10).repeat_interleave(10)
    for name, which, solver, steps in SAMPLERS:
        options = dict(steps=steps, guidance=args.guidance) | ({} if solver is None else {"solver": solver})
        start = CLOCK()
        images = runs[which].sample(y=labels, generator=torch.Generator().manual_seed(args.seed + 1000),
                                    **options).clamp(-1, 1).cpu()
        seconds = CLOCK() - start
        row = {"sampler": name, "nfe": steps, "images_per_cpu_s": len(images) / seconds,
               "accuracy": conditional_accuracy(classifier, images, labels),
               "feature_fd": feature_frechet_distance(classifier, reference, images)}
        results["rows"].append(row)
        print(f"{name}: NFE {steps}: accuracy {row['accuracy']:.4f}, feature FD {row['feature_fd']:.2f}, "
              f"{row['images_per_cpu_s']:.1f} images/CPU-s", flush=True)
        if steps <= 2:  # the pictures of the docs: one row per label
            grid = runs[which].sample(y=picture_labels, generator=torch.Generator().manual_seed(args.seed),
                                      **options).clamp(-1, 1).cpu()
            file = args.out / f"mnist_latent_{which}_{steps}{'jump' if solver is None else 'euler'}.png"
            save_labelled_rows([grid[k * 10:(k + 1) * 10] for k in range(10)], file,
                               row_labels=[str(k) for k in range(10)])
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
