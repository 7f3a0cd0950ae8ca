"""flowdiff beside Meta's flow_matching on discrete toys: each library trains its own model, then samples it.

On a toy whose law is known exactly (`markov_tokens`: 3 tokens from 4, 64 states; `checkerboard_tokens`:
2 tokens from 64, 2048 states), for each seed:

1. **Trained by each library.** The same network architecture (`TokenMLP`), the same 50,000 training draws,
   steps, batch, AdamW, learning-rate schedule (warm-up + cosine) and gradient clipping, no EMA:
   - flowdiff: `Trainer` with `DiscreteFlowMatching`, once with cross-entropy (its default) and once with
     the generalized KL (flow_matching's loss), mask source, linear kappa; flowdiff's posterior puts no mass
     on the mask and keeps unmasked tokens;
   - flow_matching: its own path `MixtureDiscreteProbPath(PolynomialConvexScheduler(n=1))` (linear kappa),
     its loss `MixturePathGeneralizedKL`, a plain loop around them; the network returns logits over the
     K + 1 states (the mask is one more token, as in flow_matching's examples), i.e. `TokenMLP(K + 1, L)`.
   Each model is sampled by its own library's Euler sampler at the same NFEs on a uniform grid
   (flow_matching: `MixtureDiscreteEulerSolver`, float32 draws, its default; flowdiff: float64 draws) and by
   flowdiff's first-hitting sampler (NFE = L; flow_matching has none). Reported: total variation to the
   exact law (mean and sd over the seeds), training CPU seconds and sampling CPU milliseconds.
2. **One network, two samplers.** The seed-0 flowdiff network (cross-entropy) sampled by both libraries'
   Euler samplers (flow_matching's through a `ModelWrapper` that returns flowdiff's posterior over K + 1).

Times are CPU seconds of this process (`time.process_time`, one torch thread), and the two libraries'
runs are interleaved (their order alternates from seed to seed and NFE to NFE), so that a change of the
machine's load falls on both. Nothing of flow_matching's code is copied (its licence is non-commercial):
it is imported and called.

Run:  .venv/bin/python benchmarks/discrete_vs_flow_matching.py --toy markov_tokens        (one file per toy:
      .venv/bin/python benchmarks/discrete_vs_flow_matching.py --toy checkerboard_tokens   docs/img/
          discrete_vs_flow_matching_TOY.json; the two can run at once, each on one thread)
      .venv/bin/python benchmarks/discrete_vs_flow_matching.py --quick   (a smoke run, writes nothing)
Needs flow_matching (benchmarks/requirements.txt).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from flowdiff.data.tokens import TokenLaw, checkerboard_law, markov_law  # noqa: E402
from flowdiff.learning.discrete import DiscreteFlowMatching, log_posterior, sample_tokens  # noqa: E402
from flowdiff.learning.models import TokenMLP  # noqa: E402
from flowdiff.learning.training.state import learning_rate, make_adamw  # noqa: E402
from flowdiff.learning.training.trainer import Trainer  # noqa: E402
from flowdiff.paths.discrete import MixturePath  # noqa: E402

GRAD_CLIP = 1.0
"""flowdiff's default gradient clipping (TrainConfig.grad_clip), used by both loops."""


def cpu_timed(draw):
    """(result of draw(), CPU milliseconds of this process it took)."""
    start = time.process_time()
    result = draw()
    return result, 1000 * (time.process_time() - start)


