"""`train`: build a `Trainer`, record it in a run directory (optional) and fit it, in one call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from flowdiff.data.info import DataInfo
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.trainer import Trainer, TrainingResult
from flowdiff.paths.gaussian_path import GaussianPath
from flowdiff.runs.directory import RunDirectory
from flowdiff.runs.interrupt import StopOnInterrupt


def run_hooks(out: str | Path | None, data_info: DataInfo | None = None, resume: bool = False,
              force: bool = False) -> list[Hook]:
    """The hooks of a recorded run: its directory (when `out` is given) and a graceful Ctrl-C."""
    hooks: list[Hook] = [StopOnInterrupt()]
    if out is not None:
        hooks.insert(0, RunDirectory(out, data_info=data_info, resume=resume, force=force))
    return hooks


def train(model: nn.Module, path: GaussianPath | None = None, data=None, labels=None,
          config: TrainConfig | None = None, out: str | Path | None = None, resume: bool = False,
          force: bool = False, data_info: DataInfo | None = None, hooks: Sequence[Hook] = (),
          **settings) -> TrainingResult:
    """Train `model` on `data` (settings as `TrainConfig` keywords), recorded in the run directory `out`.

    `resume=True` continues the run in `out`, `force=True` replaces it. A first Ctrl-C finishes
    the step, saves a checkpoint and raises KeyboardInterrupt.
    """
    trainer = Trainer(model, path, data, labels=labels, config=config,
                      hooks=[*run_hooks(out, data_info, resume, force), *hooks], **settings)
    result = trainer.fit()
    if result.stopped:
        raise KeyboardInterrupt(f"training stopped at step {result.step}; continue with resume=True")
    return result
