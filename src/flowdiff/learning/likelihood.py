"""Log-likelihood of a flow model by the instantaneous change of variables.

Along the ODE dX_t = u_t(X_t) dt the log-density obeys d/dt log p_t(X_t) = -div u_t(X_t), so

    log p_1(x) = log p_0(X_0) - integral_0^1 div u_t(X_t) dt,   X_1 = x,

with p_0 = p_init = N(0, I). `log_prob` integrates the state and the accumulated divergence
jointly, backwards from t = 1 to t = 0, as one augmented `ODE` on a flat (batch, D + 1) state,
with any ODE solver of `flowdiff.simulate` (fixed-step or adaptive). The divergence is exact
(one backward pass per dimension) or Hutchinson's estimate E[eps^T J eps] with probes eps drawn
once and held fixed along the trajectory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from flowdiff.dynamics import grids
from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.simulate import simulate
from flowdiff.dynamics.solvers import Solver, get_solver, solver_names
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.predictions import as_velocity

DIVERGENCES = ("exact", "hutchinson")
PROBE_DISTRIBUTIONS = ("rademacher", "gaussian")


def _model_tensor_like(model) -> torch.Tensor | None:
    """A parameter of the model (for its dtype and device), or None for a parameter-free field."""
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter
    return None


def _check_input(model, x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InvalidInputError(f"x must be a torch.Tensor of shape (batch, *shape), got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise InvalidInputError(f"x must have shape (batch, *shape), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise InvalidInputError(f"x must be a floating tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("x contains NaN or inf; log_prob needs finite data points")
    shape = getattr(model, "data_shape", None)
    if shape is None and isinstance(getattr(model, "dim", None), int):
        shape = (model.dim,)
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise InvalidInputError(
            f"x has points of shape {tuple(x.shape[1:])} but the model takes {tuple(shape)}: "
            f"pass x of shape (batch, {', '.join(str(s) for s in shape)})"
        )
    return x


def check_solver(solver: str | Solver) -> Solver:
    """The solver of the likelihood's augmented ODE, refused when it is an SDE solver."""
    solver = get_solver(solver)
    if solver.equation_type is not ODE:
        raise IncompatibleError(
            f"log_prob integrates an ODE backwards; solver '{solver.name}' is for SDEs; "
            f"choose one of: {', '.join(solver_names(ODE))}"
        )
    return solver


def _as_scaling(scale, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) broadcast to one point's shape, from a std, a (mean, std) pair or a mapping."""
    if scale is not None and not isinstance(scale, Mapping) and hasattr(scale, "std") and not callable(scale.std):
        # e.g. a run's DataInfo; a tensor or array given as the std has std and mean *methods*
        scale = {"mean": getattr(scale, "mean", None), "std": scale.std}
    if isinstance(scale, Mapping):
        if "std" not in scale:
            raise InvalidInputError(
                f"scale as a mapping needs a 'std' (and optional 'mean'), got {list(scale)}"
            )
        mean, std = scale.get("mean"), scale["std"]
        mean = 0.0 if mean is None else mean
        if std is None:
            return None
    elif scale is None:
        return None
    elif isinstance(scale, tuple | list) and len(scale) == 2:
        mean, std = scale
    else:
        mean, std = 0.0, scale
    shape = x.shape[1:]
    try:
        mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).expand(shape)
        std = torch.as_tensor(std, dtype=x.dtype, device=x.device).expand(shape)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InvalidInputError(
            f"scale must broadcast to a point's shape {tuple(shape)} (a std, (mean, std) or "
            f"{{'mean': ..., 'std': ...}}): {error}"
        ) from None
    if (
        not bool(torch.isfinite(mean).all())
        or not bool((std > 0).all())
        or not bool(torch.isfinite(std).all())
    ):
        raise InvalidInputError("scale needs a finite mean and a finite std > 0")
    return mean, std


