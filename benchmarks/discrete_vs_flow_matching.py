"""flowdiff's discrete samplers beside Meta's flow_matching `MixtureDiscreteEulerSolver`, one network for both.

A `TokenMLP` is trained by flowdiff on `markov_tokens` (3 tokens from 4, mask source, linear kappa: the
law is known exactly). The same trained posterior is then sampled by flowdiff's Euler CTMC sampler, by
flowdiff's first-hitting sampler, and by flow_matching's mixture Euler solver (its path
`MixtureDiscreteProbPath(PolynomialConvexScheduler(n=1))` is the same linear-kappa mixture path; its
network wrapper returns the same posterior over the K + 1 states). Reported: total variation to the exact
law at equal NFE, and sampling milliseconds. flow_matching draws from the global torch generator (seeded
here) and in float32 by default; flowdiff in float64 from an explicit generator.

Run:  .venv/bin/python benchmarks/discrete_vs_flow_matching.py          (about 2-4 minutes on 2 CPU cores)
      .venv/bin/python benchmarks/discrete_vs_flow_matching.py --quick  (a smoke run)
Needs flow_matching (benchmarks/requirements.txt).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from flowdiff.data.tokens import markov_law  # noqa: E402
from flowdiff.learning.discrete import DiscreteFlowMatching, log_posterior, sample_tokens  # noqa: E402
from flowdiff.learning.models import TokenMLP  # noqa: E402
from flowdiff.learning.training.trainer import Trainer  # noqa: E402
from flowdiff.paths.discrete import MixturePath  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", type=Path, default=Path("docs/img/discrete_vs_flow_matching.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    law, path = markov_law(), MixturePath(4, "mask")
    torch.manual_seed(0)
    model = TokenMLP(4, 3, hidden=(128, 128))
    data = law.sample(50_000, torch.Generator().manual_seed(0))
    steps = 50 if args.quick else 2000
    Trainer(model, path, data, loss=DiscreteFlowMatching(), steps=steps, batch_size=256, lr=2e-3, warmup=50,
            ema_decay=None).fit()
    network = model.eval()
    n = 2000 if args.quick else 50_000
    floor = law.total_variation(law.sample(n, torch.Generator().manual_seed(9)))
    solver, rows = peer_sampler(network, path), []
    for nfe in (1, 2, 4, 8, 16, 32):
        start = time.perf_counter()
        ours = sample_tokens(network, path, n, steps=nfe, generator=torch.Generator().manual_seed(1))
        ours_ms = 1000 * (time.perf_counter() - start)
        torch.manual_seed(1)
        start = time.perf_counter()
        grid = torch.linspace(0, 1, nfe + 1)
        theirs = solver.sample(path.sample_source((n, 3)), step_size=None, time_grid=grid)
        theirs_ms = 1000 * (time.perf_counter() - start)
        rows.append({"nfe": nfe, "flowdiff_euler_tv": law.total_variation(ours.tokens), "flowdiff_euler_ms": ours_ms,
                     "flow_matching_euler_tv": law.total_variation(theirs), "flow_matching_euler_ms": theirs_ms})
        print(rows[-1], flush=True)
    start = time.perf_counter()
    hitting = sample_tokens(network, path, n, method="first_hitting", generator=torch.Generator().manual_seed(2))
    first = {"nfe": hitting.nfe, "tv": law.total_variation(hitting.tokens),
             "ms": 1000 * (time.perf_counter() - start)}
    print("first hitting", first, "law's own sample TV", floor)
    if not args.quick:
        args.out.write_text(json.dumps({"train_steps": steps, "n": n, "law_sample_tv": floor, "euler": rows,
                                        "first_hitting": first}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
