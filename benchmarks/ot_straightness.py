"""Minibatch OT vs independent pairing: transport cost of the pairs, and straightness of the learned flow.

1. Transport cost: mean |x0 - x1|^2 of noise/data pairs drawn independently, re-paired by exact
   minibatch OT, and by Sinkhorn, for several batch sizes (and the time one coupling call takes).
2. Straightness: two identical MLPs trained by flow matching on the same 2-D Gaussian mixture,
   one with independent pairs, one with minibatch OT. For each, the Euler-sampled distribution's
   energy distance to held-out data against the number of steps, and the straightness
   E int_0^1 |u_t(X_t) - (X_1 - X_0)|^2 dt along 100-step trajectories (0 for straight paths).
   The exact marginal field of the independent coupling is shown as that coupling's limit.

Run:  .venv/bin/python benchmarks/ot_straightness.py            (about 2-4 minutes on 2 CPU cores)
      .venv/bin/python benchmarks/ot_straightness.py --quick    (a smoke run)
"""

from __future__ import annotations

import os

# One BLAS thread (numpy/SciPy/POT): the matrices are small and the machine has 2 shared cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import flowdiff as fd  # noqa: E402
from flowdiff.paths.couplings import Independent, MinibatchOT, transport_cost  # noqa: E402


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'|: zero iff the distributions agree."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def target() -> fd.GaussianMixture:
    """Eight Gaussians (std 0.3) on a circle of radius 4: well-separated modes make crossing paths curved."""
    return fd.GaussianMixture.symmetric_2d(nmodes=8, std=0.3, scale=4.0)


def coupling_costs(batches: list[int], repeats: int, seed: int) -> list[str]:
    mixture = target()
    g = torch.Generator().manual_seed(seed)
    rows = [
        "| batch | independent | exact OT | Sinkhorn (reg 0.05) | exact OT ms/call | Sinkhorn ms/call |",
        "|---|---|---|---|---|---|",
    ]
    for n in batches:
        costs = {"independent": [], "exact": [], "sinkhorn": []}
        times = {"exact": [], "sinkhorn": []}
        for _ in range(repeats):
            x0, x1 = torch.randn(n, 2, generator=g), mixture.sample(n, g)
            costs["independent"].append(transport_cost(x0, x1))
            for name, coupling in (("exact", MinibatchOT()), ("sinkhorn", MinibatchOT("sinkhorn"))):
                start = time.perf_counter()
                pair = coupling(x0, x1, generator=g)
                times[name].append(1e3 * (time.perf_counter() - start))
                costs[name].append(transport_cost(pair.x0, pair.x1))
        mean = {k: sum(v) / len(v) for k, v in costs.items()}
        ms = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append(
            f"| {n} | {mean['independent']:.2f} | {mean['exact']:.2f} | {mean['sinkhorn']:.2f} "
            f"| {ms['exact']:.1f} | {ms['sinkhorn']:.1f} |"
        )
    return rows


def train(coupling, steps: int, batch: int, seed: int) -> tuple[torch.nn.Module, float]:
    """flowdiff's Trainer (AdamW 3e-3, 5% warm-up then cosine) on 200k mixture points; the EMA weights."""
    torch.manual_seed(seed)
    mixture, path = target(), fd.GaussianPath("linear")
    model = fd.models.MLP(2, hidden=(128, 128, 128), time_dim=32)
    data = mixture.sample(200_000, torch.Generator().manual_seed(seed))
    start = time.perf_counter()
    trainer = fd.Trainer(model, path, data, coupling=coupling, steps=steps, batch_size=batch, lr=3e-3,
                         warmup=steps // 20, seed=seed, device="cpu", log_every=steps)
    return trainer.fit().sampling_model.eval(), time.perf_counter() - start


@torch.no_grad()
def straightness(field, path, x0: torch.Tensor, steps: int = 100) -> float:
    """E int_0^1 |u_t(X_t) - (X_1 - X_0)|^2 dt along Euler trajectories (left Riemann sum)."""
    traj = fd.sample(field, path, x0=x0, steps=steps, solver="euler", return_trajectory=True)
    chord = traj.states[-1] - traj.states[0]
    total = 0.0
    for i in range(steps):
        u = field(traj.states[i], traj.times[i])
        total += float((u - chord).pow(2).sum(1).mean()) / steps
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n", type=int, default=2000, help="samples per quality measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these sizes)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.train_steps, args.n = 300, 500

    print("## Transport cost of the pairs: mean |x0 - x1|^2 (8 Gaussians, radius 4)\n")
    batches = [64, 256] if args.quick else [64, 256, 1024]
    print("\n".join(coupling_costs(batches, repeats=3 if args.quick else 10, seed=args.seed)))

    mixture, path = target(), fd.GaussianPath("linear")
    fields = {}
    for name, coupling in (("independent", Independent()), ("minibatch OT", MinibatchOT())):
        model, seconds = train(coupling, args.train_steps, args.batch, args.seed)
        fields[name] = model
        print(f"\ntrained '{name}': {args.train_steps} steps, batch {args.batch}, {seconds:.1f} s")
    fields["exact marginal field (independent's limit)"] = fd.MarginalField(path, mixture)

    g = torch.Generator().manual_seed(args.seed + 1)
    reference = mixture.sample(args.n, g)
    null = sum(energy_distance(mixture.sample(args.n, g), mixture.sample(args.n, g)) for _ in range(10)) / 10
    x0 = torch.randn(args.n, 2, generator=g)
    steps_list = [1, 2, 4, 8, 16, 32, 100]
    title = "Energy distance to held-out data vs Euler steps"
    print(f"\n## {title} (n = {args.n}; between two target samples: {null:.4f})\n")
    print("| field | straightness | " + " | ".join(f"{s} steps" for s in steps_list) + " |")
    print("|---|---|" + "---|" * len(steps_list))
    for name, field in fields.items():
        dists = [
            energy_distance(fd.sample(field, path, x0=x0, steps=s, solver="euler"), reference)
            for s in steps_list
        ]
        line = f"| {name} | {straightness(field, path, x0[:500]):.3f} | "
        print(line + " | ".join(f"{d:.4f}" for d in dists) + " |")


if __name__ == "__main__":
    main()