def _draw_probes(
    probes: int, x: torch.Tensor, probe_dist: str, generator: torch.Generator | None
) -> torch.Tensor:
    """Hutchinson probes eps of shape (probes, batch, D): Rademacher +-1 or standard normal."""
    shape = (probes, x.shape[0], x[0].numel())
    device = generator.device if generator is not None else torch.device("cpu")  # draw where it lives
    if probe_dist == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=device)
        return (2 * bits - 1).to(device=x.device, dtype=x.dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class _AugmentedDrift:
    """The drift of the augmented state [x, l]: dx/dt = u_t(x), dl/dt = div u_t(x)."""

    def __init__(self, field, shape: tuple[int, ...], vectors: torch.Tensor, weight: float, cond: dict):
        self.field, self.shape, self.cond = field, shape, cond
        self.vectors, self.weight = vectors, weight  # div ~ weight * sum_k v_k^T J v_k

    def __call__(self, state: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = state.shape[0]
        x = state[:, :-1].detach().reshape(batch, *self.shape)
        t = torch.as_tensor(t, dtype=state.dtype, device=state.device).reshape(()).expand(batch)
        with torch.enable_grad():
            x = x.requires_grad_(True)
            velocity = self.field(x, t, **self.cond).reshape(batch, -1)
            divergence = velocity.new_zeros(batch)
            for k, vector in enumerate(self.vectors.unbind(0)):
                (row,) = torch.autograd.grad(
                    velocity, x, grad_outputs=vector, retain_graph=k < len(self.vectors) - 1
                )
                divergence = divergence + (row.reshape(batch, -1) * vector).sum(dim=1)
        return torch.cat([velocity.detach(), (self.weight * divergence).detach()[:, None]], dim=1)


def log_prob(
    model,
    path,
    x: torch.Tensor,
    steps: int = 100,
    solver: str | Solver = "rk4",
    divergence: str = "exact",
    probes: int = 1,
    probe_dist: str = "rademacher",
    generator: torch.Generator | None = None,
    y: torch.Tensor | None = None,
    scale=None,
) -> torch.Tensor:
    """log p_1(x) = log N(X_0; 0, I) - int_0^1 div u_t(X_t) dt, in nats per sample, shape (batch,).

    The augmented ODE runs from t = 1 down to t = 0 over `steps` uniform steps (an adaptive
    solver such as "dopri5" picks its own steps). `divergence="exact"` takes D backward passes;
    `"hutchinson"` averages eps^T J eps over `probes` probes per sample, drawn once from
    `generator` (Rademacher or Gaussian), an unbiased estimate of log p_1(x). `y` conditions the
    model (a conditional density log p(x | y), no guidance). `scale` states how data x was turned
    into model inputs before training, x_model = (x - mean) / std: a std, a (mean, std) pair, a
    mapping with keys "mean" and "std" or an object with those attributes (a run's DataInfo);
    then log p(x) = log p_model(x_model) - sum log std. The density p_0 is p_init = N(0, I), the
    law the sampler starts from (for a VP schedule it differs slightly from the path's marginal
    at t = 0). The values are detached from the autograd graph.
    """
    solver = check_solver(solver)
    x = _check_input(model, x)
    if divergence not in DIVERGENCES:
        raise InvalidInputError(f"unknown divergence {divergence!r}; choose one of {DIVERGENCES}")
    if probe_dist not in PROBE_DISTRIBUTIONS:
        raise InvalidInputError(f"unknown probe_dist {probe_dist!r}; choose one of {PROBE_DISTRIBUTIONS}")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise InvalidInputError(f"probes must be an integer >= 1, got {probes!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be an integer >= 1, got {steps!r}")

    reference = _model_tensor_like(model)
    if reference is not None:
        x = x.to(device=reference.device, dtype=reference.dtype)
    scaling = _as_scaling(scale, x)
    log_jacobian = x.new_zeros(())
    if scaling is not None:
        mean, std = scaling
        x = (x - mean) / std
        log_jacobian = -torch.log(std).sum()

    batch, shape, dims = x.shape[0], tuple(x.shape[1:]), x[0].numel()
    if divergence == "exact":
        # trace J = sum_i e_i^T J e_i over the standard basis: D vector-Jacobian products
        vectors = torch.eye(dims, dtype=x.dtype, device=x.device)[:, None, :].expand(dims, batch, dims)
        weight = 1.0
    else:
        vectors = _draw_probes(probes, x, probe_dist, generator)
        weight = 1.0 / probes

    field = as_velocity(model, path, getattr(model, "prediction", "velocity"))
    cond = {} if y is None else {"y": y}
    equation = ODE(_AugmentedDrift(field, shape, vectors, weight, cond))

    state = torch.cat([x.reshape(batch, dims), x.new_zeros(batch, 1)], dim=1)
    # from the data end to the noise end (or to t_min, where a converted score or noise field starts)
    ts = grids.uniform(1.0, getattr(field, "t_min", 0.0), steps, device=x.device, dtype=x.dtype)
    final = simulate(equation, state, ts, solver=solver).final
    x0, integral_1_to_0 = final[:, :-1], final[:, -1]  # integral_1^0 div dt = -integral_0^1 div dt
    log_p0 = -0.5 * (x0.pow(2).sum(dim=1) + dims * math.log(2 * math.pi))
    return (log_p0 + integral_1_to_0 + log_jacobian).detach()


def bits_per_dim(
    log_prob_nats: torch.Tensor, dims: int, levels: int = 256, data_range: float = 2.0
) -> torch.Tensor:
    """Bits per dimension -(log p(x) + D log(data_range / levels)) / (D ln 2) of dequantized images.

    Convention (uniform dequantization): a pixel k in {0, ..., levels - 1} is read as
    (k + u) / levels with u ~ U[0, 1), then mapped affinely onto the model's range of width
    `data_range` (2 for [-1, 1], 1 for [0, 1]). One quantization bin then has width
    data_range / levels, and log P(k) >= E_u log p(x) + D log(data_range / levels), so the
    value returned (averaged over u) bounds the discrete model's bits per dimension from above.
    """
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise InvalidInputError(f"dims must be a positive integer, got {dims!r}")
    if not (levels >= 2 and data_range > 0):
        raise InvalidInputError(f"need levels >= 2 and data_range > 0, got {levels}, {data_range}")
    log_prob_nats = torch.as_tensor(log_prob_nats)
    bin_log_volume = dims * math.log(data_range / levels)
    return -(log_prob_nats + bin_log_volume) / (dims * math.log(2.0))
