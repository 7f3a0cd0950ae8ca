"""Devices: pick one by name ("auto" finds an accelerator) and find the one a model lives on."""

from __future__ import annotations

import torch

from flowdiff.errors import InvalidInputError


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; other values are checked and returned as torch.device."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device cuda was asked for, but CUDA is not available here; use the cpu")
    if device.type == "mps" and not _mps_available():
        raise InvalidInputError("device mps was asked for, but MPS is not available here; use the cpu")
    return device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def model_device(model) -> torch.device:
    """The device of the model's parameters (the CPU for a parameter-free field)."""
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def configure_threads(threads: int | None, device: str | torch.device, kind: str) -> None:
    """Intra-op CPU threads: `threads` if given; else 1 for vector data on the CPU, torch's default otherwise.

    Networks on vectors multiply small matrices, where extra threads cost more in
    synchronisation than they give, and on a busy machine they slow each step many-fold.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidInputError(f"the number of CPU threads must be an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    elif kind == "vectors" and str(device) in ("cpu", "auto") and not torch.cuda.is_available():
        torch.set_num_threads(1)
