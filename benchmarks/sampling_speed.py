"""Speed of flowdiff's native samplers against their peers, measured in one process, interleaved.

    python benchmarks/sampling_speed.py dopri5   [--rounds 21] [--threads 1]
    python benchmarks/sampling_speed.py overhead [--rounds 11] [--threads 1]
    python benchmarks/sampling_speed.py compile  [--rounds 11] [--threads 1]

dopri5: native Dormand–Prince 5(4) against torchdiffeq's dopri5 at the same rtol = atol on an MLP
field (width 64, batch 256, weights scaled so that a solve takes tens of steps): median wall time
of each, their ratio, the NFE, and the max error against a float64 solve at rtol = atol = 1e-12.
overhead: `fd.sample` with Euler against a bare Python loop over the same network (3 hidden layers
of width 256, batch 4096, 100 steps). compile: `fd.sample(compile=True)` against eager.
Rounds alternate the methods (the machine may be shared); each figure is a median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import flowdiff as fd
from flowdiff.dynamics.solvers import Dopri5


class MLPField(torch.nn.Module):
    """u(x, t) = MLP([x, t]) with SiLU layers; `gain` scales the weights (larger: a harder ODE)."""

    def __init__(self, dim: int = 2, width: int = 64, layers: int = 3, gain: float = 1.0) -> None:
        super().__init__()
        sizes = [dim + 1, *[width] * layers, dim]
        modules: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            modules.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                modules.append(torch.nn.SiLU())
        self.net = torch.nn.Sequential(*modules)
        with torch.no_grad():
            for p in self.net.parameters():
                p.mul_(gain)
        self.data_shape = (dim,)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1).expand(x.shape[0], 1)], dim=1))


def interleaved(methods: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each method, the methods alternating round by round (after one warm-up each)."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():
        method()
    for _ in range(rounds):
        for name, method in methods.items():
            start = time.perf_counter()
            method()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def bench_dopri5(rounds: int) -> None:
    from torchdiffeq import odeint

    torch.manual_seed(0)
    field = MLPField(gain=3.0).eval()
    exact_field = MLPField(gain=1.0).double().eval()
    exact_field.load_state_dict({k: v.double() for k, v in field.state_dict().items()})
    x0 = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    ts = torch.tensor([0.0, 1.0])
    reference = odeint(lambda t, x: exact_field(x, t), x0.double(), ts.double(), rtol=1e-12, atol=1e-12)[-1]
    print(f"{'tol':>7} {'native ms':>10} {'tdq ms':>8} {'ratio':>6} {'native NFE':>10} {'tdq NFE':>8} "
          f"{'native err':>10} {'tdq err':>9}")
    for tol in (1e-3, 1e-4, 1e-5, 1e-6):
        compare_dopri5(field, x0, ts, reference, tol, rounds)


def compare_dopri5(field, x0, ts, reference, tol: float, rounds: int) -> None:
    """One line of the dopri5 table: times, their ratio, NFE and errors at rtol = atol = tol."""
    from torchdiffeq import odeint

    counts = {"torchdiffeq": 0}

    def tdq_field(t, x):
        counts["torchdiffeq"] += 1
        return field(x, t)

    solver = Dopri5(rtol=tol, atol=tol)
    native = fd.simulate(fd.ODE(field), x0, ts, solver=solver)
    peer = odeint(tdq_field, x0, ts, rtol=tol, atol=tol, method="dopri5")[-1]
    peer_nfe = counts["torchdiffeq"]
    errors = [float((y.double() - reference).abs().max()) for y in (native.final, peer)]
    seconds = interleaved({"native": lambda: fd.simulate(fd.ODE(field), x0, ts, solver=solver),
                           "torchdiffeq": lambda: odeint(tdq_field, x0, ts, rtol=tol, atol=tol)}, rounds)
    print(f"{tol:>7.0e} {1e3 * seconds['native']:>10.2f} {1e3 * seconds['torchdiffeq']:>8.2f} "
          f"{seconds['native'] / seconds['torchdiffeq']:>6.3f} {native.nfe:>10} {peer_nfe:>8} "
          f"{errors[0]:>10.2e} {errors[1]:>9.2e}")


def bare_euler(model, x0: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
    """Euler by hand: x = x + dt * u(x, t) over the grid."""
    x = x0
    for t, dt in zip(ts[:-1].unbind(0), (ts[1:] - ts[:-1]).unbind(0)):
        x = x + dt * model(x, t)
    return x


@torch.no_grad()
def bench_overhead(rounds: int, compile_too: bool = False) -> None:
    torch.manual_seed(0)
    model = fd.models.MLP(dim=2, hidden=(256, 256, 256)).eval()
    path = fd.GaussianPath("linear")
    x0 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(1))
    ts = fd.grids.uniform(0.0, 1.0, 100)
    methods = {"bare loop": lambda: bare_euler(model, x0, ts),
               "fd.sample euler": lambda: fd.sample(model, path, x0=x0, steps=100, solver="euler")}
    if compile_too:
        methods["fd.sample euler compile"] = lambda: fd.sample(model, path, x0=x0, steps=100, solver="euler",
                                                              compile=True)
    reference = methods["bare loop"]()
    for name, method in methods.items():
        error = float((method() - reference).abs().max())
        print(f"{name:<26} max |x - bare| = {error:.2e}")
    seconds = interleaved(methods, rounds)
    print("MLP 3x256, batch 4096, 100 Euler steps")
    for name, s in seconds.items():
        print(f"{name:<26} {1e3 * s:>9.1f} ms  ratio to bare {s / seconds['bare loop']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["dopri5", "overhead", "compile"])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s), median of {args.rounds} interleaved rounds")
    {"dopri5": bench_dopri5, "overhead": bench_overhead,
     "compile": lambda rounds: bench_overhead(rounds, compile_too=True)}[args.what](args.rounds)


if __name__ == "__main__":
    main()
