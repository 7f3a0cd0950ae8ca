"""Time grids: 1-d tensors of times at which a simulation evaluates its equation."""

from __future__ import annotations

import torch

from flowdiff.errors import InvalidInputError


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be a positive integer, got {steps!r}")


def uniform(
    t0: float = 0.0, t1: float = 1.0, steps: int = 100, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Equally spaced times t0 = t_0 < ... < t_steps = t1 (steps + 1 points)."""
    _check_steps(steps)
    return torch.linspace(t0, t1, steps + 1, device=device, dtype=dtype)


def shifted(
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 100,
    shift: float = 3.0,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Uniform times s mapped by t = s / (s + shift (1 - s)): shift > 1 puts more steps near t=0.

    The flow-model time shift (as in rectified-flow samplers) spends steps at the noise end,
    where the marginal velocity changes fastest; shift = 1 gives the uniform grid.
    """
    if not shift > 0:
        raise InvalidInputError(f"shift must be > 0, got {shift}")
    def unwarp(t: float) -> float:  # the inverse map s = shift t / (1 - t + shift t)
        return shift * t / (1.0 - t + shift * t)

    s = uniform(unwarp(t0), unwarp(t1), steps, device=device, dtype=torch.float64)
    t = s / (s + shift * (1.0 - s))
    t[0], t[-1] = t0, t1
    return t.to(dtype)


def rho(
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 100,
    rho: float = 7.0,
    min_remaining: float = 1e-3,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """EDM/Karras-style grid: remaining time 1 - t spaced uniformly in its 1/rho power.

    (1 - t_i)^(1/rho) is linear in i, so steps crowd towards t = 1 (the data end), as the
    Karras et al. (2022) noise-level grid does for diffusion models. As there, the spacing
    stops at a smallest remaining time `min_remaining` (their sigma_min) and one last step
    goes to t1: otherwise the final steps would shrink like (1/steps)^rho, below float32
    resolution near 1.
    """
    if not rho > 0:
        raise InvalidInputError(f"rho must be > 0, got {rho}")
    if not 0 < min_remaining < 1:
        raise InvalidInputError(f"min_remaining must be in (0, 1), got {min_remaining}")
    _check_steps(steps)
    start, end = 1.0 - t0, 1.0 - t1
    if start <= min_remaining:  # the whole interval lies within min_remaining of t = 1
        return uniform(t0, t1, steps, device=device, dtype=dtype)
    near_end = end < min_remaining < start
    spaced = steps - 1 if near_end and steps > 1 else steps
    end_spaced = max(end, min_remaining) if spaced < steps else end
    i = torch.linspace(0.0, 1.0, spaced + 1, dtype=torch.float64)
    a, b = start ** (1.0 / rho), end_spaced ** (1.0 / rho)
    t = 1.0 - (a + i * (b - a)) ** rho
    if spaced < steps:
        t = torch.cat([t, torch.tensor([t1], dtype=torch.float64)])
    t[0], t[-1] = t0, t1
    return t.to(device=device, dtype=dtype)



GRIDS = {"uniform": uniform, "shifted": shifted, "rho": rho}
"""Time grids by name, each called as grid(t0, t1, steps, dtype=...): "rho" is the EDM/Karras grid, "shifted"
the SD3-style time shift. A grid learned for a trained run (`flowdiff.learning.sampling.learned_grid`) is
a tensor of times, not a name."""
