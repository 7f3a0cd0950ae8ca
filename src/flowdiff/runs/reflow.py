"""Reflow a trained run: its ODE's (noise, sample) pairs, stored in shards on disk, and a new flow trained on them.

Generating a pair costs one ODE solve, so pairs are written in shards (`shard_00000.pt`, ...) next to a
manifest of the settings that made them; an interrupted generation continues at the first missing shard, and
shard k always holds the same pairs (its noise is drawn from seed and k alone). A label-conditioned teacher gets
labels drawn uniformly over its classes from the same generator, right after the noise; they are stored with the
pairs, and the manifest names the classes and the guidance scale w the teacher sampled with. The student starts
from the teacher's weights (the usual fine-tuning of rectified flow) and trains by flow matching on the stored
pairs (with their labels and the teacher's label dropout, so that it stays guidable).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from flowdiff.atomic import write_json, write_with
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.guidance import check_guidance_scale

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


@dataclass(frozen=True)
class TeacherStates:
    """The teacher's ODE states (n, keep + 1, *shape) in the network's units, and their labels (n,) (None for an
    unconditional teacher)."""

    states: torch.Tensor
    labels: torch.Tensor | None


def _draw_start(run, size: int, seed: int, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shard `index`'s noise X_0 and (a labelled teacher) its labels, uniform over the classes: both drawn from one
    generator seeded with seed and index alone, the noise first (so unlabelled shards are as before)."""
    from flowdiff.learning.sampling import noise

    generator = torch.Generator().manual_seed(seed * 100_003 + index)
    x0 = noise(size, tuple(run.network.data_shape), generator, run.device)
    if run.num_classes is None:
        return x0, None
    return x0, torch.randint(run.num_classes, (size,), generator=generator)


def _read_shard(file: Path, size: int, keep: int, shape: tuple, num_classes: int | None) -> dict:
    """A stored shard's states (and labels for a labelled teacher), checked against what it must hold."""
    shard = torch.load(file, map_location="cpu", weights_only=True)
    states, labels = shard.get("states"), shard.get("labels")
    if not isinstance(states, torch.Tensor) or tuple(states.shape) != (size, keep + 1, *shape):
        raise InvalidInputError(f"{file} does not hold {size} trajectories of {keep + 1} states of shape {shape}; "
                                "delete it to make it again")
    if num_classes is not None and not (isinstance(labels, torch.Tensor) and labels.dtype == torch.long
                                        and tuple(labels.shape) == (size,) and bool((labels >= 0).all())
                                        and bool((labels < num_classes).all())):
        raise InvalidInputError(f"{file} does not hold {size} labels in 0..{num_classes - 1}; delete it to make it "
                                "again")
    return {"states": states, "labels": labels if num_classes is not None else None}


def _manifest(run, n: int, keep: int, steps: int, solver: str, shard_size: int, seed: int, guidance: float) -> dict:
    """The settings that make the shards; a labelled teacher's also name its classes and the guidance scale w."""
    manifest = {"teacher": str(Path(run.directory).resolve()), "teacher_step": run.step, "count": n, "keep": keep,
                "steps": steps, "solver": solver, "shard_size": shard_size, "seed": seed}
    if run.num_classes is not None:
        manifest.update(num_classes=run.num_classes, guidance=guidance)
    elif guidance != 1.0:
        raise IncompatibleError(f"{run.directory} was trained without labels; guidance w = {guidance:g} needs a "
                                "label-conditioned teacher (use w = 1)")
    return manifest


