"""The stable target's noise against flow matching's, on eight Gaussians (radius 2, std 0.2) in 2-D.

1. Target error: E |target - u_t(x_t)|^2 against the closed-form marginal velocity (MarginalField), t ~ U[0, 1],
   for the one-pair conditional target and for its average over the posterior of a batch of B points, by
   schedule and B (20 batches each).
2. Gradient noise: the total variance of the minibatch gradient over 40 minibatches, at the weights of an MLP
   64x64 trained 1500 steps with flow matching (where the residual is mostly the target's own noise), and its
   norm of the mean, for each loss and batch size.
3. Cost: CPU ms per training step (loss, backward, AdamW step), the two losses interleaved in this process,
   median of 7 rounds of 20 steps, on the sizes the docs measure: the few-step benchmark's MLP 256x3 on
   eight Gaussians (batch 256) and the default 8x8-digits U-Net with labels (batch 128, label dropout 0.1).

    .venv/bin/python benchmarks/stable_target.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_vs_nfe import eight_gaussians_mixture  # noqa: E402

import flowdiff as fd  # noqa: E402
from flowdiff.learning.losses import get_loss  # noqa: E402
from flowdiff.learning.models.mlp import MLP  # noqa: E402
from flowdiff.paths.empirical_posterior import posterior_shift  # noqa: E402
from flowdiff.paths.marginals import MarginalField  # noqa: E402


def target_errors(schedule: str, batch: int, repeats: int = 20) -> tuple[float, float]:
    path, mixture = fd.GaussianPath(schedule), eight_gaussians_mixture()
    field, g = MarginalField(path, mixture), torch.Generator().manual_seed(0)
    pair = stable = 0.0
    for _ in range(repeats):
        z = mixture.sample(batch, g).double()
        t = torch.rand(batch, generator=g, dtype=torch.float64)
        s = path.sample(z, t, generator=g)
        exact = field(s.x_t, t)
        pair += float((s.velocity - exact).pow(2).sum(1).mean()) / repeats
        stable += float((s.velocity + posterior_shift(path, s.x_t, t, z, z) - exact).pow(2).sum(1).mean()) / repeats
    return pair, stable


def gradient_noise(model, loss, batch: int, draws: int = 40) -> tuple[float, float]:
    mixture, path, g, grads = eight_gaussians_mixture(), fd.GaussianPath("linear"), torch.Generator().manual_seed(1), []
    for _ in range(draws):
        model.zero_grad()
        loss(model, path, mixture.sample(batch, g).float(), generator=g).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    grads = torch.stack(grads)
    return float(grads.var(0).sum()), float(grads.mean(0).norm())


def step_cost(model, loss, data: torch.Tensor, labels: torch.Tensor | None, batch: int) -> float:
    """CPU ms of one round of 20 training steps of `loss` (loss, backward, AdamW step), per step."""
    import time

    optimizer, g = torch.optim.AdamW(model.parameters(), lr=1e-4), torch.Generator().manual_seed(0)
    cond = {} if labels is None else {"y": labels[:batch], "label_dropout": 0.1}
    started = time.process_time()
    for _ in range(20):
        optimizer.zero_grad()
        loss(model, fd.GaussianPath("linear"), data[:batch], generator=g, **cond).backward()
        optimizer.step()
    return (time.process_time() - started) / 20 * 1e3


def costs() -> None:
    from flowdiff.data.images import load_images
    from flowdiff.learning.models import default_image_model

    digits = load_images("digits")
    cases = {"MLP 256x3, 2-D, batch 256": (lambda: MLP(2, hidden=(256, 256, 256)),
                                           eight_gaussians_mixture().sample(256, torch.Generator()).float(), None, 256),
             "digits U-Net, batch 128": (lambda: default_image_model(digits.data_shape, digits.num_classes),
                                         digits.images, digits.labels, 128)}
    print("\n| network | flow_matching ms/step | stable_target ms/step | ratio |\n|---|---|---|---|")
    for name, (build, data, labels, batch) in cases.items():
        torch.manual_seed(0)
        model, times = build(), {"flow_matching": [], "stable_target": []}
        for _ in range(7):  # interleaved rounds
            for loss in times:
                times[loss].append(step_cost(model, get_loss(loss), data, labels, batch))
        fm, st = (sorted(times[loss])[3] for loss in times)
        print(f"| {name} | {fm:.2f} | {st:.2f} | {st / fm:.3f} |")


def main() -> None:
    torch.set_num_threads(1)
    print("| schedule | B | one-pair target error | batch-posterior target error | ratio |\n|---|---|---|---|---|")
    for schedule in ("linear", "cosine", "vp"):
        for batch in (64, 256, 1024):
            pair, stable = target_errors(schedule, batch)
            print(f"| {schedule} | {batch} | {pair:.3f} | {stable:.4f} | {stable / pair:.3f} |")
    torch.manual_seed(0)
    model = MLP(2, hidden=(64, 64))
    data = eight_gaussians_mixture().sample(1500 * 128, torch.Generator().manual_seed(0)).float()
    fd.Trainer(model, fd.GaussianPath("linear"), data, steps=1500, batch_size=128, lr=3e-3, seed=0, device="cpu",
               log_every=10**6).fit()
    model.requires_grad_(True)
    print("\n| loss | batch | gradient variance (total) | norm of the mean gradient |\n|---|---|---|---|")
    for name in ("flow_matching", "stable_target"):
        for batch in (128, 512):
            variance, norm = gradient_noise(model, get_loss(name), batch)
            print(f"| {name} | {batch} | {variance:.4f} | {norm:.4f} |")
    costs()


if __name__ == "__main__":
    main()
