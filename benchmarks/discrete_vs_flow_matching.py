"""flowdiff's discrete samplers beside Meta's flow_matching `MixtureDiscreteEulerSolver`, one network per toy.

Two toys whose law is known exactly, in one run:

1. `markov_tokens` (3 tokens from 4, 64 states): a `TokenMLP` (128, 128) trained by flowdiff for 2000 steps.
2. `checkerboard_tokens` (2 tokens from 64 on a 64 x 64 grid, 2048 states): a `TokenMLP` (256, 256, 256)
   trained by flowdiff with the settings of benchmarks/discrete_sampling.py (batch 512, lr 2e-3, EMA 0.999)
   but for 1500 steps instead of 3000, to fit the run in a few minutes. Also reported: the share of samples
   on the dark squares and the TV of the 8 x 8 squares' histogram (`board_metrics` of discrete_sampling.py),
   whose noise floor is lower than that of the 2048-state TV.

Both are mask source, linear kappa, cross-entropy. Each trained posterior is then sampled by flowdiff's
Euler CTMC sampler, by flowdiff's first-hitting sampler, and by flow_matching's mixture Euler solver (its
path `MixtureDiscreteProbPath(PolynomialConvexScheduler(n=1))` is the same linear-kappa mixture path; its
network wrapper returns the same posterior over the K + 1 states), at equal NFE on the same uniform time
grid. Reported: total variation to the exact law, and sampling milliseconds (one thread; the load average
of the machine is recorded beside them). flow_matching draws from the global torch generator (seeded here)
in float32, its default; flowdiff in float64 from an explicit generator.

Run:  .venv/bin/python benchmarks/discrete_vs_flow_matching.py          (about 5-8 minutes on 2 CPU cores)
      .venv/bin/python benchmarks/discrete_vs_flow_matching.py --quick  (a smoke run, writes nothing)
Needs flow_matching (benchmarks/requirements.txt).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from flowdiff.data.tokens import TokenLaw, checkerboard_law, markov_law  # noqa: E402
from flowdiff.learning.discrete import DiscreteFlowMatching, log_posterior, sample_tokens  # noqa: E402
from flowdiff.learning.models import TokenMLP  # noqa: E402
from flowdiff.learning.training.trainer import Trainer  # noqa: E402
from flowdiff.paths.discrete import MixturePath  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from discrete_sampling import board_metrics  # noqa: E402


def peer_sampler(network, path: MixturePath):
    """flow_matching's MixtureDiscreteEulerSolver around the posterior of `network` (probabilities over K + 1)."""
    from flow_matching.path import MixtureDiscreteProbPath
    from flow_matching.path.scheduler import PolynomialConvexScheduler
    from flow_matching.solver import MixtureDiscreteEulerSolver
    from flow_matching.utils import ModelWrapper

    class Posterior(ModelWrapper):
        def forward(self, x, t, **extras):
            return log_posterior(self.model, path, x, t.float()).exp()

    peer_path = MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=1.0))
    return MixtureDiscreteEulerSolver(Posterior(network), peer_path, vocabulary_size=path.num_states)


def timed(draw):
    """(result of draw(), milliseconds it took)."""
    start = time.perf_counter()
    result = draw()
    return result, 1000 * (time.perf_counter() - start)


def measures(law: TokenLaw, tokens: torch.Tensor, extra) -> dict:
    """TV to the law, and the toy's own extra metrics (if any)."""
    return {"tv": law.total_variation(tokens), **({} if extra is None else extra(tokens))}


def side_by_side(network, path: MixturePath, law: TokenLaw, n: int, nfes, extra=None) -> dict:
    """flowdiff Euler and flow_matching Euler at each NFE, then flowdiff first hitting (NFE = L)."""
    solver, rows, length = peer_sampler(network, path), [], law.support.shape[1]
    for nfe in nfes:
        ours, ours_ms = timed(lambda nfe=nfe: sample_tokens(network, path, n, steps=nfe,
                                                    generator=torch.Generator().manual_seed(1)).tokens)
        torch.manual_seed(1)
        grid = torch.linspace(0, 1, nfe + 1)
        theirs, theirs_ms = timed(lambda grid=grid: solver.sample(path.sample_source((n, length)), step_size=None,
                                                        time_grid=grid))
        rows.append({"nfe": nfe, "flowdiff_euler": {**measures(law, ours, extra), "ms": ours_ms},
                     "flow_matching_euler": {**measures(law, theirs, extra), "ms": theirs_ms},
                     "load_average_1min": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    hitting, ms = timed(lambda: sample_tokens(network, path, n, method="first_hitting",
                                              generator=torch.Generator().manual_seed(2)))
    first = {"nfe": hitting.nfe, **measures(law, hitting.tokens, extra), "ms": ms}
    floor = measures(law, law.sample(n, torch.Generator().manual_seed(9)), extra)
    print("flowdiff first hitting", first, "a sample of the law itself", floor, flush=True)
    return {"n": n, "law_sample": floor, "euler": rows, "first_hitting": first}


def train(law: TokenLaw, hidden, steps: int, **settings):
    """A TokenMLP trained by flowdiff on 50,000 draws of the law (mask source, linear kappa); (network, seconds)."""
    path = MixturePath(law.vocab_size, "mask")
    torch.manual_seed(0)
    model = TokenMLP(law.vocab_size, law.support.shape[1], hidden=hidden, **settings.pop("model", {}))
    data = law.sample(50_000, torch.Generator().manual_seed(0))
    result, ms = timed(lambda: Trainer(model, path, data, loss=DiscreteFlowMatching(), steps=steps, **settings).fit())
    return result.sampling_model.eval(), path, ms / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", type=Path, default=Path("docs/img/discrete_vs_flow_matching.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"torch_threads": 1, "load_average_at_start": os.getloadavg()}

    law, steps = markov_law(), 50 if args.quick else 2000
    network, path, seconds = train(law, (128, 128), steps, batch_size=256, lr=2e-3, warmup=50, ema_decay=None)
    print(f"markov_tokens: trained {steps} steps in {seconds:.0f} s", flush=True)
    results["markov_tokens"] = {"train_steps": steps, "train_seconds": seconds,
                                **side_by_side(network, path, law, 2000 if args.quick else 50_000,
                                               (1, 2, 4, 8, 16, 32))}

    law, steps = checkerboard_law(), 50 if args.quick else 1500
    network, path, seconds = train(law, (256, 256, 256), steps, batch_size=512, lr=2e-3, warmup=100,
                                   ema_decay=0.999, model={"embed_dim": 32})
    print(f"checkerboard_tokens: trained {steps} steps in {seconds:.0f} s", flush=True)
    results["checkerboard_tokens"] = {"train_steps": steps, "train_seconds": seconds,
                                      **side_by_side(network, path, law, 2000 if args.quick else 10_000,
                                                     (2, 8, 32), extra=board_metrics)}
    results["load_average_at_end"] = os.getloadavg()
    if not args.quick:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
