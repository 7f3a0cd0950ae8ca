"""Milliseconds per training step: flowdiff's `Trainer` against torchcfm and Meta's flow_matching.

All methods train the same network (flowdiff's `MLP`, 2 -> 256 x 3 -> 2 by default) on the same
in-memory 2-D data with the same batch, the same straight path x_t = t x1 + (1 - t) x0 and the
same loss |v(x_t, t) - (x1 - x0)|^2; each step draws a minibatch by index, computes the loss,
back-propagates and takes an AdamW step. The peers' loops are the ones their READMEs show:

    torchcfm:       t, x_t, u_t = ConditionalFlowMatcher(sigma=0).sample_location_and_conditional_flow(x0, x1)
                    (ExactOptimalTransportConditionalFlowMatcher for OT pairs)
    flow_matching:  s = AffineProbPath(CondOTScheduler()).sample(t=t, x_0=x0, x_1=x1); target s.dx_t
                    (no coupling of its own: it has no OT row)

flowdiff runs `Trainer.train_step()` twice: with the peers' work only (ema_decay=None,
grad_clip=None), and with its defaults (EMA update and gradient clipping, extra work the
peers' loops do not do). A second table times the OT pairing alone: flowdiff's
`MinibatchOT()` (exact assignment) against torchcfm's `OTPlanSampler("exact").sample_plan`.

Rounds interleave the methods (the machine may be shared) and each method's time is its
fastest round: other processes can only add time.

    python benchmarks/training_speed.py [--batch 256] [--hidden 256,256,256] [--steps 50] [--rounds 7]
                                        [--threads 1] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import flowdiff as fd
from flowdiff.learning.models import MLP
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.couplings import MinibatchOT


def make_data(n: int, device) -> torch.Tensor:
    """A two-moons-like 2-D data set held in memory."""
    from flowdiff.data.toy2d import sample_toy

    return sample_toy("moons", n, torch.Generator().manual_seed(0)).x.to(device)


def new_model(hidden: tuple[int, ...], device) -> torch.nn.Module:
    torch.manual_seed(0)
    return MLP(2, hidden=hidden).to(device)


def flowdiff_step(data, hidden, batch, device, coupling: str, extras: bool) -> Callable[[], None]:
    """One `Trainer.train_step()`; extras=False turns off the EMA and gradient clipping."""
    trainer = Trainer(
        new_model(hidden, device), fd.GaussianPath("linear"), data, coupling=coupling, batch_size=batch,
        steps=10**9, lr=1e-3, warmup=0, lr_schedule="constant", device=device,
        ema_decay=0.999 if extras else None, grad_clip=1.0 if extras else None,
    )
    return trainer.train_step


def torchcfm_step(data, hidden, batch, device, coupling: str) -> Callable[[], None]:
    """The training step of torchcfm's README with the same network, batch and optimizer."""
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    model = new_model(hidden, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    matcher = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0) if coupling == "ot" else \
        ConditionalFlowMatcher(sigma=0.0)

    def step() -> None:
        x1 = data[torch.randint(data.shape[0], (batch,), device=device)]
        x0 = torch.randn_like(x1)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = (model(xt, t) - ut).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def flow_matching_step(data, hidden, batch, device) -> Callable[[], None]:
    """The training step of Meta flow_matching's README with the same network, batch and optimizer."""
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    model = new_model(hidden, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = AffineProbPath(scheduler=CondOTScheduler())

    def step() -> None:
        x1 = data[torch.randint(data.shape[0], (batch,), device=device)]
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], device=device)
        sample = path.sample(t=t, x_0=x0, x_1=x1)
        loss = (model(sample.x_t, sample.t) - sample.dx_t).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def fastest_ms(methods: dict[str, Callable[[], None]], repeats: int, rounds: int, device) -> dict[str, float]:
    """Milliseconds per call of each method: the fastest of `rounds` interleaved rounds of `repeats` calls."""
    best = {name: float("inf") for name in methods}
    for fn in methods.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for name, fn in methods.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - start) / repeats * 1e3)
    return best


def coupling_methods(batch: int) -> dict[str, Callable[[], None]]:
    """The OT pairing of a noise batch with a data batch, alone."""
    from torchcfm.optimal_transport import OTPlanSampler

    g = torch.Generator().manual_seed(1)
    x1 = make_data(batch, "cpu")
    x0 = torch.randn(batch, 2, generator=g)
    ours, theirs = MinibatchOT(), OTPlanSampler(method="exact")
    return {
        "flowdiff MinibatchOT (exact assignment)": lambda: ours(x0, x1),
        "torchcfm OTPlanSampler('exact').sample_plan": lambda: theirs.sample_plan(x0, x1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--hidden", default="256,256,256")
    parser.add_argument("--steps", type=int, default=50, help="steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    data = make_data(50_000, device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, MLP 2 -> {'x'.join(map(str, hidden))} -> 2, "
          f"fastest of {args.rounds} rounds of {args.steps} steps\n")

    print("| coupling | flowdiff (same work) | flowdiff (+EMA, +clip) | torchcfm | flow_matching (Meta) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for coupling in ("independent", "ot"):
        methods = {
            "flowdiff": flowdiff_step(data, hidden, args.batch, device, coupling, extras=False),
            "flowdiff+": flowdiff_step(data, hidden, args.batch, device, coupling, extras=True),
            "torchcfm": torchcfm_step(data, hidden, args.batch, device, coupling),
        }
        if coupling == "independent":
            methods["flow_matching"] = flow_matching_step(data, hidden, args.batch, device)
        ms = fastest_ms(methods, args.steps, args.rounds, device)
        meta = f"{ms['flow_matching']:.3f}" if "flow_matching" in ms else "n/a (no coupling)"
        print(f"| {coupling} | {ms['flowdiff']:.3f} | {ms['flowdiff+']:.3f} | {ms['torchcfm']:.3f} "
              f"| {meta} |")

    print("\nms per pairing of a noise batch with a data batch (2-D, exact OT):\n")
    print("| batch | flowdiff MinibatchOT | torchcfm OTPlanSampler |")
    print("| ---: | ---: | ---: |")
    for batch in sorted({args.batch, 1024}):
        ms = fastest_ms(coupling_methods(batch), max(5, args.steps // 5), args.rounds, torch.device("cpu"))
        ours, theirs = ms.values()
        print(f"| {batch} | {ours:.3f} | {theirs:.3f} |")


if __name__ == "__main__":
    main()
