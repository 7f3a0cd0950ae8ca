"""Where a briefly trained flow map's jump leaves its own ODE, on the 3-mode mixture of tests/learning/test_meanflow.py.

Trains MLP(2, hidden=(width,) * 3, flow_map=True) with the Trainer (AdamW, 5% warm-up then cosine, EMA) on 8192
mixture points, then from 2000 fixed noise points compares: the 1- and 2-jump samples, a 200-step Euler integration
of the network's own u(x, t, t) ("ode") and the exact ODE (the closed-form marginal velocity by dopri5, "exact").
It prints one JSON line per seed: the 1-/2-jump energy distances to fresh data (and data vs data), mean distances
map-ode, map-exact, ode-exact, the spread of |map - ode| (median, 90% quantile, share over 1), the jumps s -> 1
and 0 -> s from the network's own trajectory at s = 0.25, 0.5, 0.75, 0.95, the relative error of u(x, t, t)
against the marginal velocity, and the CPU seconds of training (`time.process_time`, one thread).

    python benchmarks/flow_map_vs_ode.py --loss '{"name": "shortcut", "consistency_share": 0.75}' --steps 6000
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import flowdiff as fd
from flowdiff.dynamics.solvers import Dopri5
from flowdiff.learning.flowmaps import jump
from flowdiff.learning.losses import get_loss
from flowdiff.learning.models import MLP
from flowdiff.paths.marginals import marginal_velocity

MIXTURE = fd.GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), 0.1)
PATH = fd.GaussianPath()


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic, as in the tests' helpers)."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


def train(loss: dict, seed: int, steps: int, width: int, lr: float, ema: float) -> tuple[torch.nn.Module, float]:
    """The EMA network after `steps` steps, and the training's CPU seconds."""
    torch.manual_seed(seed)
    data = MIXTURE.sample(8192, generator=torch.Generator().manual_seed(seed))
    model = MLP(2, hidden=(width,) * 3, flow_map=True)
    start = time.process_time()
    trainer = fd.Trainer(model, PATH, data, loss=get_loss(loss), steps=steps, batch_size=256, lr=lr,
                         warmup=max(1, steps // 20), device="cpu", seed=seed, log_every=max(1, steps // 10),
                         ema_decay=ema)
    return trainer.fit().sampling_model, time.process_time() - start


def own_trajectory(net, x0: torch.Tensor, steps: int = 200) -> list[torch.Tensor]:
    """The states of `steps` Euler steps of the network's velocity u(x, t, t) from x0 at t = 0."""
    grid, states = torch.linspace(0, 1, steps + 1), [x0]
    for a, b in zip(grid[:-1], grid[1:]):
        states.append(states[-1] + (b - a) * net(states[-1], a.expand(x0.shape[0])))
    return states


def distances(net) -> dict:
    """The sample-quality and map-versus-ODE numbers of one trained network (module docstring)."""
    reference, spare = (MIXTURE.sample(2000, generator=torch.Generator().manual_seed(k)) for k in (1, 2))
    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
    one, two = (fd.sample(net, PATH, x0=x0, steps=k) for k in (1, 2))
    states = own_trajectory(net, x0)
    ode = states[-1]
    exact = fd.simulate(fd.ODE(fd.MarginalField(PATH, MIXTURE)), x0, torch.tensor([0.0, 1.0]),
                        solver=Dopri5(rtol=1e-6, atol=1e-6)).final
    gap = (one - ode).norm(dim=1)
    out = {"baseline": energy_distance(reference, spare), "one": energy_distance(one, reference),
           "two": energy_distance(two, reference), "map_vs_ode": float(gap.mean()),
           "map2_vs_ode": float((two - ode).norm(dim=1).mean()),
           "ode_vs_exact": float((ode - exact).norm(dim=1).mean()),
           "map_vs_exact": float((one - exact).norm(dim=1).mean()), "gap_median": float(gap.median()),
           "gap_q90": float(gap.quantile(0.9)), "gap_share_over_1": float((gap > 1).double().mean())}
    for k in (50, 100, 150, 190):
        s = k / 200
        out[f"jump_{s:.2f}_to_1"] = float((jump(net, states[k], s, 1.0) - ode).norm(dim=1).mean())
        out[f"jump_0_to_{s:.2f}"] = float((jump(net, x0, 0.0, s) - states[k]).norm(dim=1).mean())
    return out | {"rel_err_v": velocity_error(net)}


def velocity_error(net, n: int = 8000) -> float:
    """E |u(x, t, t) - v(x, t)|^2 / E |v(x, t)|^2 over t ~ U[0, 1], x ~ p_t (v: the closed-form marginal velocity)."""
    g = torch.Generator().manual_seed(99)
    t = torch.rand(n, generator=g)
    x = PATH.sample(MIXTURE.sample(n, g), t, generator=g).x_t
    exact = marginal_velocity(PATH, MIXTURE, x, t)
    return float((net(x, t) - exact).pow(2).sum(1).mean() / exact.pow(2).sum(1).mean())


def main() -> None:
    """Parse the options, train and measure each seed, print one JSON line per seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default='{"name": "meanflow"}', help="the loss's config as JSON")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (data, initialisation, training)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in [int(s) for s in args.seeds.split(",")]:
        net, cpu = train(json.loads(args.loss), seed, args.steps, args.width, args.lr, args.ema)
        with torch.no_grad():
            row = distances(net)
        print(json.dumps({"seed": seed, "cpu_s": round(cpu, 1), **{k: round(v, 4) for k, v in row.items()}}),
              flush=True)


if __name__ == "__main__":
    main()
