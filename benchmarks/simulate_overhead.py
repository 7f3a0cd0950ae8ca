"""Overhead of `flowdiff.simulate` (Euler) against a bare Python loop and torchdiffeq's odeint.

The same drift, the same grid and the same Euler update x <- x + dt u(x, t) in all three; only
the machinery around the update differs. Rounds interleave the methods (the machine may be
shared), and each method's time is its fastest round: other processes only ever add time.

    python benchmarks/simulate_overhead.py [--steps 1000] [--batch 256] [--rounds 25] [--threads 1]
                                           [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from torchdiffeq import odeint

import flowdiff as fd


def analytic_drift(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A cheap field u(x, t) = -x: per-step time is almost all loop overhead."""
    return -x


class MLPDrift(torch.nn.Module):
    """A small MLP field u(x, t) = MLP([x, t]) with three hidden layers of 64 SiLU units."""

    def __init__(self, dim: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.expand(x.shape[0], 1)], dim=1))


def bare_loop(drift, x0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Euler written by hand: for each step, x = x + dt * u(x, t)."""
    x = x0
    for t, dt in zip(ts[:-1].unbind(0), (ts[1:] - ts[:-1]).unbind(0)):
        x = x + dt * drift(x, t)
    return x


def with_flowdiff(drift, x0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    return fd.simulate(fd.ODE(drift), x0, ts, solver="euler").final


def with_torchdiffeq(drift, x0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    # odeint calls func(t, x) and returns the state at every time of ts.
    return odeint(lambda t, x: drift(x, t), x0, ts, method="euler")[-1]


METHODS = {"bare loop": bare_loop, "flowdiff simulate": with_flowdiff, "torchdiffeq odeint": with_torchdiffeq}


def measure(drift, x0, ts, rounds: int) -> dict[str, float]:
    """Fastest seconds per full integration of each method, the methods interleaved round by round."""
    sync = torch.cuda.synchronize if x0.is_cuda else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in METHODS}
    with torch.no_grad():
        results = {name: method(drift, x0, ts) for name, method in METHODS.items()}  # warm-up
        reference = results["bare loop"]
        for name, result in results.items():
            assert torch.allclose(result, reference, atol=1e-5), f"{name} disagrees with the bare loop"
        for _ in range(rounds):
            for name, method in METHODS.items():
                sync()
                start = time.perf_counter()
                method(drift, x0, ts)
                sync()
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    x0 = torch.randn(args.batch, 2, device=device)
    ts = fd.grids.uniform(0.0, 1.0, args.steps, device=device)
    drifts = {"analytic -x": analytic_drift, "MLP 3x64": MLPDrift().eval().to(device)}
    print(f"Euler on {device}, {args.steps} steps, batch {args.batch}, {args.threads} CPU thread(s), "
          f"fastest of {args.rounds} rounds, torch {torch.__version__}")
    print(f"{'drift':<12} {'method':<20} {'ms / solve':>10} {'us / step':>10} {'vs bare':>8}")
    for drift_name, drift in drifts.items():
        seconds = measure(drift, x0, ts, args.rounds)
        for name, s in seconds.items():
            ratio = s / seconds["bare loop"]
            print(f"{drift_name:<12} {name:<20} {1e3 * s:>10.2f} {1e6 * s / args.steps:>10.2f} {ratio:>8.3f}")


if __name__ == "__main__":
    main()
