"""Checkpoints of a run: written atomically, found by `latest.json`, read back exactly.

    checkpoints/latest.json         {"step": k, "dir": "step_0000k"}: the newest complete checkpoint
    checkpoints/step_0000k/         model.safetensors, ema.safetensors, state.pt (optimizer, RNG, step)

A checkpoint is written into a temporary folder that is renamed into place, and only then
does `latest.json` (replaced atomically) point at it; a crash at any moment leaves the previous
checkpoint complete and pointed to. Older checkpoints are pruned afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from flowdiff.atomic import current_umask, write_json
from flowdiff.errors import InvalidInputError
from flowdiff.runs.layout import CHECKPOINTS_DIR, EMA_WEIGHTS, LATEST_FILE, MODEL_WEIGHTS, TRAINING_STATE


def _tensors_for_safetensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    ema: nn.Module | None,
    state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` of a run atomically and point `latest.json` at it; keep the newest `keep`."""
    from safetensors.torch import save_file

    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    os.chmod(tmp, 0o777 & ~current_umask())  # an ordinary folder's mode, not mkdtemp's 0700
    try:
        save_file(_tensors_for_safetensors(model), str(tmp / MODEL_WEIGHTS))
        if ema is not None:
            save_file(_tensors_for_safetensors(ema), str(tmp / EMA_WEIGHTS))
        torch.save(state, tmp / TRAINING_STATE)
        for entry in tmp.iterdir():
            os.chmod(entry, 0o666 & ~current_umask())  # safetensors writes 0600
            with open(entry, "rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():  # the same step saved again (e.g. after a resume): move the old one aside
            stale = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.old."))
            os.replace(final, stale / name)
        os.replace(tmp, final)
    except OSError as error:  # a full or read-only disk: name the checkpoint, not the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(error.errno, f"{error.strerror or error} (the checkpoint was not written; the previous one "
                      "is kept)", str(final)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(root / LATEST_FILE, {"step": int(step), "dir": name})
    _prune(root, keep=keep, current=name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    """Remove checkpoints beyond the newest `keep` and leftovers of interrupted writes.

    An old checkpoint is renamed to a hidden name before it is deleted, so that a kill half-way
    through leaves no half-deleted `step_*` folder, only a hidden one that the next save removes.
    """
    for entry in root.iterdir():
        if entry.is_dir() and entry.name.startswith("."):
            shutil.rmtree(entry, ignore_errors=True)
    steps = sorted(e for e in root.iterdir() if e.is_dir() and e.name.startswith("step_"))
    for entry in steps[: max(0, len(steps) - keep)]:
        if entry.name != current:
            doomed = root / f".{entry.name}.deleting"
            os.replace(entry, doomed)
            shutil.rmtree(doomed, ignore_errors=True)


def _complete(directory: Path) -> bool:
    return (directory / MODEL_WEIGHTS).is_file() and (directory / TRAINING_STATE).is_file()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory of the newest complete checkpoint of a run, or None when there is none.

    `latest.json` names it; when that pointer is missing or unreadable, the newest complete
    `step_*` folder is taken (and said so), rather than starting again from step 0.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    pointer = root / LATEST_FILE
    try:
        latest = json.loads(pointer.read_text())
        directory = root / str(latest["dir"])
    except FileNotFoundError:
        return _newest_complete(root, f"{pointer} is missing")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        return _newest_complete(root, f"{pointer} is unreadable ({type(error).__name__})")
    if not (directory / MODEL_WEIGHTS).is_file():
        raise InvalidInputError(f"{pointer} points at {directory}, which has no {MODEL_WEIGHTS}")
    return directory


def _newest_complete(root: Path, why: str) -> Path | None:
    steps = sorted(e for e in root.iterdir() if e.is_dir() and e.name.startswith("step_") and _complete(e)) \
        if root.is_dir() else []
    if not steps:
        return None
    logging.getLogger("flowdiff").warning("%s; using the newest complete checkpoint, %s", why, steps[-1].name)
    return steps[-1]


def read_weights(file: Path, device=None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file."""
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device=str(device or "cpu"))
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise InvalidInputError(f"cannot read weights {file}: {error}") from None


def load_weights(module: nn.Module, file: Path, device=None) -> None:
    """Load a safetensors file into `module`, raising InvalidInputError when the shapes disagree."""
    tensors = read_weights(file, device)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise InvalidInputError(f"weights in {file} do not fit the configured model: {detail}") from None


def read_training_state(checkpoint: Path) -> dict:
    """Optimizer, RNG and step state saved next to the weights."""
    file = Path(checkpoint) / TRAINING_STATE
    if not file.is_file():
        raise InvalidInputError(f"checkpoint {checkpoint} has no {TRAINING_STATE}; it cannot be resumed")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged or foreign file: pickle, zip and torch raise many types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidInputError(f"cannot read the training state {file}: it is damaged or not written by "
                                f"flowdiff ({first[:120]})") from None


