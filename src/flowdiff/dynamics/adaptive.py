"""Adaptive Dormand–Prince 5(4) with a PI step-size controller, written for batched tensors.

One step of the Dormand–Prince pair (Dormand & Prince 1980) takes the 5th-order solution
y1 = y0 + h sum_j b_j k_j and estimates its local error from the embedded 4th-order one,
err = h sum_j (b_j - b*_j) k_j, with k_7 = u(y1, t + h) reused as the next step's k_1 (FSAL:
six new drift calls per step). The error is measured in the weighted RMS norm
||err / (atol + rtol max(|y0|, |y1|))|| — over the whole batch (norm="batch", as torchdiffeq)
or per sample, the worst sample deciding (norm="sample") — and a step is accepted when it is <= 1.
The next step size follows a PI controller (Gustafsson; Hairer & Wanner, Solving ODEs I, IV.2):
h' = h * safety * err^(-alpha) * err_prev^beta, kept in [0.2, 10] h, with alpha = 1/5 (the exponent
of the error estimate, O(h^5)) and Hairer's beta = 0.04 (Hairer's DOPRI5 lowers alpha to 0.17, which
took 10-35% more steps on the MLP fields of benchmarks/sampling_speed.py for 2-4x less error).

Each linear combination of stages is one `addmv` over the stacked stages, so a step costs the
drift calls plus about fifteen small tensor operations; the only host synchronisation is reading
the error norm once per step (accepting a step is a decision the host has to make). States are
saved at the grid times by stepping onto them (no interpolation error); the initial step size
follows Hairer's heuristic (one extra drift call).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowdiff.errors import InvalidInputError

NODES = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
STAGES = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),  # = the 5th-order weights b
)
"""The Dormand–Prince tableau: nodes c_i and rows a_ij of the seven stages."""
FOURTH_ORDER = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
"""The weights b* of the embedded 4th-order solution."""
ERROR_WEIGHTS = tuple(b - b4 for b, b4 in zip((*STAGES[-1], 0.0), FOURTH_ORDER))
"""b - b*: the local error estimate err = h sum_j (b_j - b*_j) k_j."""

NORMS = ("batch", "sample")


@dataclass(frozen=True)
class Controller:
    """The PI step-size controller h' = h safety err^-alpha err_prev^beta, the factor kept in [lowest, highest]."""

    alpha: float = 0.2
    beta: float = 0.04
    safety: float = 0.9
    lowest: float = 0.2
    highest: float = 10.0

    def factor(self, error: float, previous: float, accepted: bool) -> float:
        """The factor by which to scale h after a step with error norm `error` (previous accepted: `previous`)."""
        if not math.isfinite(error):
            return self.lowest
        if error == 0.0:
            return self.highest
        factor = self.safety * error ** (-self.alpha) * previous**self.beta
        factor = min(self.highest, max(self.lowest, factor))
        return factor if accepted else min(factor, 1.0)


class _Norm:
    """The weighted RMS norm of an error estimate, over the batch or per sample (the largest)."""

    def __init__(self, rtol: float, atol: float, per_sample: bool, batch: int) -> None:
        self.rtol, self.atol, self.per_sample, self.batch = rtol, atol, per_sample, batch

    def __call__(self, error: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor) -> torch.Tensor:
        scale = torch.maximum(y0.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        squares = (error / scale).square_()
        if self.per_sample:
            return squares.view(self.batch, -1).mean(1).max().sqrt()
        return squares.mean().sqrt()


def _initial_step(drift, x0, t0: float, f0, norm: _Norm, direction: float, span: float) -> tuple[float, int]:
    """Hairer's starting step: h0 = 0.01 |x0| / |f0|, refined by one drift call to (0.01 / |f''|)^(1/5)."""
    d0, d1 = float(norm(x0, x0, x0)), float(norm(f0, x0, x0))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    x1 = x0 + (direction * h0) * f0
    f1 = drift(x1, torch.tensor(t0 + direction * h0, dtype=x0.dtype, device=x0.device))
    d2 = float(norm(f1 - f0, x0, x0)) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, span), 1


