"""Sample quality against NFE and held-out NLL: flowdiff next to torchcfm and Meta's flow_matching.

Task: N(0, I) -> eight Gaussians (std 0.2 on the circle of radius 2) in 2-D, whose density is
known, so the NLL has a floor (the data's own entropy) and the marginal vector field is known in
closed form (the "exact field" row: the error of the solver alone).

Every method trains the same network (flowdiff's MLP, hidden 256x3, same initial weights) with
the same loop (flowdiff's Trainer: Adam, lr 1e-3 decayed to 0 by a cosine, batch 256, the same
minibatches, the same number of steps); only the library that turns a data batch into regression
pairs (x_t, t, u_t) differs:

- flowdiff:       fd.flow_matching_loss on GaussianPath("linear"), independent or minibatch-OT coupling;
                  and ("early t") minibatch OT with t drawn from the density 2(1 - t) instead of U[0, 1]
- torchcfm I-CFM: ConditionalFlowMatcher(sigma=0)
- torchcfm OT-CFM: ExactOptimalTransportConditionalFlowMatcher(sigma=0)
- flow_matching:  AffineProbPath(CondOTScheduler()) (I-CFM with the linear path)

Each model is sampled with its own library's ODE solvers (torchcfm: torchdiffeq.odeint on a fixed
grid, the way its examples sample; flow_matching: ODESolver) from the same noise, at each NFE,
and W2 (exact, POT) is measured between 2000 samples and 2000 held-out data points. The
"flowdiff best" row is the OT-coupled flowdiff model (OT or OT with early t; Sinkhorn OT with
--methods ...,fd-sk), solver and time grid chosen at NFE 4 on a separate validation draw (its own
noise and data), then measured on the test draw. The NLL of
held-out data is computed for every model by fd.log_prob (rk4, 100 steps, exact divergence),
and for the flow_matching model also by flow_matching's own `compute_likelihood` as a cross-check.

    .venv/bin/pip install --no-deps -r benchmarks/requirements.txt   # torchcfm, flow_matching (+ tqdm)
    .venv/bin/python benchmarks/quality_vs_nfe.py              # 2 seeds: ~12 min on 2 shared CPU cores
    .venv/bin/python benchmarks/quality_vs_nfe.py --seeds 5    # the table of docs/evaluation.md (~25 min)
    .venv/bin/python benchmarks/quality_vs_nfe.py --first-seed 5 --seeds 4 --methods fd,cfm   # more seeds
    .venv/bin/python benchmarks/quality_vs_nfe.py --quick      # a smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowdiff as fd
from flowdiff.data.toy2d import sample_toy
from flowdiff.learning.likelihood import log_prob
from flowdiff.learning.losses import flow_matching_loss
from flowdiff.learning.metrics import wasserstein2
from flowdiff.learning.models.mlp import MLP
from flowdiff.learning.sampling import sample
from flowdiff.paths.marginals import MarginalField

NFES = [1, 2, 4, 8, 16, 32, 100]
HIDDEN = (256, 256, 256)


def eight_gaussians_mixture() -> fd.GaussianMixture:
    """The exact law of flowdiff's eight_gaussians toy set: 8 modes, radius 2, std 0.2."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return fd.GaussianMixture(means, 0.2**2)


def training_data(steps: int, batch: int, seed: int) -> torch.Tensor:
    """The same training data for every method: steps x batch points of the eight Gaussians."""
    generator = torch.Generator().manual_seed(seed)
    return sample_toy("eight_gaussians", steps * batch, generator).x


