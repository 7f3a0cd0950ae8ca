"""`TrainState`: everything a training run carries from step to step, and how to save and restore it.

The network, its EMA, the AdamW optimizer, the two random generators (minibatch indices; the
loss's noise, times, couplings and label dropout) and the step. `state_dict()` holds all but the
weights, so that a resumed run continues the very same random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from flowdiff.errors import IncompatibleError
from flowdiff.learning.training.ema import EMA


def learning_rate(step: int, lr: float, steps: int, warmup: int, schedule: str = "cosine") -> float:
    """Learning rate of step k (0-based): linear warm-up lr (k+1)/warmup, then cosine decay or constant.

    Cosine: lr * (1 + cos(pi p)) / 2 with p = (k - warmup) / (steps - warmup) going from 0 to 1.
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where torch has one for these parameters (CPU, CUDA), else foreach.

    The fused step does the whole update in one kernel per parameter group: on a 2-D MLP
    it made a CPU training step about 12% faster than the foreach step.
    """
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


@dataclass
class TrainState:
    """The network, its EMA (or None), the optimizer, the data and loss generators, the step (and an fp16 scaler)."""

    model: nn.Module
    ema: EMA | None
    optimizer: torch.optim.Optimizer
    data_generator: torch.Generator
    loss_generator: torch.Generator
    step: int = 0
    elapsed: float = 0.0
    scaler: torch.amp.GradScaler | None = None

    @classmethod
    def create(cls, model: nn.Module, lr: float, weight_decay: float, ema_decay: float | None, seed: int,
               device: torch.device) -> TrainState:
        """A fresh state at step 0: AdamW on the trainable parameters, generators seeded seed and seed + 1."""
        params = [p for p in model.parameters() if p.requires_grad]
        return cls(
            model=model,
            ema=EMA(model, ema_decay) if ema_decay is not None else None,
            optimizer=make_adamw(params, lr, weight_decay),
            data_generator=torch.Generator(device=device).manual_seed(seed),
            loss_generator=torch.Generator(device=device).manual_seed(seed + 1),
        )

    @property
    def device(self) -> torch.device:
        """The device the generators draw on (the training device)."""
        return self.data_generator.device

    def state_dict(self) -> dict:
        """Optimizer, generators, global RNG, step and elapsed time (the weights are saved apart)."""
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "data_generator": self.data_generator.get_state(),
            "loss_generator": self.loss_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "elapsed": self.elapsed,
        }
        if self.ema is not None:
            state["ema_num_updates"] = int(self.ema.num_updates)
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved (the weights are loaded apart)."""
        self.optimizer.load_state_dict(state["optimizer"])
        try:
            self.data_generator.set_state(state["data_generator"])
            self.loss_generator.set_state(state["loss_generator"])
        except RuntimeError:
            raise IncompatibleError(
                f"the saved random-number states belong to another device type than {self.device.type}; "
                "resume on the device the run was trained on"
            ) from None
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.ema is not None:
            self.ema.num_updates.fill_(int(state.get("ema_num_updates", state["step"])))
        if self.scaler is not None and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
