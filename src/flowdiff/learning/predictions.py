"""Prediction-type wrappers: a network predicting one of velocity, score, x1 (data) or noise,
seen as a field predicting another, through the Gaussian path (Lecture 3's conversion).

For x_t = alpha_t z + beta_t eps the four are affine in each other at fixed (x, t), e.g. the
score from the velocity: s = (alpha_t u - d_alpha x) / (beta_t (d_alpha beta_t - alpha_t d_beta)).
`GaussianPath.convert` does the algebra and clamps the divisors it meets at the ends of [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

from flowdiff.errors import InvalidInputError
from flowdiff.paths.gaussian_path import PREDICTIONS, GaussianPath


def _check_kind(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise InvalidInputError(f"unknown prediction {kind!r}; choose one of: {', '.join(PREDICTIONS)}")


class FieldWrapper(nn.Module):
    """Base of wrappers f(x, t, **cond) around a model; forwards data_shape and num_classes."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    @property
    def data_shape(self) -> tuple:
        """The shape of one point of the wrapped model."""
        return tuple(self.model.data_shape)

    @property
    def num_classes(self) -> int | None:
        """The number of labels of the wrapped model (None when unconditional)."""
        return getattr(self.model, "num_classes", None)


START_AFTER_ZERO = 1e-3
"""Where sampling starts for fields converted from a score or noise prediction (alpha_0 = 0)."""


class Converted(FieldWrapper):
    """A model predicting `source` seen as one predicting `target` along `path`: f(x, t, **cond)."""

    def __init__(self, model, path: GaussianPath, source: str, target: str) -> None:
        super().__init__(model)
        _check_kind(source)
        _check_kind(target)
        self.path, self.source, self.target = path, source, target
        # the velocity from a score or a noise prediction divides by alpha_t, which is 0 at t = 0:
        # there the data mean is not identifiable, so sampling such a field starts a little later
        self.t_min = START_AFTER_ZERO if source in ("score", "noise") and target != source else 0.0

    def forward(self, x: torch.Tensor, t, **cond) -> torch.Tensor:
        """convert(model(x, t), source -> target) at (x, t)."""
        return self.path.convert(self.model(x, t, **cond), x, t, self.source, self.target)

    def extra_repr(self) -> str:
        return f"{self.source} -> {self.target}"


def as_prediction(model, path: GaussianPath, prediction: str, target: str):
    """The model itself if it predicts `target` already, else `Converted(model, path, prediction, target)`."""
    _check_kind(prediction)
    _check_kind(target)
    return model if prediction == target else Converted(model, path, prediction, target)


def as_velocity(model, path: GaussianPath, prediction: str = "velocity"):
    """The velocity field u_t(x) of a model that predicts `prediction`."""
    return as_prediction(model, path, prediction, "velocity")


def as_score(model, path: GaussianPath, prediction: str = "velocity"):
    """The score grad log p_t(x) of a model that predicts `prediction`."""
    return as_prediction(model, path, prediction, "score")