def _trial_step(drift, x, k1, t: float, hs: float, rows, error_weights, measure: _Norm):
    """One Dormand–Prince step of size hs from (t, x): the 5th-order solution, its k7 and the error norm."""
    stage_times = torch.tensor([t + c * hs for c in NODES[1:]], dtype=x.dtype, device=x.device).unbind(0)
    flat = x.reshape(-1)
    ks = [k1.reshape(-1)]
    for row, when in zip(rows[1:], stage_times):
        xi = torch.addmv(flat, torch.stack(ks, 1), row, alpha=hs).view_as(x)
        ks.append(drift(xi, when).reshape(-1))
    # the argument of stage 7 is the 5th-order solution; k7 = u(y, t + h) is the next step's k1 (FSAL)
    with torch.no_grad():
        estimate = torch.mv(torch.stack(ks, 1), error_weights).view_as(x)
        error = abs(hs) * float(measure(estimate, x, xi))
    return xi, ks[-1].view_as(x), error


@dataclass
class AdaptiveResult:
    """The saved states, the number of drift calls, and the accepted and rejected steps."""

    states: list
    nfe: int
    accepted: int
    rejected: int


def dormand_prince(
    drift: Callable,
    x0: torch.Tensor,
    ts: torch.Tensor,
    save_all: bool,
    rtol: float,
    atol: float,
    norm: str = "batch",
    max_steps: int = 100_000,
    controller: Controller = Controller(),
    callback: Callable[[dict], None] | None = None,
) -> AdaptiveResult:
    """Integrate dx/dt = drift(x, t) from x0 along ts with adaptive Dormand–Prince 5(4) steps.

    Saves x at every time of ts (save_all) or at the last; `callback` gets {"step", "t", "x", "nfe",
    "accepted", "rejected"} after every accepted step.
    """
    if norm not in NORMS:
        raise InvalidInputError(f"unknown error norm {norm!r}; choose one of: {', '.join(NORMS)}")
    dtype, device = x0.dtype, x0.device
    times = [float(t) for t in ts.tolist()]
    targets = times[1:] if save_all else times[-1:]
    direction = 1.0 if times[-1] > times[0] else -1.0
    rows = [torch.tensor(row, dtype=dtype, device=device) for row in STAGES]
    error_weights = torch.tensor(ERROR_WEIGHTS, dtype=dtype, device=device)
    measure = _Norm(rtol, atol, norm == "sample", x0.shape[0])
    t, x = times[0], x0
    k1 = drift(x, torch.tensor(t, dtype=dtype, device=device))
    if k1.shape != x0.shape:
        raise InvalidInputError(f"the drift returned shape {tuple(k1.shape)} for a state of shape {tuple(x0.shape)}; "
                                "an adaptive solver needs the drift to return the state's shape")
    with torch.no_grad():
        h, nfe = _initial_step(drift, x0, t, k1.detach(), measure, direction, abs(times[-1] - t))
    nfe += 1
    if not math.isfinite(h):
        raise InvalidInputError(f"the drift returned NaN or inf near t = {t:.6g}: dopri5 cannot choose a step size")
    states = [x0] if save_all else []
    accepted = rejected = 0
    previous = 1.0  # no history before the first step: the PI controller starts as an I controller
    for target in targets:
        while direction * (target - t) > 0:
            if accepted + rejected >= max_steps:
                raise InvalidInputError(
                    f"dopri5 took {max_steps} steps and reached only t = {t:.6g} of {times[-1]:.6g}: the equation is "
                    "too stiff or the tolerances too tight; loosen rtol/atol or raise max_steps")
            remaining = abs(target - t)
            step = remaining if h >= remaining * (1 - 1e-9) else h
            hs = direction * step
            y, k7, error = _trial_step(drift, x, k1, t, hs, rows, error_weights, measure)
            nfe += 6
            ok = error <= 1.0
            factor = controller.factor(error, previous, ok)
            if ok:
                accepted += 1
                previous = max(error, 1e-4)
                t = target if step == remaining else t + hs
                x, k1 = y, k7
                if callback is not None:
                    callback({"step": accepted, "t": torch.tensor(t, dtype=dtype, device=device), "x": x,
                              "nfe": nfe, "accepted": accepted, "rejected": rejected})
            else:
                rejected += 1
            h = step * factor
            if not h >= 1e-14 * max(1.0, abs(t)):  # also NaN
                raise InvalidInputError(
                    f"dopri5's step size fell to {h:.3g} at t = {t:.6g}: the drift is not smooth or returns NaN there")
        if save_all:
            states.append(x)
    if not save_all:
        states.append(x)
    return AdaptiveResult(states, nfe, accepted, rejected)
