"""`Trainer`: fit a network to a probability path by minibatch AdamW on a loss object — a plain loop.

One step: draw a minibatch x1 ~ p_data, ask the loss (flow or score matching: time t, noise,
coupling and label dropout drawn from the state's loss generator), take an AdamW step with a
warm-up + cosine (or constant) learning rate and gradient clipping, then move the EMA weights.
Everything that outlives a step is the `TrainState`; run directories, progress bars, signals and
logging sinks are `Hook`s that the edges attach. The loop knows no files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from flowdiff.errors import FlowdiffError, IncompatibleError
from flowdiff.learning.devices import pick_device
from flowdiff.learning.training import distributed
from flowdiff.learning.training.batches import data_source
from flowdiff.learning.training.config import TrainConfig
from flowdiff.learning.training.ema import EMA
from flowdiff.learning.training.hooks import Hook
from flowdiff.learning.training.memory import check_step_fits
from flowdiff.learning.training.state import TrainState, learning_rate
from flowdiff.paths.discrete import MixturePath
from flowdiff.paths.gaussian_path import GaussianPath


@dataclass
class TrainingResult:
    """What `fit` leaves behind: the network, its EMA (or None), the logged metrics and the step."""

    model: nn.Module
    ema: EMA | None
    history: list[dict] = field(default_factory=list)
    step: int = 0
    stopped: bool = False

    @property
    def sampling_model(self) -> nn.Module:
        """The network to sample with: the EMA weights when kept, else the trained weights."""
        return self.ema if self.ema is not None else self.model


def describe(value) -> object:
    """A JSON-ready description of a loss or coupling object (its `config()`), a name, or a function."""
    if value is None or isinstance(value, str | int | float | bool | dict):
        return value
    if hasattr(value, "config"):
        return value.config()
    return getattr(value, "__name__", type(value).__name__)


class Trainer:
    """Minibatch AdamW training of a network `f(x, t, **cond)` on a `GaussianPath` (see module docstring).

    `data` is (N, *shape); `labels` (N,) integers or None. Settings come from `config` (a
    `TrainConfig`), overridden by keyword arguments (`steps=...`, `lr=...`). `loss` and
    `coupling` may also be objects (a loss object or callable loss(model, path, x1, **batch), a
    `Coupling`). The network predicts what the loss trains (`loss.prediction`, else velocity).
    """

    def __init__(self, model: nn.Module, path: GaussianPath | None = None, data=None, labels=None,
                 config: TrainConfig | None = None, hooks: Sequence[Hook] = (), **settings) -> None:
        from flowdiff.learning.losses import get_loss
        from flowdiff.paths.couplings import get_coupling

        objects = {k: settings.pop(k) for k in ("loss", "coupling")
                   if k in settings and not isinstance(settings[k], str | dict)}
        self.config = (config or TrainConfig()).updated(**settings)
        self.path = path if path is not None else GaussianPath(self.config.schedule)
        if not isinstance(self.path, GaussianPath | MixturePath):
            raise IncompatibleError(f"path must be a GaussianPath or MixturePath, got {type(self.path).__name__}")
        self.device = distributed.training_device(pick_device(self.config.device))
        self.shard = distributed.shard_of_this_rank(gather_couplings=self.config.ot_scope == "global")
        self.local_batch = _local_batch(self.config.batch_size, self.shard.world_size)
        self.data = data_source(data, labels, model, self.device)
        self.loss = objects.get("loss") or get_loss(self.config.loss, **self.config.loss_options())
        self._loss_options = ({"time_law": self.config.time_law}
                              if "loss" in objects and self.config.time_law != "uniform" else {})
        self.coupling = get_coupling(objects.get("coupling", self.config.coupling))
        self.prediction = getattr(self.loss, "prediction", "velocity")
        self.label_dropout = self.config.label_dropout if self.data.labelled else 0.0
        model = model.to(self.device)
        x, y = self.data.examples(2)
        check_step_fits(model, x, self.local_batch, {} if y is None else {"y": y}, self.device, self.loss)
        self.warmup = min(self.config.warmup, self.config.steps - 1)
        c = self.config
        self.state = TrainState.create(model, c.lr, c.weight_decay, c.ema_decay, c.seed,
                                       self.device)
        self.autocast = _autocast(c.precision, self.device)
        if c.precision == "fp16":
            self.state.scaler = torch.amp.GradScaler(self.device.type)
        self.network = distributed.wrap(model, self.device)  # DDP in a process group; the EMA stays outside
        self._params = [p for group in self.state.optimizer.param_groups for p in group["params"]]
        self.history: list[dict] = []
        self.stop_requested = False
        self.hooks = [hook for hook in hooks if distributed.is_main() or not getattr(hook, "main_only", False)]
        for hook in self.hooks:
            hook.attach(self)

    # the state, by its parts
    model = property(lambda self: self.state.model, doc="The network being trained.")
    ema = property(lambda self: self.state.ema, doc="Its EMA (None when ema_decay is None).")
    step = property(lambda self: self.state.step, doc="Optimisation steps taken so far.")
    steps = property(lambda self: self.config.steps, doc="Steps of the whole run.")

    def describe(self) -> dict:
        """What was trained, JSON-ready: network, path, prediction, settings and the resolved objects."""
        return {
            "model": self.model.config(),
            "path": self.path.config(),
            "prediction": self.prediction,
            "training": self.config.to_dict(),
            "resolved": {
                "loss": describe(self.loss),
                "coupling": describe(self.coupling),
                "device": str(self.device),
                "conditional": self.data.labelled,
                "data_checksum": self.data.checksum(),
            },
        }

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimisation step; returns the (detached) loss and the gradient norm before clipping."""
        state, config = self.state, self.config
        with distributed.sharded(self.shard), torch.autocast(**self.autocast):
            x1, y = self.data.batch(self.local_batch, state.data_generator)
            loss = self.loss(self.network, self.path, x1, y=y, coupling=self.coupling,
                             label_dropout=self.label_dropout, generator=state.loss_generator,
                             **self._loss_options)
        state.optimizer.zero_grad(set_to_none=True)
        scaler = state.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        grad_norm = None
        if config.grad_clip is not None:
            if scaler is not None:
                scaler.unscale_(state.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self._params, config.grad_clip, foreach=True)
        rate = learning_rate(state.step, config.lr, config.steps, self.warmup, config.lr_schedule)
        for group in state.optimizer.param_groups:
            group["lr"] = rate
        if scaler is None:
            state.optimizer.step()
        else:  # skips the step when the scaled gradients overflowed, and adapts the scale
            scaler.step(state.optimizer)
            scaler.update()
        if state.ema is not None:
            state.ema.update(state.model)
        state.step += 1
        return loss.detach(), grad_norm

    def fit(self, until: int | None = None) -> TrainingResult:
        """Train from the current step up to step `until` (default: all `steps`), calling the hooks."""
        until = self.config.steps if until is None else min(int(until), self.config.steps)
        self.state.model.train()
        if hasattr(self.data, "seek"):  # a stream reads the global batch of this step next
            self.data.seek(self.step)
        window = _Window(self.device)
        error: BaseException | None = None
        for hook in self.hooks:
            hook.on_start(self, until)
        try:
            while self.step < until and not self._stopping():
                window.add(*self.train_step())
                if self.step % self.config.log_every == 0 or self.step == until:
                    self._log(window.close(self.step, self.state))
                for hook in self.hooks:
                    hook.on_step(self)
        except BaseException as caught:
            error = caught
            raise
        finally:
            self.state.elapsed += window.total_seconds()
            for hook in self.hooks:
                hook.on_end(self, error)
        stopped, self.stop_requested = self.stop_requested, False
        self.state.model.eval()
        return TrainingResult(self.model, self.ema, list(self.history), self.step, stopped)

    def _stopping(self) -> bool:
        """The stop request of any rank (all ranks stop after the same step)."""
        self.stop_requested = distributed.any_rank(self.stop_requested, self.device)
        return self.stop_requested

    def close(self) -> None:
        """End without training: the hooks let go of what they hold (a run directory's lock)."""
        for hook in self.hooks:
            hook.on_end(self, None)

    def _log(self, record: dict) -> None:
        if not math.isfinite(record["loss"]):
            raise FlowdiffError(f"the loss became {record['loss']} by step {record['step']}; lower the "
                                f"learning rate (lr={self.config.lr}) or keep gradient clipping on")
        self.history.append(record)
        for hook in self.hooks:
            hook.on_log(self, record)


