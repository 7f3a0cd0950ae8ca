"""Continuous-time Markov chains on sequences of tokens, simulated by the Euler (per-token jump) method.

A state is an integer tensor x of shape (batch, L) over the states 0..S-1 of one token. The chain
jumps token by token: token i leaves its value x_i for a at rate u_t(a | x) >= 0 (a != x_i), given
by a rate function `rates(x, t, **cond)` of shape (batch, L, S). One Euler step of length h keeps
each token with probability exp(-h lambda_i), lambda_i = sum_{a != x_i} u_t(a | x), and otherwise
moves it to a drawn with probability u_t(a | x) / lambda_i. The sampler knows nothing of models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flowdiff.dynamics.simulate import Trajectory, check_grid
from flowdiff.errors import IncompatibleError, InvalidInputError

CATEGORICAL_DTYPES = {"float64": torch.float64, "float32": torch.float32}
"""Precisions of the uniform draws and logarithms of categorical sampling. float64 is the default: in
float32 the Gumbel noise -log(-log u) is capped near 16.6 (u has 24 bits), so that outcomes whose
log-probability lies far below the largest one are drawn too rarely (the sample entropy drops;
measured in docs/discrete.md)."""


def uniform(shape, generator: torch.Generator | None, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """U(0, 1) draws of `shape` made on the generator's device (so a seed gives the same numbers anywhere), then
    moved to `device`; dtype None is torch's default."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source, dtype=dtype).to(device)


def categorical(probs: torch.Tensor, generator: torch.Generator | None = None,
                dtype: str | torch.dtype = "float64") -> torch.Tensor:
    """Draw an index from each row of unnormalised probabilities (..., S) by the Gumbel-max trick.

    argmax_a (log p_a + G_a) with G_a = -log(-log U_a), U_a ~ U(0, 1), computed in `dtype`
    ("float64" by default, "float32" as an option with the bias described in CATEGORICAL_DTYPES).
    """
    dtype = _dtype(dtype)
    if not _finite_and_nonnegative(probs):
        raise InvalidInputError("categorical probabilities must be finite and >= 0")
    return _gumbel_argmax(probs, generator, dtype)


def _finite_and_nonnegative(values: torch.Tensor) -> bool:
    """True when every entry is finite and >= 0 (one host synchronisation)."""
    return bool((torch.isfinite(values) & (values >= 0)).all())


def _gumbel_argmax(probs: torch.Tensor, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    """`categorical` without the check of its probabilities (for callers that checked them already)."""
    u = uniform(probs.shape, generator, probs.device, dtype)
    tiny = torch.finfo(dtype).tiny
    exponential = (-torch.log(u.clamp_min(tiny))).clamp_min(tiny)  # -log U ~ Exp(1)
    gumbel = -torch.log(exponential)
    return (probs.to(dtype).log() + gumbel).argmax(dim=-1)


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in CATEGORICAL_DTYPES.values():
        return dtype
    if dtype not in CATEGORICAL_DTYPES:
        raise InvalidInputError(f"categorical dtype must be one of {', '.join(CATEGORICAL_DTYPES)}, got {dtype!r}")
    return CATEGORICAL_DTYPES[dtype]


def check_tokens(x: torch.Tensor, num_states: int, name: str = "x") -> None:
    """Raise unless x is an integer tensor (batch, L) with values in 0..num_states-1."""
    if not isinstance(x, torch.Tensor):
        raise IncompatibleError(f"{name} must be a torch.Tensor of tokens, got {type(x).__name__}")
    if x.ndim != 2 or torch.is_floating_point(x) or x.dtype == torch.bool:
        raise InvalidInputError(f"{name} must be an integer tensor of shape (batch, L), got {x.dtype} "
                                f"of shape {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_states):
        raise InvalidInputError(f"{name} has values from {int(x.min())} to {int(x.max())}; tokens must lie in "
                                f"0..{num_states - 1}")


def euler_jump(x: torch.Tensor, rate: torch.Tensor, h: float | torch.Tensor, generator: torch.Generator | None,
               dtype: str | torch.dtype = "float64") -> torch.Tensor:
    """One Euler step of a per-token CTMC: each token jumps w.p. 1 - exp(-h lambda), to a w.p. u(a)/lambda."""
    dtype = _dtype(dtype)
    if rate.shape[:2] != x.shape:
        raise InvalidInputError(f"rates must have shape (batch, L, S) = {(*x.shape, 'S')}, got {tuple(rate.shape)}")
    off = rate.to(dtype).scatter(-1, x.long().unsqueeze(-1), 0.0)  # the diagonal (staying) entry is not a rate
    if not _finite_and_nonnegative(off):
        raise InvalidInputError("CTMC rates u_t(a | x) for a != x must be finite and >= 0")
    total = off.sum(-1)
    h = torch.as_tensor(h, dtype=dtype, device=x.device)
    h = h.reshape(-1, 1) if h.ndim == 1 else h
    jumps = uniform(x.shape, generator, x.device, dtype) < -torch.expm1(-h * total)
    if not bool(jumps.any()):
        return x
    target = _gumbel_argmax(torch.where(total.unsqueeze(-1) > 0, off, 1.0), generator, dtype)
    return torch.where(jumps, target.to(x.dtype), x)


def ctmc_euler(
    rates: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    ts: torch.Tensor,
    generator: torch.Generator | None = None,
    save: str = "final",
    categorical_dtype: str = "float64",
    callback: Callable[[dict], None] | None = None,
    **cond,
) -> Trajectory:
    """Simulate the CTMC with rates u_t(a | x) = rates(x, t, **cond) from x0 over the grid ts (Euler jumps).

    Each step from t_k to t_{k+1} calls `rates` once at (x_{t_k}, t_k) and applies `euler_jump`.
    Returns a `Trajectory` of integer states (len(ts) or 1, batch, L); `callback` gets
    {"step", "t", "x", "nfe"} after each step.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or torch.is_floating_point(x0):
        raise InvalidInputError("x0 must be an integer tensor of tokens of shape (batch, L)")
    if save not in ("final", "all"):
        raise InvalidInputError(f"save must be 'final' or 'all', got {save!r}")
    _dtype(categorical_dtype)
    ts = check_grid(ts).to(device=x0.device, dtype=torch.float64)
    if not bool(ts[1] > ts[0]):
        raise InvalidInputError("a CTMC is simulated forwards in time: ts must increase")
    x, states = x0, [x0]
    for k in range(len(ts) - 1):
        t = ts[k].to(torch.get_default_dtype())
        x = euler_jump(x, rates(x, t, **cond), ts[k + 1] - ts[k], generator, categorical_dtype)
        if save == "all":
            states.append(x)
        if callback is not None:
            callback({"step": k + 1, "t": float(ts[k + 1]), "x": x, "nfe": k + 1})
    times = ts if save == "all" else ts[-1:]
    return Trajectory(times=times, states=torch.stack(states if save == "all" else [x]), nfe=len(ts) - 1)