def generate_trajectories(run, n: int, directory: str | Path, keep: int = 1, steps: int = 50, solver: str = "heun",
                          shard_size: int = 4096, seed: int = 0, callback: Callable[[dict], None] | None = None,
                          guidance: float = 1.0) -> TeacherStates:
    """The teacher's ODE states at the times k / keep, in the network's units, made or read shard by shard in
    `directory` (the solver takes `steps` steps, rounded up to a multiple of `keep`). A labelled teacher is
    conditioned on labels drawn with the noise, with guidance scale `guidance`; they are stored with the states."""
    from flowdiff.learning.sampling import sample

    for name, value in (("the number of trajectories", n), ("keep", keep), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    guidance = check_guidance_scale(guidance)
    directory, every = Path(directory), math.ceil(steps / keep)
    _check_manifest(directory, _manifest(run, n, keep, every * keep, solver, shard_size, seed, guidance))
    shape, parts = tuple(run.network.data_shape), []
    shards = math.ceil(n / shard_size)
    for index in range(shards):
        file, size = _shard(directory, index), min(shard_size, n - index * shard_size)
        if callback is not None:
            callback({"task": f"teacher ODE, shard {index + 1}/{shards}", "done": index, "total": shards})
        if not file.is_file():
            x0, y = _draw_start(run, size, seed, index)
            states = sample(run.model, run.path, x0=x0, steps=every * keep, solver=solver, return_trajectory=True,
                            y=y, guidance=guidance if y is not None else 1.0).states[::every].transpose(0, 1).cpu()
            shard = {"states": states} if y is None else {"states": states, "labels": y}
            write_with(file, lambda tmp, shard=shard: torch.save(shard, tmp))
        parts.append(_read_shard(file, size, keep, shape, run.num_classes))
    labels = None if run.num_classes is None else torch.cat([part["labels"] for part in parts])
    return TeacherStates(torch.cat([part["states"] for part in parts]), labels)


def generate_pairs(run, n: int, directory: str | Path, steps: int = 50, solver: str = "heun",
                   shard_size: int = 4096, seed: int = 0, callback: Callable[[dict], None] | None = None,
                   guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """n pairs (X_0, X_1 = teacher ODE(X_0 | y)) in the network's units and their labels y (None without labels),
    made or read shard by shard in `directory`."""
    made = generate_trajectories(run, n, directory, 1, steps, solver, shard_size, seed, callback, guidance)
    return made.states[:, 0], made.states[:, 1], made.labels


def _student_settings(run, settings: dict) -> dict:
    """The training settings, with a labelled teacher's label dropout unless given (the student stays guidable)."""
    if run.num_classes is None or "label_dropout" in settings:
        return settings
    dropout = run.config.get("training", {}).get("label_dropout")
    return settings if dropout is None else {**settings, "label_dropout": dropout}


def reflow(teacher: str | Path, n_pairs: int, out: str | Path, pairs_dir: str | Path | None = None,
           ode_steps: int = 50, solver: str = "heun", resume: bool = False, force: bool = False,
           hooks: Sequence = (), callback: Callable[[dict], None] | None = None, guidance: float = 1.0, **settings):
    """Reflow the run `teacher` into the run `out`: n_pairs ODE pairs (stored in `pairs_dir`, default OUT-pairs;
    labelled ones with guidance scale `guidance`), then flow matching on them from the teacher's weights
    (`settings`: TrainConfig keywords such as steps, lr)."""
    from flowdiff.learning.flowmaps.reflow import StoredPairs
    from flowdiff.learning.models import build_model
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.runs.load import load
    from flowdiff.runs.train import run_hooks

    run = load(teacher)
    pairs_dir = Path(pairs_dir) if pairs_dir is not None else Path(f"{Path(out)}-pairs")
    x0, x1, y = generate_pairs(run, n_pairs, pairs_dir, ode_steps, solver, seed=settings.get("seed", 0),
                               callback=callback, guidance=guidance)
    student = build_model(run.network.config())
    student.load_state_dict(run.network.state_dict())
    student.requires_grad_(True)
    trainer = Trainer(student, run.path, x1, labels=y, coupling=StoredPairs(x0, x1, y),
                      hooks=[*run_hooks(out, run.data_info, resume, force), *hooks], **_student_settings(run, settings))
    return trainer, trainer.fit()


def distill(teacher: str | Path, jumps: int, n_trajectories: int, out: str | Path,
            trajectories_dir: str | Path | None = None, ode_steps: int = 64, solver: str = "heun",
            resume: bool = False, force: bool = False, hooks: Sequence = (),
            callback: Callable[[dict], None] | None = None, guidance: float = 1.0, **settings):
    """Distil the run `teacher` into a flow map for `jumps` jumps in the run `out`: its ODE's states at the times
    k / jumps (stored in `trajectories_dir`, default OUT-trajectories; labelled ones with guidance scale
    `guidance`), then `TrajectoryDistillation` from the teacher's weights (`settings`: TrainConfig keywords such
    as steps (of training) and lr)."""
    from flowdiff.learning.flowmaps.distill import TrajectoryDistillation
    from flowdiff.learning.models import build_model
    from flowdiff.learning.training.trainer import Trainer
    from flowdiff.runs.load import load
    from flowdiff.runs.train import run_hooks

    run = load(teacher)
    folder = Path(trajectories_dir) if trajectories_dir is not None else Path(f"{Path(out)}-trajectories")
    made = generate_trajectories(run, n_trajectories, folder, jumps, ode_steps, solver,
                                 seed=settings.get("seed", 0), callback=callback, guidance=guidance)
    student = build_model({**run.network.config(), "flow_map": True})
    student.load_state_dict(run.network.state_dict(), strict=False)  # all but the new interval embedding
    student.requires_grad_(True)
    trainer = Trainer(student, run.path, made.states[:, -1], labels=made.labels,
                      loss=TrajectoryDistillation(made.states, made.labels),
                      hooks=[*run_hooks(out, run.data_info, resume, force), *hooks], **_student_settings(run, settings))
    return trainer, trainer.fit()
