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
"""The settings of a pairs directory; shards made with other settings are never mixed with them."""


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


def generate_pairs(run, n: int, directory: str | Path, steps: int = 50, solver: str = "heun",
                   shard_size: int = 4096, seed: int = 0,
                   callback: Callable[[dict], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (X_0, X_1 = teacher ODE(X_0)) in the network's units, made or read shard by shard in `directory`."""
    from flowdiff.learning.sampling import noise, sample

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"the number of pairs must be a positive integer, got {n!r}")
    if run.num_classes is not None:
        raise IncompatibleError(f"{run.directory} is label-conditioned; reflow of conditional runs is not supported "
                                "yet (reflow an unconditional run)")
    directory = Path(directory)
    manifest = {"teacher": str(Path(run.directory).resolve()), "teacher_step": run.step, "pairs": n, "steps": steps,
                "solver": solver, "shard_size": shard_size, "seed": seed}
    _check_manifest(directory, manifest)
    shape, parts = tuple(run.network.data_shape), []
    shards = math.ceil(n / shard_size)
    for index in range(shards):
        file, size = _shard(directory, index), min(shard_size, n - index * shard_size)
        if callback is not None:
            callback({"task": f"pairs shard {index + 1}/{shards}", "done": index, "total": shards})
        if not file.is_file():
            generator = torch.Generator().manual_seed(seed * 100_003 + index)
            x0 = noise(size, shape, generator, run.device)
            x1 = sample(run.model, run.path, x0=x0, steps=steps, solver=solver)
            write_with(file, lambda tmp, x0=x0, x1=x1: torch.save({"x0": x0.cpu(), "x1": x1.cpu()}, tmp))
        pair = torch.load(file, map_location="cpu", weights_only=True)
        if tuple(pair["x0"].shape) != (size, *shape) or pair["x0"].shape != pair["x1"].shape:
            raise InvalidInputError(f"{file} does not hold {size} pairs of shape {shape}; delete it to make it again")
        parts.append(pair)
    return torch.cat([p["x0"] for p in parts]), torch.cat([p["x1"] for p in parts])


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
    seed = settings.get("seed", 0)
    x0, x1 = generate_pairs(run, n_pairs, pairs_dir, ode_steps, solver, seed=seed, callback=callback)
    student = build_model(run.network.config())
    student.load_state_dict(run.network.state_dict())
    student.requires_grad_(True)
    trainer = Trainer(student, run.path, x1, coupling=StoredPairs(x0, x1),
                      hooks=[*run_hooks(out, run.data_info, resume, force), *hooks], **settings)
    return trainer, trainer.fit()
