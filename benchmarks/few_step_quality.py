"""Few-step sample quality: flow maps (MeanFlow, shortcut) against flow models at NFE 1, 2, 4, 8 and 100.

Task and loop are those of benchmarks/quality_vs_nfe.py: N(0, I) -> eight Gaussians (std 0.2, radius 2) in
2-D; flowdiff's MLP 256x3 from the same initial seed; flowdiff's Trainer with AdamW, lr 1e-3 decayed by a cosine,
batch 256, the same minibatches, no EMA or clipping; only the loss differs:

- fd flow (I-CFM):   fd.flow_matching_loss, independent pairs       -> sampled with Euler steps (NFE = steps)
- fd flow (OT):      the same with minibatch OT pairs                -> Euler steps
- fd MeanFlow:       flowdiff.learning.flowmaps.MeanFlow() (power 0) -> flow-map jumps (NFE = steps)
- fd shortcut:       flowdiff.learning.flowmaps.Shortcut()           -> flow-map jumps
- torchcfm OT-CFM:   ExactOptimalTransportConditionalFlowMatcher     -> torchdiffeq odeint, Euler
- flow_matching:     AffineProbPath(CondOTScheduler()) (I-CFM)       -> its ODESolver, Euler

The flow maps train the same MLP with a second time input (flow_map=True). Quality: exact W2 (POT) and energy
distance between n samples and n held-out points, beside the same distances between two held-out draws (the
data-vs-data floor); mean ± sd over seeds. Also the training cost in ms per step (one thread).

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt   # torchcfm, flow_matching (+ tqdm)
    .venv/bin/python benchmarks/few_step_quality.py               # 2 seeds, 3000 steps
    .venv/bin/python benchmarks/few_step_quality.py --quick       # a smoke run: 300 steps, n = 500, one seed
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_vs_nfe import (  # noqa: E402
    HIDDEN,
    eight_gaussians_mixture,
    flow_matching_loss_meta,
    flowdiff_loss,
    meta_sampler,
    torchcfm_loss,
    torchdiffeq_sampler,
    training_data,
)

import flowdiff as fd  # noqa: E402
from flowdiff.learning.flowmaps import MeanFlow, Shortcut  # noqa: E402
from flowdiff.learning.metrics import energy_distance, wasserstein2  # noqa: E402
from flowdiff.learning.models.mlp import MLP  # noqa: E402

NFES = [1, 2, 4, 8, 100]
PATH = fd.GaussianPath("linear")


def map_loss(loss):
    return lambda model, x1, generator: loss(model, PATH, x1, generator=generator)


def euler(model, x0, nfe):
    return fd.sample(model, PATH, x0=x0, steps=nfe, solver="euler")


def jumps(model, x0, nfe):
    return fd.sample(model, PATH, x0=x0, steps=nfe)


METHODS = {  # name: (loss factory, flow map?, sampler factory)
    "fd flow (I-CFM)": (lambda: flowdiff_loss("independent"), False, lambda: euler),
    "fd flow (OT)": (lambda: flowdiff_loss("ot"), False, lambda: euler),
    "fd MeanFlow": (lambda: map_loss(MeanFlow()), True, lambda: jumps),
    "fd shortcut": (lambda: map_loss(Shortcut()), True, lambda: jumps),
    "torchcfm OT-CFM": (lambda: torchcfm_loss(ot=True), False, lambda: torchdiffeq_sampler("euler")),
    "flow_matching I-CFM": (flow_matching_loss_meta, False, lambda: meta_sampler("euler")),
}


def train(loss_fn, flow_map: bool, data: torch.Tensor, steps: int, batch: int, seed: int) -> tuple[MLP, float]:
    """quality_vs_nfe's shared loop, for a network with or without the second time; returns it and ms per step."""
    torch.manual_seed(seed)
    model = MLP(2, hidden=HIDDEN, flow_map=flow_map)
    torch.manual_seed(seed + 2)
    trainer = fd.Trainer(model, PATH, data, loss=lambda model, path, x1, generator, **_: loss_fn(model, x1, generator),
                         steps=steps, batch_size=batch, lr=1e-3, warmup=0, grad_clip=None, ema_decay=None, seed=seed,
                         device="cpu", log_every=steps)
    started = time.perf_counter()
    trainer.fit()
    return trainer.model.eval().requires_grad_(False), 1e3 * (time.perf_counter() - started) / steps


def run_seed(seed: int, args, methods: list[str]) -> dict:
    mixture = eight_gaussians_mixture()
    reference = mixture.sample(args.n, torch.Generator().manual_seed(10_000 + seed)).float()
    spare = mixture.sample(args.n, torch.Generator().manual_seed(20_000 + seed)).float()
    x0 = torch.randn(args.n, 2, generator=torch.Generator().manual_seed(30_000 + seed))
    data = training_data(args.steps, args.batch, seed)
    out = {"floor": {"w2": wasserstein2(spare, reference), "energy": energy_distance(spare, reference)}, "rows": {}}
    for name in methods:
        make_loss, flow_map, make_sampler = METHODS[name]
        model, ms = train(make_loss(), flow_map, data, args.steps, args.batch, seed)
        sampler, row = make_sampler(), {"ms_per_step": ms}
        for nfe in NFES:
            x = sampler(model, x0, nfe).float()
            row[nfe] = {"w2": wasserstein2(x, reference), "energy": energy_distance(x, reference)}
        out["rows"][name] = row
        print(f"seed {seed} {name}: {ms:.1f} ms/step, W2 " + ", ".join(f"{k}: {row[k]['w2']:.3f}" for k in NFES),
              flush=True)
    return out


def table(results: list[dict], metric: str) -> list[str]:
    def cell(values):
        values = torch.tensor(values, dtype=torch.float64)
        spread = float(values.std()) if len(values) > 1 else 0.0
        return f"{float(values.mean()):.3f} ± {spread:.3f}"

    lines = [f"| method ({metric}) | " + " | ".join(f"NFE {k}" for k in NFES) + " | ms/step |",
             "|---" * (len(NFES) + 2) + "|"]
    for name in results[0]["rows"]:
        rows = [r["rows"][name] for r in results]
        lines.append(f"| {name} | " + " | ".join(cell([row[k][metric] for row in rows]) for k in NFES)
                     + f" | {cell([row['ms_per_step'] for row in rows])} |")
    lines.append(f"| data vs data | {cell([r['floor'][metric] for r in results])} |" + " |" * len(NFES))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated, from: " + ", ".join(METHODS))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 steps, n = 500, one seed")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.n, args.seeds = 300, 500, 1
    torch.set_num_threads(1)
    methods = [m.strip() for m in args.methods.split(",")]
    results = [run_seed(seed, args, methods) for seed in range(args.seeds)]
    print(f"\n{args.steps} training steps, batch {args.batch}, MLP {'x'.join(map(str, HIDDEN))}, {args.n} samples, "
          f"{args.seeds} seed(s)")
    for metric in ("w2", "energy"):
        print("\n" + "\n".join(table(results, metric)))
    if args.out is not None:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
