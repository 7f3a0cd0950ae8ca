"""`RunDirectory`: the hook that records a training run in a folder and resumes it from there.

Attached to a `Trainer`, it writes config.json when a run starts, a metrics.jsonl line per log
record, a checkpoint every `checkpoint_every` steps and one when `fit` ends. With `resume` it
checks that the stored run was trained with the same settings, restores the latest checkpoint
(weights, EMA, optimizer, generators, step) and drops metric lines logged after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flowdiff._version import __version__
from flowdiff.atomic import write_json, write_text
from flowdiff.data.info import DataInfo
from flowdiff.errors import FlowdiffError, IncompatibleError, InvalidInputError
from flowdiff.learning.training.distributed import is_main, run_everywhere, run_on_main
from flowdiff.learning.training.hooks import Hook
from flowdiff.runs.checkpoints import (
    latest_checkpoint,
    load_weights,
    read_training_state,
    save_checkpoint,
)
from flowdiff.runs.layout import CONFIG_FILE, EMA_WEIGHTS, METRICS_FILE, MODEL_WEIGHTS, clear_run, is_run, read_config
from flowdiff.runs.lock import LOCK_FILE, RunLock


class RunExistsError(InvalidInputError):
    """The folder already holds a run (or other files) and neither resuming nor replacing was asked for."""


class RunDirectory(Hook):
    """Record a training run in `out`; `resume` continues the run there, `force` replaces it.

    `data_info` describes the training data for `load` (by default: its kind and shape).
    """

    def __init__(self, out: str | Path, data_info: DataInfo | None = None, resume: bool = False,
                 force: bool = False) -> None:
        if resume and force:
            raise InvalidInputError("resume continues a run and force replaces it; ask for one of them")
        self.out, self.data_info, self.resume, self.force = Path(out), data_info, resume, force
        self.lock = RunLock(self.out)
        self._until = 0
        self._saved_step: int | None = None  # the step of the newest checkpoint on disk

    def config(self, trainer) -> dict:
        """The full configuration recorded as config.json."""
        info = self.data_info or DataInfo(
            kind="vectors" if len(trainer.data.shape) == 1 else "images",
            shape=tuple(trainer.data.shape),
            num_classes=getattr(trainer.model, "num_classes", None) if trainer.data.labelled else None,
            size=len(trainer.data),
        )
        described = trainer.describe()
        return json.loads(json.dumps({"flowdiff_version": __version__, **described, "data": info.to_dict()}))

    def attach(self, trainer) -> None:
        """Create the run directory, or check it and restore the latest checkpoint when resuming; take its lock.

        In a process group rank 0 alone checks, locks and writes; then every rank restores the same
        checkpoint (from a file system they share).
        """
        checkpoint = run_on_main(lambda: self._open(trainer))
        try:
            if checkpoint is not None:
                run_everywhere(lambda: restore(trainer, Path(checkpoint)))
                self._saved_step = trainer.step
            if self.resume:
                trainer.history = run_on_main(lambda: self._truncate_metrics(trainer.step))
        except BaseException:
            self.lock.release()
            raise

    def _open(self, trainer) -> str | None:
        """Rank 0: check the folder, take the lock, write config.json or check the stored one; the checkpoint."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"{out} is a file; choose a directory for the run")
        if self.resume and not is_run(out):
            raise InvalidInputError(f"cannot resume: {out} has no {CONFIG_FILE} written by flowdiff (no run to "
                                    "continue)")
        if not self.resume:
            self._check_replaceable()
        self.lock.acquire()
        try:
            if not self.resume:
                self._create(trainer)
                return None
            check_compatible(out, read_config(out), self.config(trainer))
            latest = latest_checkpoint(out)
            return None if latest is None else str(latest)
        except BaseException:
            self.lock.release()
            raise

    def _check_replaceable(self) -> None:
        """A new run goes into an empty (or missing) folder, or replaces a run with `force`."""
        out = self.out
        if not (out.is_dir() and any(entry.name != LOCK_FILE for entry in out.iterdir())):
            return
        if not is_run(out):
            raise InvalidInputError(f"{out} exists and is not an empty or flowdiff run directory; choose another "
                                    "directory (nothing in it was touched)")
        if not self.force:
            raise RunExistsError(f"run directory {out} already exists; continue it (resume), replace it (force), "
                                 "or choose another directory")

    def _create(self, trainer) -> None:
        if self.force:
            clear_run(self.out)
        write_json(self.out / CONFIG_FILE, self.config(trainer))

    def _truncate_metrics(self, step: int) -> list[dict]:
        """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
        file = self.out / METRICS_FILE
        if not file.is_file():
            return []
        kept = []
        for line in file.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                kept.append(record)
        write_text(file, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def on_start(self, trainer, until: int) -> None:
        self._until = until
        run_on_main(self.lock.acquire)  # held since attach, or again for a later fit

    def on_log(self, trainer, record: dict) -> None:
        if not is_main():
            return
        with open(self.out / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_step(self, trainer) -> None:
        if trainer.step % trainer.config.checkpoint_every == 0 and trainer.step < self._until:
            self.save(trainer)

    def on_end(self, trainer, error: BaseException | None) -> None:
        try:
            if error is None and trainer.step != self._saved_step:
                self.save(trainer)
        finally:
            self.lock.release()

    def save(self, trainer) -> Path:
        """Write a checkpoint of the trainer's current step (atomically, by rank 0 while the others wait)."""
        saved = run_on_main(lambda: self._write(trainer))
        self._saved_step = trainer.step
        return saved

    def _write(self, trainer) -> Path:
        """Rank 0: write the checkpoint; non-finite weights are refused."""
        state = trainer.state
        modules = [state.model] + ([state.ema.module] if state.ema is not None else [])
        if not all(bool(torch.isfinite(p).all()) for module in modules for p in module.parameters()):
            latest = latest_checkpoint(self.out)
            kept = f"the last checkpoint ({latest.name}) is kept" if latest else "no checkpoint was written"
            raise FlowdiffError(f"the weights (or their EMA) became NaN or inf by step {state.step}; they were not "
                                f"saved and {kept}; lower the learning rate (lr={trainer.config.lr}) or keep "
                                "clipping on")
        saved = save_checkpoint(self.out, state.step, state.model, state.ema.module if state.ema else None,
                                state.state_dict())
        return saved


