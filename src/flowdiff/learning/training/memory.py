"""How much memory a training step needs, estimated before training starts, so that a batch that cannot fit
is refused up front with the estimate instead of being killed by the operating system minutes later."""

from __future__ import annotations

import os

import torch
from torch import nn

from flowdiff.errors import InvalidInputError

MEMORY_SHARE = 0.5
"""The largest share of the device's memory a training step may be estimated to take."""


def activation_floats(model: nn.Module, x: torch.Tensor, cond: dict, largest: bool = False) -> int:
    """Numbers the model's leaf modules output for the examples x (one forward pass, no gradients): all of
    them (what backpropagation keeps), or with `largest` the biggest single output (what a pass without
    gradients holds at its peak, besides its input). A plain function (not a module) counts 0."""
    total = [0]
    if not isinstance(model, nn.Module):
        return 0

    def count(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] = max(total[0], output.numel()) if largest else total[0] + output.numel()

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


def activation_passes(loss) -> int:
    """How many forward passes' activations a step of `loss` keeps for backpropagation: its `activation_passes`
    (2 for MeanFlow, whose JVP keeps the forward's and the tangent's), else 1."""
    passes = getattr(loss, "activation_passes", 1)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise InvalidInputError(f"a loss's activation_passes must be a positive integer, got {passes!r}")
    return passes


def step_bytes(model: nn.Module, example: torch.Tensor, batch_size: int, cond: dict, passes: int = 1) -> int:
    """Estimated bytes of one training step: per example, the saved activations of `passes` forward passes and
    their gradients plus the data-shaped tensors of the loss (x0, x1, x_t, target, output and its gradient), at
    4 bytes a number."""
    per_example = 2 * passes * activation_floats(model, example, cond) / example.shape[0] + 6 * example[0].numel()
    return int(4 * batch_size * per_example)


def available_bytes(device: torch.device) -> int:
    """The device's memory: the GPU's total, or the machine's physical memory for the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_step_fits(model: nn.Module, example: torch.Tensor, batch_size: int, cond: dict,
                    device: torch.device, loss=None) -> None:
    """Refuse a batch whose training step (of `loss`: see `activation_passes`) is estimated to need more than half
    of the device's memory."""
    shape = getattr(model, "data_shape", None)
    if shape is not None and tuple(example.shape[1:]) != tuple(shape):
        raise InvalidInputError(f"data points have shape {tuple(example.shape[1:])} but the model expects "
                                f"{tuple(shape)}")
    passes = activation_passes(loss)
    needed, have = step_bytes(model, example, batch_size, cond, passes), available_bytes(device)
    if needed > MEMORY_SHARE * have:
        kept = "" if passes == 1 else f" of {passes} passes, as the {getattr(loss, 'name', 'loss')} loss keeps"
        raise InvalidInputError(
            f"a training step on batches of {batch_size} needs about {needed / 2**30:.3g} GiB (activations{kept}, "
            f"their gradients and the loss's tensors), more than half of the {have / 2**30:.3g} GiB of "
            f"{device.type}; use a smaller batch size")


SAMPLER_STATES = 8
"""Data-shaped tensors a fixed-step sampler holds at once (the state, up to four stages or past evaluations,
the noise and temporaries): the data part of the sampling estimate."""


def sampling_bytes(model: nn.Module, example: torch.Tensor, n: int, cond: dict, steps: int = 1,
                   saved_states: int = 1, batched_calls: int = 1) -> int:
    """Estimated bytes of drawing n samples on a grid of `steps`: the grid, the sampler's states, the saved
    trajectory and, per network call, its input and two of its largest activations (a pass without gradients
    frees the rest), at 4 bytes a number. `batched_calls` = 2 when guidance evaluates the conditional and
    unconditional fields in one batch."""
    per_example = ((SAMPLER_STATES + saved_states) * example[0].numel()
                   + batched_calls * 2 * activation_floats(model, example, cond, largest=True) / example.shape[0])
    return int(4 * (n * per_example + steps + 1))


def check_sampling_fits(model: nn.Module, shape, n: int, steps: int, device, y: torch.Tensor | None = None,
                        guided: bool = False, saved_states: int = 1) -> None:
    """Refuse n samples of `shape` whose drawing is estimated to need more than half of the device's memory
    (one probing forward pass on two examples measures the network's largest activation; `guided`: guidance
    evaluates labelled and unlabelled inputs in one batch)."""
    device = torch.device(device)
    example = torch.zeros((2, *shape), device=device)
    cond = {} if y is None else {"y": y[:1].repeat(2)}
    batched_calls = 2 if y is not None and guided else 1
    needed = sampling_bytes(model, example, n, cond, steps, saved_states, batched_calls)
    have = available_bytes(device)
    if needed > MEMORY_SHARE * have:
        kept = ", keeping every state," if saved_states > 1 else ""
        raise InvalidInputError(
            f"drawing {n} samples in {steps} steps{kept} needs about {needed / 2**30:.3g} GiB, more than half of "
            f"the {have / 2**30:.3g} GiB of {device.type}; draw fewer samples or take fewer steps")