def board_metrics(tokens: torch.Tensor) -> dict:
    """Checkerboard: the share of points on dark squares (1 for the law) and the TV between the 8 x 8 squares'
    histogram and the law's (uniform on the 32 dark squares); a point that still holds a mask token (possible
    for a network that gives the mask mass) counts as off the board."""
    valid = (tokens < 64).all(1)
    squares = tokens[valid] // 8
    dark = float((squares.sum(1) % 2 == 0).double().sum()) / len(tokens)
    histogram = torch.bincount(squares[:, 0] * 8 + squares[:, 1], minlength=64).double() / len(tokens)
    target = torch.tensor([0.0 if (k // 8 + k % 8) % 2 else 1 / 32 for k in range(64)], dtype=torch.float64)
    off_board = 1.0 - float(valid.double().mean())
    return {"on_dark_squares": dark, "squares_tv": 0.5 * (float((histogram - target).abs().sum()) + off_board)}


def measures(law: TokenLaw, tokens: torch.Tensor, extra) -> dict:
    """TV to the law (mass off the support counted), the share of samples still holding a mask token, and the
    toy's own extra metrics (if any)."""
    masked = float((tokens >= law.vocab_size).any(1).double().mean())
    return {"tv": law.total_variation(tokens), "still_masked": masked,
            **({} if extra is None else extra(tokens))}


TOYS = {
    "markov_tokens": {"law": markov_law, "hidden": (128, 128), "steps": 2000, "batch": 256, "lr": 2e-3,
                      "warmup": 50, "n": 20_000, "nfes": (1, 2, 4, 8, 16, 32), "extra": None,
                      "flowdiff_losses": ("cross_entropy", "generalized_kl")},
    "checkerboard_tokens": {"law": checkerboard_law, "hidden": (256, 256, 256), "steps": 1500, "batch": 512,
                            "lr": 2e-3, "warmup": 100, "n": 10_000, "nfes": (2, 8, 32), "extra": board_metrics,
                            "flowdiff_losses": ("cross_entropy", "generalized_kl")},
}
"""Per toy: its law, the shared network and optimisation settings, samples per cell, NFEs, extra metrics."""

class PeerModel:
    """What flow_matching's solver calls: the probabilities p_{1|t} over the K + 1 states (a ModelWrapper)."""

    @staticmethod
    def of_peer_network(network):
        """A flow_matching-trained network (logits over K + 1) as probabilities."""
        from flow_matching.utils import ModelWrapper

        class Softmax(ModelWrapper):
            def forward(self, x, t, **extras):
                return self.model(x, t).float().softmax(-1)

        return Softmax(network)

    @staticmethod
    def of_flowdiff_network(network, path: MixturePath):
        """A flowdiff-trained network's posterior over the K + 1 states (the same-network comparison)."""
        from flow_matching.utils import ModelWrapper

        class Posterior(ModelWrapper):
            def forward(self, x, t, **extras):
                return log_posterior(self.model, path, x, t.float()).exp()

        return Posterior(network)


def peer_path():
    """flow_matching's linear-kappa mixture path."""
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler

    return MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=1.0))


def peer_sample(wrapped, vocab_size: int, n: int, length: int, nfe: int, seed: int) -> torch.Tensor:
    """flow_matching's MixtureDiscreteEulerSolver from the all-mask state on a uniform grid of `nfe` steps."""
    from flow_matching.solver import MixtureDiscreteEulerSolver

    solver = MixtureDiscreteEulerSolver(wrapped, peer_path(), vocabulary_size=vocab_size + 1)
    torch.manual_seed(seed)  # flow_matching draws from the global generator
    start = torch.full((n, length), vocab_size, dtype=torch.long)
    return solver.sample(start, step_size=None, time_grid=torch.linspace(0, 1, nfe + 1))


def data_of(law: TokenLaw) -> torch.Tensor:
    """The 50,000 training draws both libraries see."""
    return law.sample(50_000, torch.Generator().manual_seed(0))


def train_flowdiff(law: TokenLaw, setting: dict, seed: int, kind: str):
    """flowdiff's Trainer on the mask path with `DiscreteFlowMatching(kind)`; (network, path, CPU s)."""
    path = MixturePath(law.vocab_size, "mask")
    torch.manual_seed(seed)
    model = TokenMLP(law.vocab_size, law.support.shape[1], hidden=setting["hidden"])
    trainer = Trainer(model, path, data_of(law), loss=DiscreteFlowMatching(kind), steps=setting["steps"],
                      batch_size=setting["batch"], lr=setting["lr"], warmup=setting["warmup"], ema_decay=None,
                      grad_clip=GRAD_CLIP, seed=seed)
    result, ms = cpu_timed(trainer.fit)
    return result.sampling_model.eval(), path, ms / 1000


def _peer_loop(model, data: torch.Tensor, setting: dict, seed: int) -> None:
    """flow_matching's path and generalized KL in a plain AdamW loop (flowdiff's optimiser settings)."""
    from flow_matching.loss import MixturePathGeneralizedKL

    path = peer_path()
    loss_of = MixturePathGeneralizedKL(path)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_adamw(params, setting["lr"], 0.0)
    batches = torch.Generator().manual_seed(seed)
    mask, steps, warmup = int(data.max()) + 1, setting["steps"], min(setting["warmup"], setting["steps"] - 1)
    model.train()
    for step in range(steps):
        x1 = data[torch.randint(len(data), (setting["batch"],), generator=batches)]
        t = torch.rand(len(x1)) * (1 - 1e-3)
        x_t = path.sample(x_0=torch.full_like(x1, mask), x_1=x1, t=t).x_t
        loss = loss_of(model(x_t, t), x1, x_t, t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, setting["lr"], steps, warmup)
        optimizer.step()
    model.eval()


def train_peer(law: TokenLaw, setting: dict, seed: int):
    """A TokenMLP over K + 1 states trained with flow_matching's path and loss; (network, CPU s)."""
    torch.manual_seed(seed)
    model = TokenMLP(law.vocab_size + 1, law.support.shape[1], hidden=setting["hidden"])
    _, ms = cpu_timed(lambda: _peer_loop(model, data_of(law), setting, seed))
    return model, ms / 1000


def one_seed(law: TokenLaw, setting: dict, seed: int) -> dict:
    """Train every arm (order alternating with the seed), then sample each at every NFE (interleaved)."""
    arms = [f"flowdiff_{kind}" for kind in setting["flowdiff_losses"]] + ["flow_matching_generalized_kl"]
    if seed % 2:
        arms.reverse()
    trained = {}
    for arm in arms:
        if arm.startswith("flowdiff_"):
            network, path, seconds = train_flowdiff(law, setting, seed, arm.removeprefix("flowdiff_"))
            trained[arm] = (lambda nfe, s, net=network, p=path: sample_tokens(
                net, p, setting["n"], steps=nfe, generator=torch.Generator().manual_seed(s)).tokens, seconds, network)
        else:
            network, seconds = train_peer(law, setting, seed)
            wrapped, length = PeerModel.of_peer_network(network), law.support.shape[1]
            trained[arm] = (lambda nfe, s, w=wrapped, n=length: peer_sample(w, law.vocab_size, setting["n"], n, nfe, s),
                            seconds, network)
        print(f"seed {seed} {arm}: trained in {trained[arm][1]:.1f} CPU s", flush=True)
    result = {"seed": seed, "train_cpu_s": {arm: trained[arm][1] for arm in arms}, "euler": []}
    with torch.no_grad():
        for i, nfe in enumerate(setting["nfes"]):
            row = {"nfe": nfe}
            for arm in (arms if i % 2 == 0 else arms[::-1]):
                tokens, ms = cpu_timed(lambda arm=arm, nfe=nfe: trained[arm][0](nfe, 1000 * seed + nfe))
                row[arm] = {**measures(law, tokens, setting["extra"]), "cpu_ms": ms}
            result["euler"].append(row)
            print(f"seed {seed}", row, flush=True)
        result["first_hitting"] = {}
        for arm in arms:
            if arm.startswith("flowdiff_"):
                network, path = trained[arm][2], MixturePath(law.vocab_size, "mask")
                drawn, ms = cpu_timed(lambda net=network, p=path: sample_tokens(
                    net, p, setting["n"], method="first_hitting", generator=torch.Generator().manual_seed(seed)))
                result["first_hitting"][arm] = {"nfe": drawn.nfe, **measures(law, drawn.tokens, setting["extra"]),
                                                "cpu_ms": ms}
    result["networks"] = {arm: trained[arm][2] for arm in arms}
    return result


def same_network(network, law: TokenLaw, setting: dict) -> list[dict]:
    """One flowdiff network, sampled by flowdiff's and flow_matching's Euler samplers at each NFE (interleaved)."""
    path, length = MixturePath(law.vocab_size, "mask"), law.support.shape[1]
    wrapped, rows = PeerModel.of_flowdiff_network(network, path), []
    draws = {"flowdiff_euler": lambda nfe: sample_tokens(network, path, setting["n"], steps=nfe,
                                                         generator=torch.Generator().manual_seed(1)).tokens,
             "flow_matching_euler": lambda nfe: peer_sample(wrapped, law.vocab_size, setting["n"], length, nfe, 1)}
    with torch.no_grad():
        for i, nfe in enumerate(setting["nfes"]):
            row = {"nfe": nfe}
            for name in (list(draws) if i % 2 == 0 else list(draws)[::-1]):
                tokens, ms = cpu_timed(lambda name=name, nfe=nfe: draws[name](nfe))
                row[name] = {**measures(law, tokens, setting["extra"]), "cpu_ms": ms}
            rows.append(row)
            print("same network", row, flush=True)
    return rows


def spread(values: list[float]) -> dict:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def summary(seeds: list[dict]) -> dict:
    """Mean and sd over seeds of every arm's TV (and extra metrics), CPU ms and training CPU s."""
    arms = list(seeds[0]["train_cpu_s"])
    out = {"train_cpu_s": {a: spread([s["train_cpu_s"][a] for s in seeds]) for a in arms}, "euler": [],
           "first_hitting": {}}
    for i, row in enumerate(seeds[0]["euler"]):
        out["euler"].append({"nfe": row["nfe"], **{a: {k: spread([s["euler"][i][a][k] for s in seeds])
                                                          for k in row[a]} for a in arms}})
    for arm, first in seeds[0]["first_hitting"].items():
        out["first_hitting"][arm] = {k: spread([s["first_hitting"][arm][k] for s in seeds]) for k in first}
    return out


def print_table(name: str, summed: dict) -> None:
    """The summary as a markdown table on stdout."""
    arms = list(summed["train_cpu_s"])
    print(f"\n{name}: training CPU s " + ", ".join(
        f"{a} {summed['train_cpu_s'][a]['mean']:.0f} ± {summed['train_cpu_s'][a]['sd']:.0f}" for a in arms))
    print("| NFE | " + " | ".join(f"{a} TV | {a} CPU ms" for a in arms) + " |")
    for row in summed["euler"]:
        cells = [f"{row[a]['tv']['mean']:.4f} ± {row[a]['tv']['sd']:.4f} | {row[a]['cpu_ms']['mean']:.0f}"
                 for a in arms]
        print(f"| {row['nfe']} | " + " | ".join(cells) + " |")
    for arm, first in summed["first_hitting"].items():
        print(f"first hitting of {arm}: NFE {first['nfe']['mean']:.0f}, TV {first['tv']['mean']:.4f} ± "
              f"{first['tv']['sd']:.4f}, {first['cpu_ms']['mean']:.0f} CPU ms")


def run_toy(name: str, seeds: int, quick: bool) -> dict:
    """Both sections for one toy."""
    setting = dict(TOYS[name])
    if quick:
        setting.update(steps=30, n=1000, nfes=setting["nfes"][:2])
    law = setting.pop("law")()
    runs = [one_seed(law, setting, seed) for seed in range(seeds)]
    network = runs[0]["networks"]["flowdiff_cross_entropy"]
    for run in runs:
        del run["networks"]
    summed = summary(runs)
    print_table(name, summed)
    public = {k: v for k, v in setting.items() if k != "extra"}
    return {"settings": public, "seeds": runs, "summary": summed,
            "law_sample": measures(law, law.sample(setting["n"], torch.Generator().manual_seed(9)),
                                   setting["extra"]),
            "same_network": same_network(network, law, setting)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", choices=sorted(TOYS), action="append", help="toy (repeatable; default both)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per toy")
    parser.add_argument("--quick", action="store_true", help="a smoke run that writes nothing")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/img"),
                        help="folder of the results, discrete_vs_flow_matching_TOY.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import flow_matching
    import flow_matching.loss
    import flow_matching.solver  # noqa: F401  (imported before any timing)

    for name in args.toy or list(TOYS):
        results = {"flow_matching_version": flow_matching.__version__, "torch_threads": 1,
                   "clock": "time.process_time (CPU time of this process)", "load_average_at_start": os.getloadavg()}
        results[name] = run_toy(name, args.seeds, args.quick)
        results["load_average_at_end"] = os.getloadavg()
        if not args.quick:
            out = args.out_dir / f"discrete_vs_flow_matching_{name}.json"
            out.write_text(json.dumps(results, indent=2))
            print(f"wrote {out}")


if __name__ == "__main__":
    main()
