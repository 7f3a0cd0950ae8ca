"""How much memory a training step needs, estimated before training starts, so that a batch that cannot fit
is refused up front with the estimate instead of being killed by the operating system minutes later."""

from __future__ import annotations

import os

import torch
from torch import nn

from flowdiff.errors import InvalidInputError

MEMORY_SHARE = 0.5
"""The largest share of the device's memory a training step may be estimated to take."""


def activation_floats(model: nn.Module, x: torch.Tensor, cond: dict) -> int:
    """Numbers the model's leaf modules output for the examples x (one forward pass, no gradients)."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    training = model.training
    try:  # in eval mode and on a forked generator: the probe draws nothing from the run's random streams
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.eval()
            model(x, torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype), **cond)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return total[0]


def step_bytes(model: nn.Module, example: torch.Tensor, batch_size: int, cond: dict) -> int:
    """Estimated bytes of one training step: per example, the saved activations and their gradients plus the
    data-shaped tensors of the loss (x0, x1, x_t, target, output and its gradient), at 4 bytes a number."""
    per_example = 2 * activation_floats(model, example, cond) / example.shape[0] + 6 * example[0].numel()
    return int(4 * batch_size * per_example)


def available_bytes(device: torch.device) -> int:
    """The device's memory: the GPU's total, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_step_fits(model: nn.Module, example: torch.Tensor, batch_size: int, cond: dict,
                    device: torch.device) -> None:
    """Refuse a batch whose training step is estimated to need more than half of the device's memory."""
    shape = getattr(model, "data_shape", None)
    if shape is not None and tuple(example.shape[1:]) != tuple(shape):
        raise InvalidInputError(f"data points have shape {tuple(example.shape[1:])} but the model expects "
                                f"{tuple(shape)}")
    needed, have = step_bytes(model, example, batch_size, cond), available_bytes(device)
    if needed > MEMORY_SHARE * have:
        raise InvalidInputError(
            f"a training step on batches of {batch_size} needs about {needed / 2**30:.3g} GiB (activations, their "
            f"gradients and the loss's tensors), more than half of the {have / 2**30:.3g} GiB of {device.type}; "
            "use a smaller batch size")