def restore(trainer, checkpoint: Path) -> None:
    """Load a checkpoint's weights, EMA weights and training state into the trainer."""
    state = trainer.state
    load_weights(state.model, checkpoint / MODEL_WEIGHTS, device=trainer.device)
    if state.ema is not None:
        ema_file = checkpoint / EMA_WEIGHTS
        if not ema_file.is_file():
            raise InvalidInputError(f"checkpoint {checkpoint} has no {EMA_WEIGHTS} to resume the EMA")
        load_weights(state.ema.module, ema_file, device=trainer.device)
    state.load_state_dict(read_training_state(checkpoint))


def check_compatible(out: Path, stored: dict, current: dict) -> None:
    """Refuse to resume a run whose network, path, data or result-changing settings differ."""
    from flowdiff.learning.training.config import NOT_RESULT_FIELDS, TrainConfig

    problems = [f"{key} {stored.get(key)} vs now {current[key]}" for key in ("model", "path")
                if stored.get(key) != current[key]]
    old, new = {**TrainConfig().to_dict(), **stored.get("training", {})}, current["training"]  # newer settings:
    problems += [f"{key} {old.get(key)!r} vs now {value!r}" for key, value in new.items()  # their defaults
                 if key not in NOT_RESULT_FIELDS and old.get(key) != value]
    old, new = stored.get("resolved", {}), current["resolved"]
    if old.get("data_checksum") not in (None, new["data_checksum"]):
        problems.append("the training data changed (its checksum differs)")
    problems += [f"{key} {old.get(key)!r} vs now {new[key]!r}" for key in ("loss", "coupling", "conditional")
                 if old.get(key) != new[key]]
    if problems:
        raise IncompatibleError(f"cannot resume {out}: it was trained with different settings: "
                                + "; ".join(problems))
