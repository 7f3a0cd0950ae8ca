"""Reflow a trained run: its ODE's (noise, sample) pairs, stored in shards on disk, and a new flow trained on them.

Generating a pair costs one ODE solve, so pairs are written in shards (`shard_00000.pt`, ...) next to a
manifest of the settings that made them; an interrupted generation continues at the first missing shard, and
shard k always holds the same pairs (its noise is drawn from seed and k alone). The student starts from the
teacher's weights (the usual fine-tuning of rectified flow) and trains by flow matching on the stored pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from flowdiff.atomic import write_json, write_with
from flowdiff.errors import IncompatibleError, InvalidInputError

MANIFEST = "pairs.json"
"""The settings of a pairs (or trajectories) directory; shards made with other settings are never mixed with them."""


def _shard(directory: Path, index: int) -> Path:
    return directory / f"shard_{index:05d}.pt"


def _check_manifest(directory: Path, manifest: dict) -> None:
    """Write the manifest of a new pairs directory, or refuse one whose pairs were made otherwise."""
    file = directory / MANIFEST
    if not file.is_file():
        if directory.is_dir() and any(directory.iterdir()):
            raise InvalidInputError(f"{directory} holds other files; give an empty or new folder for the pairs")
        write_json(file, manifest)
        return
    try:
        stored = json.loads(file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise InvalidInputError(f"{file} is not a pairs manifest written by flowdiff") from None
    changed = sorted(k for k in manifest if stored.get(k) != manifest[k])
    if changed:
        raise InvalidInputError(f"the pairs in {directory} were made with other settings ({', '.join(changed)}); "
                                "give another folder for the pairs, or the settings they were made with")


def generate_trajectories(run, n: int, directory: str | Path, keep: int = 1, steps: int = 50, solver: str = "heun",
                          shard_size: int = 4096, seed: int = 0,
                          callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """States (n, keep + 1, *shape) of the teacher's ODE at the times k / keep, in the network's units, made or read
    shard by shard in `directory` (the solver takes `steps` steps, rounded up to a multiple of `keep`)."""
    from flowdiff.learning.sampling import noise, sample

    for name, value in (("the number of trajectories", n), ("keep", keep), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    if run.num_classes is not None:
        raise IncompatibleError(f"{run.directory} is label-conditioned; reflow and distillation of conditional runs "
                                "are not supported yet (use an unconditional run)")
    directory, every = Path(directory), math.ceil(steps / keep)
    manifest = {"teacher": str(Path(run.directory).resolve()), "teacher_step": run.step, "count": n, "keep": keep,
                "steps": every * keep, "solver": solver, "shard_size": shard_size, "seed": seed}
    _check_manifest(directory, manifest)
    shape, parts = tuple(run.network.data_shape), []
    shards = math.ceil(n / shard_size)
    for index in range(shards):
        file, size = _shard(directory, index), min(shard_size, n - index * shard_size)
        if callback is not None:
            callback({"task": f"teacher ODE, shard {index + 1}/{shards}", "done": index, "total": shards})
        if not file.is_file():
            x0 = noise(size, shape, torch.Generator().manual_seed(seed * 100_003 + index), run.device)
            states = sample(run.model, run.path, x0=x0, steps=every * keep, solver=solver,
                            return_trajectory=True).states[::every].transpose(0, 1).cpu()
            write_with(file, lambda tmp, states=states: torch.save({"states": states}, tmp))
        states = torch.load(file, map_location="cpu", weights_only=True).get("states")
        if not isinstance(states, torch.Tensor) or tuple(states.shape) != (size, keep + 1, *shape):
            raise InvalidInputError(f"{file} does not hold {size} trajectories of {keep + 1} states of shape {shape}; "
                                    "delete it to make it again")
        parts.append(states)
    return torch.cat(parts)


def generate_pairs(run, n: int, directory: str | Path, steps: int = 50, solver: str = "heun",
                   shard_size: int = 4096, seed: int = 0,
                   callback: Callable[[dict], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (X_0, X_1 = teacher ODE(X_0)) in the network's units, made or read shard by shard in `directory`."""
    states = generate_trajectories(run, n, directory, 1, steps, solver, shard_size, seed, callback)
    return states[:, 0], states[:, 1]


def reflow(teacher: str | Path, n_pairs: int, out: str | Path, pairs_dir: str | Path | None = None,
           ode_steps: int = 50, solver: str = "heun", resume: bool = False, force: bool = False,
           hooks: Sequence = (), callback: Callable[[dict], None] | None = None, **settings):
    """Reflow the run `teacher` into the run `out`: n_pairs ODE pairs (stored in `pairs_dir`, default OUT-pairs),
    then flow matching on them from the teacher's weights (`settings`: TrainConfig keywords such as steps, lr)."""
    from flowdiff.learning.flowmaps.reflow import StoredPairs
    from flowdiff.learning.models import build_model
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.runs.load import load
    from flowdiff.runs.train import run_hooks

    run = load(teacher)
    pairs_dir = Path(pairs_dir) if pairs_dir is not None else Path(f"{Path(out)}-pairs")
    x0, x1 = generate_pairs(run, n_pairs, pairs_dir, ode_steps, solver, seed=settings.get("seed", 0),
                            callback=callback)
    student = build_model(run.network.config())
    student.load_state_dict(run.network.state_dict())
    student.requires_grad_(True)
    trainer = Trainer(student, run.path, x1, coupling=StoredPairs(x0, x1),
                      hooks=[*run_hooks(out, run.data_info, resume, force), *hooks], **settings)
    return trainer, trainer.fit()


def distill(teacher: str | Path, jumps: int, n_trajectories: int, out: str | Path,
            trajectories_dir: str | Path | None = None, ode_steps: int = 64, solver: str = "heun",
            resume: bool = False, force: bool = False, hooks: Sequence = (),
            callback: Callable[[dict], None] | None = None, **settings):
    """Distil the run `teacher` into a flow map for `jumps` jumps in the run `out`: its ODE's states at the times
    k / jumps (stored in `trajectories_dir`, default OUT-trajectories), then `TrajectoryDistillation` from the
    teacher's weights (`settings`: TrainConfig keywords such as steps (of training) and lr)."""
    from flowdiff.learning.flowmaps.distill import TrajectoryDistillation
    from flowdiff.learning.models import build_model
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.runs.load import load
    from flowdiff.runs.train import run_hooks

    run = load(teacher)
    folder = Path(trajectories_dir) if trajectories_dir is not None else Path(f"{Path(out)}-trajectories")
    states = generate_trajectories(run, n_trajectories, folder, jumps, ode_steps, solver,
                                   seed=settings.get("seed", 0), callback=callback)
    student = build_model({**run.network.config(), "flow_map": True})
    student.load_state_dict(run.network.state_dict(), strict=False)  # all but the new interval embedding
    student.requires_grad_(True)
    trainer = Trainer(student, run.path, states[:, -1], loss=TrajectoryDistillation(states),
                      hooks=[*run_hooks(out, run.data_info, resume, force), *hooks], **settings)
    return trainer, trainer.fit()