def _autocast(precision: str, device: torch.device) -> dict:
    """The keywords of `torch.autocast` for a precision: bf16/fp16 autocast on the device, or disabled."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return {"device_type": device.type, "dtype": dtype or torch.float32, "enabled": dtype is not None}


def _local_batch(batch_size: int, world_size: int) -> int:
    """This rank's share of the global batch, which must divide evenly over the ranks."""
    if batch_size % world_size:
        low = batch_size - batch_size % world_size
        raise IncompatibleError(f"batch_size {batch_size} is the global batch, split evenly over {world_size} "
                                f"processes; choose a multiple of {world_size} (for example {low or world_size} "
                                f"or {low + world_size})")
    return batch_size // world_size


class _Window:
    """Running sums between two log records: mean loss, last gradient norm, steps per second."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.count, self.grad_norm = 0, None
        self.started = self.opened = time.perf_counter()

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        self.loss += loss
        self.count += 1
        self.grad_norm = grad_norm

    def close(self, step: int, state: TrainState) -> dict:
        now = time.perf_counter()
        record = {
            "step": step,
            "loss": float(distributed.all_reduce_mean(self.loss)) / self.count,
            "lr": state.optimizer.param_groups[0]["lr"],
            "grad_norm": None if self.grad_norm is None else float(self.grad_norm),
            "steps_per_s": self.count / max(now - self.opened, 1e-9),
            "elapsed_s": state.elapsed + now - self.started,
        }
        self.loss.zero_()
        self.count, self.opened = 0, now
        return record

    def total_seconds(self) -> float:
        return time.perf_counter() - self.started
