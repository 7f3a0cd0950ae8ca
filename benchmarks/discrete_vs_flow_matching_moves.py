"""How often flow_matching's trained checkerboard model moves a token that is already unmasked.

flowdiff's posterior keeps an unmasked token by construction (p_{1|t}(a | x) = delta_{x_i}(a)); a network
trained by flow_matching (logits over the K + 1 states, as in discrete_vs_flow_matching.py) is free not to,
and `MixtureDiscreteEulerSolver` moves an unmasked token i at rate dkappa / (1 - kappa) (1 - p(x_i)) and, at
its last step, redraws every token from the posterior. This trains the seed-0 flow_matching model of
discrete_vs_flow_matching.py on `checkerboard_tokens` and records, at each solver step, the mean of
1 - p_{1|t}(x_i | x) over the unmasked tokens (the probability that a draw of the posterior moves one).

Run:  .venv/bin/python benchmarks/discrete_vs_flow_matching_moves.py      (one thread; about 40 CPU seconds)
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import discrete_vs_flow_matching as bench  # noqa: E402


def recording(network, mask: int):
    """flow_matching's model wrapper around `network` that logs (t, unmasked tokens, mean probability of a move)."""
    from flow_matching.utils import ModelWrapper

    class Recording(ModelWrapper):
        def forward(self, x, t, **extras):
            p = self.model(x, t).float().softmax(-1)
            unmasked = x != mask
            if unmasked.any():
                stay = p.gather(-1, x.unsqueeze(-1)).squeeze(-1)[unmasked]
                self.log.append((float(t[0]), int(unmasked.sum()), float((1 - stay).mean())))
            return p

    wrapped = Recording(network)
    wrapped.log = []
    return wrapped


def main() -> None:
    torch.set_num_threads(1)
    law, setting = bench.checkerboard_law(), dict(bench.TOYS["checkerboard_tokens"])
    setting.pop("law")
    network, seconds = bench.train_peer(law, setting, 0)
    print(f"flow_matching model, seed 0: trained in {seconds:.1f} CPU s")
    for nfe in (2, 8, 32):
        wrapped = recording(network, law.vocab_size)
        with torch.no_grad():
            tokens = bench.peer_sample(wrapped, law.vocab_size, setting["n"], 2, nfe, 1000 + nfe)
        steps = ", ".join(f"t={t:.2f}: {move:.4f}" for t, _, move in wrapped.log)
        t, count, move = wrapped.log[-1]
        print(f"NFE {nfe}: last step (t={t:.3f}): {count} unmasked tokens, mean probability of a move {move:.4f}; "
              f"TV {law.total_variation(tokens):.4f}, {bench.board_metrics(tokens)}\n  every step: {steps}")


if __name__ == "__main__":
    main()
