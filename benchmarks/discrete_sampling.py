"""Discrete flow matching measurements: categorical precision, and the checkerboard as 2 tokens of 64.

1. float64 vs float32 categorical draws (Gumbel-max, `flowdiff.dynamics.ctmc.categorical`) on a peaked law
   of the kind a nearly unmasked sequence gives: one token with probability 0.99, the other 0.01 spread
   evenly over `--rare` tokens. Reported: the share of draws that land on a rare token (exactly 0.01),
   and the mean of -log p(draw) against the entropy H (equal in expectation for exact sampling), each
   with its standard error.
2. The 2-D checkerboard discretised to a 64 x 64 grid (`checkerboard_tokens`: 2 tokens from 64): a token
   MLP trained by discrete flow matching (mask source, cross-entropy), then the total variation between
   samples and the exact law (2048 states: its noise floor at 10,000 samples is about 0.13, reported), the
   share of samples on the dark squares and the TV of the 8 x 8 squares' histogram, for Euler steps and
   for the first-hitting sampler, with sampling ms; a picture of the samples
   (docs/img/discrete_checkerboard.png).

Run:  .venv/bin/python benchmarks/discrete_sampling.py            (about 5-10 minutes on 2 CPU cores)
      .venv/bin/python benchmarks/discrete_sampling.py --quick    (a smoke run)
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from flowdiff.data.tokens import checkerboard_law  # noqa: E402
from flowdiff.dynamics.ctmc import categorical  # noqa: E402
from flowdiff.learning.discrete import DiscreteFlowMatching, sample_tokens  # noqa: E402
from flowdiff.learning.models import TokenMLP  # noqa: E402
from flowdiff.learning.training.trainer import Trainer  # noqa: E402
from flowdiff.paths.discrete import MixturePath  # noqa: E402


def categorical_bias(rare: int, draws: int, chunk: int = 200) -> dict:
    """Rare-token share and mean -log p(draw) - H for float64 and float32 Gumbel-max draws (module doc, 1)."""
    p = torch.full((rare + 1,), 0.01 / rare, dtype=torch.float64)
    p[0] = 0.99
    entropy = float(-(p * p.log()).sum())
    result = {"rare_tokens": rare, "draws": draws, "exact_rare_share": 0.01, "entropy": entropy}
    for dtype in ("float64", "float32"):
        generator = torch.Generator().manual_seed(0)
        start, drawn = time.perf_counter(), []
        for _ in range(draws // chunk):
            drawn.append(categorical(p.expand(chunk, -1), generator, dtype))
        drawn = torch.cat(drawn)
        surprise = -p.log()[drawn]
        share = float((drawn > 0).double().mean())
        result[dtype] = {
            "rare_share": share, "rare_share_se": math.sqrt(0.01 * 0.99 / len(drawn)),
            "mean_surprise_minus_entropy": float(surprise.mean()) - entropy,
            "surprise_se": float(surprise.std()) / math.sqrt(len(drawn)),
            "seconds": time.perf_counter() - start,
        }
        print(dtype, result[dtype], flush=True)
    return result


def checkerboard(steps: int, n: int, picture: Path | None) -> dict:
    """Train a token MLP on checkerboard_tokens; TV of samples to the law per sampler (module doc, 2)."""
    law = checkerboard_law()
    data = law.sample(50_000, torch.Generator().manual_seed(0))
    path = MixturePath(64, "mask")
    torch.manual_seed(0)
    model = TokenMLP(64, 2, hidden=(256, 256, 256), embed_dim=32)
    start = time.perf_counter()
    result = Trainer(model, path, data, loss=DiscreteFlowMatching(), steps=steps, batch_size=512, lr=2e-3,
                     warmup=100, ema_decay=0.999).fit()
    train_seconds = time.perf_counter() - start
    network = result.sampling_model.eval()
    rows = []
    for method, count in [("euler", 2), ("euler", 8), ("euler", 32), ("euler", 128), ("first_hitting", 0)]:
        start = time.perf_counter()
        drawn = sample_tokens(network, path, n, steps=max(count, 1), method=method,
                              generator=torch.Generator().manual_seed(1))
        ms = 1000 * (time.perf_counter() - start)
        rows.append({"method": method, "steps": count or None, "nfe": drawn.nfe, "sampling_ms": ms,
                     "total_variation": law.total_variation(drawn.tokens), **board_metrics(drawn.tokens)})
        print(rows[-1], flush=True)
        if picture is not None and method == "first_hitting":
            draw_picture(drawn.tokens, law.sample(n, torch.Generator().manual_seed(2)), picture)
    reference = law.sample(n, torch.Generator().manual_seed(3))
    floor = {"total_variation": law.total_variation(reference), **board_metrics(reference)}
    return {"train_steps": steps, "train_seconds": train_seconds, "n": n, "law_sample_vs_law": floor, "rows": rows}


def board_metrics(tokens: torch.Tensor) -> dict:
    """The share of points on dark squares (1 for the law), and the TV between the 8 x 8 squares' histogram
    and the law's (uniform over the 32 dark squares): coarser than the 2048-state TV, so a lower noise floor."""
    squares = tokens // 8
    dark = (squares.sum(1) % 2 == 0)
    histogram = torch.bincount(squares[:, 0] * 8 + squares[:, 1], minlength=64).double() / len(tokens)
    target = torch.tensor([0.0 if (k // 8 + k % 8) % 2 else 1 / 32 for k in range(64)], dtype=torch.float64)
    return {"on_dark_squares": float(dark.double().mean()), "squares_tv": 0.5 * float((histogram - target).abs().sum())}


def draw_picture(samples: torch.Tensor, data: torch.Tensor, file: Path) -> None:
    """Data and samples as 2-D histograms on the 64 x 64 grid, side by side."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4))
    FigureCanvasAgg(figure)
    for k, (title, tokens) in enumerate((("data (exact law)", data), ("samples (first hitting, NFE 2)", samples))):
        axis = figure.add_subplot(1, 2, k + 1)
        grid = torch.zeros(64, 64)
        grid.index_put_((tokens[:, 0], tokens[:, 1]), torch.ones(len(tokens)), accumulate=True)
        axis.imshow(grid.T.numpy(), origin="lower", cmap="magma")
        axis.set_title(title)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(file, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--rare", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path("docs/img/discrete_results.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    bias = categorical_bias(1000 if args.quick else args.rare, 400 if args.quick else 20_000)
    board = checkerboard(50 if args.quick else 3000, 2000 if args.quick else 10_000,
                         None if args.quick else args.out.with_name("discrete_checkerboard.png"))
    if not args.quick:
        args.out.write_text(json.dumps({"categorical": bias, "checkerboard": board}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
