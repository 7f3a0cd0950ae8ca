"""Builders of a sampling run: the start noise, the time grid, the guided field and the SDE drift.

The SDE dX = [u_t(X) + sigma_t^2 / 2 * grad log p_t(X)] dt + sigma_t dW (Lecture 3) has the same
marginals p_t as the ODE dX = u_t(X) dt for any sigma_t >= 0; its drift takes the velocity and
the score from one network call through the path (`GaussianPath.convert`), so a velocity, score,
x1 or noise network samples the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from flowdiff.dynamics import grids
from flowdiff.dynamics.simulate import check_grid
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.guidance import ClassifierFreeGuidance, require_conditional
from flowdiff.learning.losses import draw
from flowdiff.learning.models.embeddings import check_labels
from flowdiff.paths.gaussian_path import GaussianPath

GRIDS: dict[str, Callable[..., torch.Tensor]] = grids.GRIDS
"""Time grids by name (the registry of `flowdiff.dynamics.grids`): each is called as grid(t_min, t_max, steps)."""


def time_grid(grid: str | torch.Tensor, steps: int, t_min: float = 0.0, t_max: float = 1.0,
              device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The increasing sampling grid from t_min to t_max: a named grid with `steps` steps, or given times,
    in `dtype` (the dtype of the states, so that a float64 run is not on a grid rounded to float32)."""
    from flowdiff.registry import lookup

    if not 0.0 <= t_min < t_max <= 1.0:
        raise InvalidInputError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if isinstance(grid, str):
        return lookup(GRIDS, grid, "grid")(t_min, t_max, steps, dtype=dtype).to(device)
    if not isinstance(grid, torch.Tensor):
        raise InvalidInputError(f"grid must be a name ({', '.join(GRIDS)}) or a 1-d tensor of times")
    ts = check_grid(grid.detach().to(dtype))
    if not (bool(ts[1] > ts[0]) and float(ts[0]) >= 0.0 and float(ts[-1]) <= 1.0):
        raise InvalidInputError("a sampling grid must increase within [0, 1] (t = 0 noise, t = 1 data)")
    return ts.to(device)


def noise(n: int, shape: tuple[int, ...], generator: torch.Generator | None, device,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """n draws of X_0 ~ p_init = N(0, I) of the given point shape (drawn on the generator's device)."""
    return draw("normal", (n, *shape), generator, device, dtype)


def check_labels_for_sampling(model, y, guidance: float, n: int | None,
                              device) -> tuple[torch.Tensor | None, int | None]:
    """Labels y as a (n,) long tensor (an int is repeated n times) and the resulting n; guidance needs y."""
    if not math.isfinite(float(guidance)):
        raise InvalidInputError(f"guidance must be a finite number, got {guidance}")
    if y is None:
        if guidance != 1.0:
            raise IncompatibleError(f"guidance={guidance} needs labels y to guide towards; pass y=<label>")
        return None, n
    num_classes = require_conditional(model, "labels y" if guidance == 1.0 else "classifier-free guidance")
    if isinstance(y, bool) or not isinstance(y, int | torch.Tensor):
        raise InvalidInputError(f"y must be an int label or a tensor of labels, got {type(y).__name__}")
    y = torch.as_tensor(y)
    if y.is_floating_point() or y.is_complex():
        raise InvalidInputError(f"labels y must be integers, got dtype {y.dtype}")
    y = y.to(device=device, dtype=torch.long)
    if y.ndim == 0:
        if n is None:
            raise InvalidInputError("give n (the number of samples) with a single label y")
        y = y.expand(n)
    elif y.ndim != 1 or (n is not None and y.shape[0] != n):
        raise InvalidInputError(f"labels y must be an int or have shape ({n if n else 'n'},), got {tuple(y.shape)}")
    check_labels(y, num_classes)
    return y, y.shape[0]


class Conditioned:
    """A field with its condition bound: f(x, t) = model(x, t, **cond), optionally classifier-free guided."""

    def __init__(self, model, cond: dict) -> None:
        self.model, self.cond = model, cond

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, **self.cond)


def guided_field(model, y: torch.Tensor | None, guidance: float = 1.0) -> Conditioned:
    """The field to integrate: the model conditioned on y, mixed with its unconditional field when w != 1."""
    field = ClassifierFreeGuidance(model, guidance) if y is not None and guidance != 1.0 else model
    return Conditioned(field, {} if y is None else {"y": y})


class NoiseScale:
    """sigma_t as a diffusion coefficient sigma(x, t) that depends on t only: a number or a callable sigma(t)."""

    additive = True  # the noise does not depend on the state x

    def __init__(self, sigma: float | Callable) -> None:
        self.sigma = float(sigma) if isinstance(sigma, torch.Tensor) else sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | float:
        if not callable(self.sigma):
            return self.sigma  # a Python number: no tensor built on the device at every step
        return torch.as_tensor(self.sigma(t), dtype=x.dtype, device=x.device)


def check_sigma(sigma, ts: torch.Tensor) -> bool:
    """Validate sigma (a number >= 0 or a callable sigma(t)); return True when the sampler is an SDE."""
    if isinstance(sigma, torch.Tensor) and sigma.numel() == 1:
        sigma = float(sigma)
    if callable(sigma):
        values = torch.stack([torch.as_tensor(sigma(t), dtype=torch.float64).reshape(()) for t in ts])
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise InvalidInputError("sigma(t) must be finite and >= 0 at every time of the grid")
        return True
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise InvalidInputError(f"sigma must be a number >= 0 or a callable sigma(t), got {sigma!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise InvalidInputError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma > 0


class DiffusionDrift:
    """The SDE drift u_t(x) + sigma_t^2 / 2 * grad log p_t(x) from one call of a field predicting `prediction`."""

    def __init__(self, field: Callable, path: GaussianPath, prediction: str, sigma: NoiseScale) -> None:
        self.field, self.path, self.prediction, self.sigma = field, path, prediction, sigma

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raw = self.field(x, t)
        velocity = self.path.convert(raw, x, t, self.prediction, "velocity")
        score = self.path.convert(raw, x, t, self.prediction, "score")
        return velocity + (0.5 * self.sigma(x, t) ** 2) * score


def diffusion_drift(field: Callable, path: GaussianPath, prediction: str, sigma: float | Callable) -> DiffusionDrift:
    """The drift of the marginal-preserving SDE with noise level sigma_t (see the module docstring)."""
    return DiffusionDrift(field, path, prediction, NoiseScale(sigma))
