"""What the distributed tests compute, the same code in one process and on every rank of a gloo group.

`run_scenarios(out)` returns a dictionary of results; `spawn_gloo(world, folder)` runs it on
`world` CPU processes (torch.multiprocessing, gloo, a file rendezvous) and returns each rank's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket

import torch

import flowdiff as fd
from flowdiff.errors import FlowdiffError, IncompatibleError
from flowdiff.learning.losses import couple, flow_matching_loss
from flowdiff.learning.models import MLP
from flowdiff.learning.training import distributed
from flowdiff.learning.training.trainer import Trainer
from flowdiff.paths.couplings import MinibatchOT
from flowdiff.runs.load import load
from flowdiff.runs.lock import RunLockedError
from flowdiff.runs.train import run_hooks

GLOBAL_BATCH = 16


def data(n: int = 256, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Three labelled clusters in 2-D."""
    g = torch.Generator().manual_seed(7)
    y = torch.randint(3, (n,), generator=g)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([[1.0, 0.0], [-1.0, 1.0],
                                                                                [0.0, -1.0]])[y]
    return x.to(dtype), y


def trainer(dtype=torch.float32, out=None, resume: bool = False, **settings) -> Trainer:
    """A small labelled MLP trainer (minibatch OT, label dropout, EMA), the same network on every rank."""
    x, y = data(dtype=dtype)
    torch.manual_seed(0)
    model = MLP(2, hidden=(32, 32), num_classes=3, time_dim=8).to(dtype)
    options = dict(batch_size=GLOBAL_BATCH, steps=12, lr=1e-2, warmup=2, coupling="ot", label_dropout=0.3,
                   ema_decay=0.9, log_every=4, checkpoint_every=4, seed=5, device="cpu")
    options.update(settings)
    hooks = run_hooks(out, resume=resume) if out is not None else ()
    return Trainer(model, fd.GaussianPath(), x, labels=y, hooks=hooks, **options)


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def one_step_gradients(**settings) -> list[torch.Tensor]:
    """The gradients of the first step of a float64 network (no clipping), averaged over the ranks by DDP."""
    t = trainer(torch.float64, grad_clip=None, **settings)
    t.train_step()
    return [p.grad.detach().clone() for p in t.model.parameters()]


def coupled_pairs(gather: bool) -> dict[str, torch.Tensor]:
    """This rank's (x0, x1, y) of per-label minibatch OT on its slice of a global batch of 12 points."""
    x, y = data(12)
    n = 12 // distributed.world_size()
    shard = distributed.shard_of_this_rank(gather_couplings=gather)
    with distributed.sharded(shard):
        pair = couple(MinibatchOT(), shard.local(x, n), shard.local(y, n), torch.Generator().manual_seed(3))
    return {"x0": pair.x0, "x1": pair.x1, "y": pair.y}


def run_scenarios(folder, other_run=None) -> dict:
    """Every check's raw results on this rank (`other_run`: a run stopped by another number of ranks, to resume)."""
    results = {"gradients": one_step_gradients(),
               "stable_target_gradients": one_step_gradients(loss="stable_target", coupling="independent"),
               "ot_global": coupled_pairs(True),
               "ot_local": coupled_pairs(False)}
    straight = trainer()
    results["history"] = straight.fit().history
    results["model"], results["ema"] = weights(straight.model), weights(straight.ema.module)
    first = trainer(out=folder / "run")
    first.fit(until=6)
    resumed = trainer(out=folder / "run", resume=True)
    results["resumed_from"] = resumed.step
    resumed.fit()
    results["resumed_model"], results["resumed_ema"] = weights(resumed.model), weights(resumed.ema.module)
    if other_run is not None:
        results["other_resumed"] = weights(trainer(out=other_run, resume=True).fit().model)
    results["locked"] = locked_run(folder / "locked")
    results["nan"] = nan_on_last_rank(folder)
    results["nan_between_logs"] = nan_on_last_rank(folder, log_every=12)
    try:
        trainer(batch_size=GLOBAL_BATCH + 1)
        results["odd_batch"] = None
    except IncompatibleError as error:
        results["odd_batch"] = str(error)
    return results


def command_line(folder, single) -> dict:
    """`flowdiff train` into folder/run2 and `flowdiff sample` of the run `single` (ODE and SDE); what was printed."""
    from flowdiff.cli.app import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["train", *TRAIN_OPTIONS, "--out", str(folder / "run2")])
        main(["sample", str(single), *SAMPLE_OPTIONS, "--out", str(folder / "ode.npz")])
        main(["sample", str(single), *SAMPLE_OPTIONS, "--sigma", "0.5", "--out", str(folder / "sde.npz")])
    return {"printed": printed.getvalue()}


TRAIN_OPTIONS = ["--data", "moons", "--n-data", "256", "--steps", "8", "--batch", "16", "--coupling", "ot",
                 "--checkpoint-every", "4", "--quiet", "--no-report"]
SAMPLE_OPTIONS = ["--n", "51", "--steps", "4"]


def locked_run(out) -> str | None:
    """The error of a run whose directory is locked by another live process (here: this one's parent)."""
    if distributed.is_main():
        out.mkdir()
        (out / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": 0}))
    distributed.barrier()
    try:
        trainer(out=out)
    except RunLockedError as error:
        return str(error)
    return None


def nan_on_last_rank(folder, log_every: int = 4) -> dict:
    """A run whose loss turns NaN at its 6th step on the last rank only (checkpoints every 4 steps, the loss
    logged every `log_every`): the error each rank raises, the step of the checkpoint left behind, and whether
    every weight of that checkpoint is finite."""
    calls = []

    def loss(model, path, x1, **batch):
        calls.append(1)
        value = flow_matching_loss(model, path, x1, **batch)
        bad = len(calls) == 6 and distributed.rank() == distributed.world_size() - 1
        return value * float("nan") if bad else value

    run = folder / f"nan_log{log_every}"
    try:
        trainer(out=run, loss=loss, coupling="independent", log_every=log_every).fit()
        return {"error": None}
    except FlowdiffError as error:
        kept = [load(run, weights=which) for which in ("model", "ema")]
        finite = all(bool(torch.isfinite(p).all()) for run in kept for p in run.model.parameters())
        return {"error": str(error), "checkpoint": kept[0].step, "finite": finite}


def _worker(rank: int, world: int, folder, scenario, args) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                                         world_size=world)
    try:
        torch.save(scenario(folder, *args), folder / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def spawn_gloo(world: int, folder, scenario=run_scenarios, *args) -> list[dict]:
    """Run `run_scenarios` on `world` CPU processes of a gloo group; each rank's results.

    Forked, not spawned: the children inherit this process's imports (torch's optimizers and POT
    take seconds to import, more than the scenarios take to run).
    """
    torch.multiprocessing.start_processes(_worker, args=(world, folder, scenario, args), nprocs=world, join=True,
                                          start_method="fork")
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world)]