def new_model(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(2, hidden=HIDDEN)


def train(loss_fn: Callable[[MLP, torch.Tensor, torch.Generator], torch.Tensor], data: torch.Tensor, steps: int,
          batch: int, seed: int) -> MLP:
    """The shared loop, flowdiff's Trainer: Adam (AdamW, no weight decay), lr 1e-3 decayed to 0 by a cosine, no
    warm-up, clipping or EMA, the same minibatches (same data generator seed) for every method's loss_fn."""
    model = new_model(seed)
    torch.manual_seed(seed + 2)  # for libraries that draw from the global generator (torchcfm)
    trainer = fd.Trainer(model, fd.GaussianPath("linear"), data, loss=lambda model, path, x1, generator, **_:
                         loss_fn(model, x1, generator), steps=steps, batch_size=batch, lr=1e-3, warmup=0,
                         grad_clip=None, ema_decay=None, seed=seed, device="cpu", log_every=steps)
    return trainer.fit().model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------- losses


def flowdiff_loss(coupling: str):
    path = fd.GaussianPath("linear")

    def loss(model, x1, generator):
        return flow_matching_loss(model, path, x1, coupling=coupling, generator=generator)

    return loss


def flowdiff_loss_early_times(coupling: str):
    """flowdiff's conditional flow matching with t drawn from the density 2(1 - t) (`time_law="early"`)."""
    path = fd.GaussianPath("linear")

    def loss(model, x1, generator):
        return flow_matching_loss(model, path, x1, coupling=coupling, generator=generator, time_law="early")

    return loss


def torchcfm_loss(ot: bool):
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    matcher = (
        ExactOptimalTransportConditionalFlowMatcher(sigma=0.0) if ot else ConditionalFlowMatcher(sigma=0.0)
    )

    def loss(model, x1, generator):
        x0 = torch.randn(x1.shape, generator=generator)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        return (model(xt, t) - ut).pow(2).mean()

    return loss


def flow_matching_loss_meta():
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def loss(model, x1, generator):
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(x1.shape[0], generator=generator)
        sample_ = path.sample(x_0=x0, x_1=x1, t=t)
        return (model(sample_.x_t, sample_.t) - sample_.dx_t).pow(2).mean()

    return loss


# ------------------------------------------------------------------------------------ samplers


def flowdiff_sampler(solver: str, grid: str = "uniform"):
    stages = fd.get_solver(solver).stages
    path = fd.GaussianPath("linear")

    def run(model, x0, nfe):
        if nfe % stages:
            return None
        return sample(model, path, x0=x0, steps=nfe // stages, solver=solver, grid=grid)

    return run


def torchdiffeq_sampler(method: str):
    """torchcfm's way: torchdiffeq.odeint of the network on a fixed grid of NFE / stages steps."""
    from torchdiffeq import odeint

    stages = {"euler": 1, "midpoint": 2, "rk4": 4}[method]

    def run(model, x0, nfe):
        if nfe % stages:
            return None
        grid = torch.linspace(0, 1, nfe // stages + 1)
        with torch.no_grad():
            return odeint(lambda t, x: model(x, t), x0, grid, method=method)[-1]

    return run


def meta_sampler(method: str):
    """flow_matching's ODESolver with step size 1 / steps."""
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    stages = {"euler": 1, "midpoint": 2, "rk4": 4}[method]

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t)

    def run(model, x0, nfe):
        if nfe % stages:
            return None
        steps = nfe // stages
        solver = ODESolver(velocity_model=Wrapped(model))
        with torch.no_grad():
            return solver.sample(
                x_init=x0, step_size=1.0 / steps, method=method, time_grid=torch.tensor([0.0, 1.0])
            )

    return run


def meta_log_prob(model, x, steps: int = 100) -> torch.Tensor:
    """flow_matching's own exact-divergence likelihood (midpoint method), for the cross-check."""
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):
        def forward(self, x, t, **extras):
            return self.model(x, t)

    def log_p0(z):
        return -0.5 * (z.pow(2).sum(dim=1) + z.shape[1] * math.log(2 * math.pi))

    solver = ODESolver(velocity_model=Wrapped(model))
    _, value = solver.compute_likelihood(
        x_1=x, log_p0=log_p0, step_size=1.0 / steps, method="midpoint", exact_divergence=True
    )
    return value.detach()


# ------------------------------------------------------------------------------------- measure


def curve(model, sampler, x0, reference) -> dict[int, float | None]:
    out = {}
    for nfe in NFES:
        x = sampler(model, x0, nfe)
        out[nfe] = None if x is None else wasserstein2(x, reference, max_samples=None)
    return out


METHOD_KEYS = {
    "fd": "flowdiff (independent)",
    "fd-ot": "flowdiff (OT)",
    "cfm": "torchcfm I-CFM",
    "cfm-ot": "torchcfm OT-CFM",
    "fm": "flow_matching (CondOT path)",
    "fd-sk": "flowdiff (Sinkhorn OT)",
    "fd-ot-early": "flowdiff (OT, early t)",
}
"""Short names for --methods."""
DEFAULT_METHODS = "fd,fd-ot,cfm,cfm-ot,fm,fd-ot-early"
"""The methods of the table in docs/evaluation.md; fd-sk (a further "flowdiff best" candidate) is opt-in."""
SINKHORN = {"method": "sinkhorn", "reg": 0.02, "replace": True}
"""The entropic coupling of the fd-sk model (reg relative to the largest cost of the batch)."""
METHODS = {
    "flowdiff (independent)": lambda: flowdiff_loss("independent"),
    "flowdiff (OT)": lambda: flowdiff_loss("ot"),
    "torchcfm I-CFM": lambda: torchcfm_loss(ot=False),
    "torchcfm OT-CFM": lambda: torchcfm_loss(ot=True),
    "flow_matching (CondOT path)": flow_matching_loss_meta,
    "flowdiff (Sinkhorn OT)": lambda: flowdiff_loss(fd.couplings.MinibatchOT(**SINKHORN)),
    "flowdiff (OT, early t)": lambda: flowdiff_loss_early_times("ot"),
}
SAMPLERS = {
    "flowdiff": lambda m: flowdiff_sampler(m),
    "torchcfm": torchdiffeq_sampler,
    "flow_matching": meta_sampler,
}
BEST_CANDIDATES = [(solver, grid) for solver in ("heun", "midpoint") for grid in ("uniform", "shifted")]
"""flowdiff's best configuration: an OT-coupled model (exact, and Sinkhorn where trained) with one of
these solvers and grids, chosen at NFE 4 on validation data.
(The "rho" grid crowds steps at t = 1 so tightly that in float32 its last times coincide beyond ~20 steps.)"""


def run_seed(seed: int, args, data: dict) -> dict:
    """Train every method with this seed; measure W2 against NFE, the tuned flowdiff sampler and the NLL."""
    train_data = training_data(args.steps, args.batch, seed)
    rows, nll, seconds = {}, {}, {}
    path = fd.GaussianPath("linear")
    models = {}
    for name, make_loss in METHODS.items():
        if name not in args.methods:
            continue
        started = time.perf_counter()
        models[name] = model = train(make_loss(), train_data, args.steps, args.batch, seed)
        library = name.split(" ")[0]
        for method in ("euler", "midpoint", "rk4"):
            rows[f"{name}, {method}"] = curve(
                model, SAMPLERS[library](method), data["noise"], data["reference"]
            )
        nll[name] = float(-log_prob(model, path, data["reference"], steps=100, solver="rk4").mean())
        seconds[name] = time.perf_counter() - started
        print(f"seed {seed}: {name} trained and measured in {seconds[name]:.0f} s", flush=True)
    result = {"w2": rows, "nll": nll, "seconds": seconds, "tuning": None, "best": None, "cross_check": None}
    coupled = {name: models[name] for name in BEST_MODELS if name in models}
    if coupled:
        result.update(tuned_best(coupled, data, rows))
    if "flow_matching (CondOT path)" in models:
        meta = models["flow_matching (CondOT path)"]
        ours = log_prob(meta, path, data["reference"][:500], steps=100, solver="midpoint")
        result["cross_check"] = float(
            (ours - meta_log_prob(meta, data["reference"][:500], steps=100)).abs().max()
        )
    return result


BEST_MODELS = {
    "flowdiff (OT)": "OT",
    "flowdiff (Sinkhorn OT)": "Sinkhorn",
    "flowdiff (OT, early t)": "OT-early",
}
"""The OT-coupled flowdiff models that the "flowdiff best" search chooses from, with short names."""
BEST_ROW = "flowdiff best: OT coupling, solver and grid tuned"


def tuned_best(coupled: dict[str, MLP], data: dict, rows: dict) -> dict:
    """Choose flowdiff's coupled model, solver and grid at NFE 4 on validation data; add its test curve."""
    tuning = {
        f"{BEST_MODELS[name]}/{solver}/{grid}": wasserstein2(
            flowdiff_sampler(solver, grid)(model, data["valid_noise"], 4), data["valid"], max_samples=None
        )
        for name, model in coupled.items()
        for solver, grid in BEST_CANDIDATES
    }
    best = min(tuning, key=tuning.get)
    short, solver, grid = best.split("/")
    model = next(m for name, m in coupled.items() if BEST_MODELS[name] == short)
    rows[BEST_ROW] = curve(model, flowdiff_sampler(solver, grid), data["noise"], data["reference"])
    return {"tuning": tuning, "best": best}


def mean_and_spread(values: list[float | None]) -> tuple[float, float] | None:
    """Mean over seeds and the standard deviation across seeds (0 for one seed)."""
    if any(v is None for v in values):
        return None
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps of every method")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n", type=int, default=2000, help="samples and held-out points per W2 / NLL")
    parser.add_argument(
        "--seeds", type=int, default=2, help="training seeds per method (mean and sd reported)"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help=f"comma-separated methods to train, from: {', '.join(METHOD_KEYS)} (default: {DEFAULT_METHODS})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (tiny batches: 1)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 steps, n = 500, one seed")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.n, args.seeds = 300, 500, 1
    unknown = [k for k in args.methods.split(",") if k not in METHOD_KEYS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHOD_KEYS)}")
    args.methods = [METHOD_KEYS[k] for k in args.methods.split(",")]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    mixture = eight_gaussians_mixture()
    test = sample_toy("eight_gaussians", 2 * args.n, torch.Generator().manual_seed(10_000)).x
    data = {
        "reference": test[: args.n],
        "valid": sample_toy("eight_gaussians", args.n, torch.Generator().manual_seed(20_000)).x,
        "noise": torch.randn(args.n, 2, generator=torch.Generator().manual_seed(30_000)),
        "valid_noise": torch.randn(args.n, 2, generator=torch.Generator().manual_seed(40_000)),
    }
    floor = wasserstein2(test[args.n :], data["reference"], max_samples=None)
    exact = MarginalField(fd.GaussianPath("linear"), mixture)
    exact_curve = curve(exact, flowdiff_sampler("heun"), data["noise"], data["reference"])
    true_nll = float(-mixture.log_prob(data["reference"].double()).mean())

    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs = [run_seed(seed, args, data) for seed in seeds]
    w2 = {
        name: {k: mean_and_spread([r["w2"][name][k] for r in runs]) for k in NFES} for name in runs[0]["w2"]
    }
    nll = {name: mean_and_spread([r["nll"][name] for r in runs]) for name in runs[0]["nll"]}

    def best(prefixes, nfe, exclude=False):
        found = [
            (v[nfe][0], name)
            for name, v in w2.items()
            if v[nfe] is not None and name.startswith(prefixes) != exclude
        ]
        return min(found, default=None)

    summary = {
        "best peer at NFE 100": best(("flowdiff",), 100, exclude=True),
        "best flowdiff at NFE 100": best(("flowdiff",), 100),
        "best peer at NFE 16": best(("flowdiff",), 16, exclude=True),
    }
    if runs[0]["best"] is not None:
        summary["flowdiff best configuration at NFE 4"] = (
            w2[BEST_ROW][4][0],
            ", ".join(r["best"] for r in runs),
        )
    summary = {k: v for k, v in summary.items() if v is not None}

    def cell(value):
        return (
            "—"
            if value is None
            else (f"{value[0]:.3f} ± {value[1]:.3f}" if args.seeds > 1 else f"{value[0]:.3f}")
        )

    spread = " ± sd over seeds" if args.seeds > 1 else ""
    print()
    print(
        f"W2 to {args.n} held-out points (mean{spread} of {args.seeds} training seeds; two data samples: "
        f"{floor:.3f}); {args.steps} training steps, batch {args.batch}, MLP {'x'.join(map(str, HIDDEN))}"
    )
    print("| model, sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for name, values in w2.items():
        print(f"| {name} | " + " | ".join(cell(values[k]) for k in NFES) + " |")
    exact_cells = " | ".join("—" if exact_curve[k] is None else f"{exact_curve[k]:.3f}" for k in NFES)
    print(f"| exact marginal field, heun (solver error only) | {exact_cells} |")
    print()
    print(
        f"NLL of {args.n} held-out points (nats; fd.log_prob, rk4 100 steps, exact divergence); "
        f"true density: {true_nll:.3f}"
    )
    print("| model | NLL |")
    print("|---|---|")
    for name, value in nll.items():
        print(f"| {name} | {cell(value)} |")
    print()
    for seed, r in zip(seeds, runs):
        if r["tuning"] is not None:
            tuned = ", ".join(f"{k} {v:.3f}" for k, v in r["tuning"].items())
            print(f"seed {seed}: validation W2 at NFE 4 (model/solver/grid): {tuned}; chosen {r['best']}")
    if runs[0]["cross_check"] is not None:
        check = max(r["cross_check"] for r in runs)
        print(
            "cross-check on the flow_matching models: max |fd.log_prob - flow_matching compute_likelihood| "
            f"= {check:.2e} nats (midpoint, 100 steps, 500 points)"
        )
    for key, (value, name) in summary.items():
        print(f"{key}: {value:.3f} ({name})")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.out is not None:
        args.out.write_text(
            json.dumps(
                {
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "baseline_w2": floor,
                    "w2": w2,
                    "exact_field_w2": exact_curve,
                    "nll": nll,
                    "true_nll": true_nll,
                    "runs": runs,
                    "summary": summary,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
