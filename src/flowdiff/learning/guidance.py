"""Classifier-free guidance: mix the conditional and unconditional fields of one label-conditioned network."""

from __future__ import annotations

import math

import torch

from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.predictions import FieldWrapper


def require_conditional(model, what: str = "labels") -> int:
    """Return model.num_classes, or raise IncompatibleError if the model has no labels."""
    num_classes = getattr(model, "num_classes", None)
    if num_classes is None:
        raise IncompatibleError(
            f"{what} need a label-conditioned model, but this model is unconditional (num_classes=None); "
            "train it with labels (and label dropout for guidance) or sample without labels"
        )
    return num_classes


def check_guidance_scale(scale) -> float:
    """The guidance scale w as a float, refused unless it is a finite number."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(scale, bool) or not math.isfinite(value):
        raise InvalidInputError(f"guidance scale must be a finite number, got {scale!r}")
    return value


class ClassifierFreeGuidance(FieldWrapper):
    """u^w(x | y) = (1 - w) u(x | null) + w u(x | y), both halves in one batched forward pass.

    w = 1 is the conditional field, w = 0 the unconditional one, w > 1 sharpens the condition.
    """

    def __init__(self, model, scale: float) -> None:
        super().__init__(model)
        self.null_label = require_conditional(model, "classifier-free guidance")
        self.scale = check_guidance_scale(scale)

    def forward(self, x: torch.Tensor, t, y: torch.Tensor | int | None = None, **cond) -> torch.Tensor:
        """The guided field at (x, t) for labels y (an int or shape (batch,))."""
        if y is None:
            raise IncompatibleError("classifier-free guidance needs labels y to guide towards")
        batch = x.shape[0]
        y = torch.as_tensor(y, device=x.device, dtype=torch.long).reshape(-1).expand(batch)
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        t2 = t if t.numel() == 1 else torch.cat([t.reshape(-1)] * 2)
        y2 = torch.cat([y, torch.full_like(y, self.null_label)])
        both = self.model(torch.cat([x, x]), t2, y=y2, **cond)
        conditional, unconditional = both[:batch], both[batch:]
        return unconditional + self.scale * (conditional - unconditional)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
