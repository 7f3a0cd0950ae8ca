"""Multistep exponential integrators for flows: DPM-Solver++(2M)-style and UniPC-style, NFE = steps.

For a Gaussian path x_t = alpha_t z + sigma_t eps (sigma_t is the path's beta_t) the probability-flow
ODE, written for the data prediction D(x, t) = E[z | x_t = x] (the velocity turned into it by the
path's exact conversion) and the log-SNR lambda_t = log(alpha_t / sigma_t), is solved exactly by

    x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda D(lambda) dlambda

(Lu et al. 2022, DPM-Solver++). Replacing D by a polynomial in lambda through past evaluations
and integrating exactly gives, with h = lambda_t - lambda_s and the phi-integrals
I_k = alpha_t int_0^h e^{-(h-u)} u^k / k! du (I_0 = alpha_t (1 - e^{-h}), I_1 = alpha_t (h - 1 + e^{-h}),
I_2 = alpha_t (h^2/2 - h + 1 - e^{-h})):

- "dpmpp_2m": x_t = (sigma_t/sigma_s) x_s + I_0 [D_s + h / (2 h_prev) (D_s - D_prev)] (order 2);
- "unipc": the predictor x_t = (sigma_t/sigma_s) x_s + I_0 D_s + I_1 (D_s - D_prev) / h_prev, then,
  after D_t is evaluated at the prediction (the evaluation the next step needs anyway), a corrector
  through (D_prev, D_s, D_t) integrated exactly (Zhao et al. 2023's UniC idea, with exact integrals
  in place of their B(h)): order 3 where the steps in lambda are small.

Both reuse the previous evaluation, so NFE = number of steps. The first step (no history) is
first order (DDIM). A step to sigma_t = 0 (the data end, lambda = inf) has no finite h: there
x_t = alpha_t D, with D extrapolated linearly in rho^2 = (sigma / alpha)^2 from the last two
evaluations (and so for any step much longer in lambda than the one before: see FAR). Near alpha = 0
(lambda -> -inf) steps of a uniform t-grid are O(1) in lambda, which limits the order there to 2.
All coefficients are Python floats computed from the schedule before the loop: no host sync inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flowdiff.dynamics.equations import ODE
from flowdiff.dynamics.simulate import Trajectory
from flowdiff.dynamics.solvers import Solver, get_solver
from flowdiff.errors import InvalidInputError
from flowdiff.paths.gaussian_path import GaussianPath

FAR = 4.0
"""A step with h > FAR h_prev extrapolates D linearly in rho^2 = e^{-2 lambda}, not in lambda: near the data end
(sigma_t -> 0, e.g. cosine's sigma_1 = 6e-17) lambda grows without bound and a polynomial in lambda would be evaluated
far outside the range of its points (DPM-Solver++ takes a first-order last step there instead)."""


@dataclass(frozen=True)
class StepCoefficients:
    """The floats of one step s -> t: sigma_t / sigma_s, the phi-integrals, h and the previous h (NaN if none)."""

    ratio: float
    i0: float
    i1: float
    i2: float
    h: float
    h_prev: float
    rho2_t: float
    rho2_s: float
    rho2_prev: float
    alpha_t: float

    @property
    def far(self) -> bool:
        """A step longer in lambda than FAR times the one before (or infinite): too far to extrapolate in lambda."""
        return not math.isfinite(self.h) or (math.isfinite(self.h_prev) and self.h > FAR * self.h_prev)


def _log_snr(alpha: float, sigma: float) -> float:
    """lambda = log(alpha / sigma), -inf where alpha = 0 and +inf where sigma = 0."""
    if alpha <= 0.0:
        return -math.inf
    if sigma <= 0.0:
        return math.inf
    return math.log(alpha) - math.log(sigma)


def _rho2(alpha: float, sigma: float) -> float:
    """rho^2 = (sigma / alpha)^2 = e^{-2 lambda}, the EDM noise level squared (inf where alpha = 0)."""
    return math.inf if alpha <= 0.0 else (sigma / alpha) ** 2


def step_coefficients(path: GaussianPath, ts: torch.Tensor) -> list[StepCoefficients]:
    """The coefficients of every step of the grid ts, from the path's schedule in float64 (on the host)."""
    times = ts.detach().to(device="cpu", dtype=torch.float64)
    values = path.schedule(times)
    alphas, sigmas = values.alpha.reshape(-1).tolist(), values.beta.reshape(-1).tolist()
    if len(alphas) == 1:  # a schedule returning one value for all times (constant): broadcast it
        alphas, sigmas = alphas * len(times), sigmas * len(times)
    lams = [_log_snr(a, s) for a, s in zip(alphas, sigmas)]
    times = times.tolist()
    out = []
    for i in range(len(times) - 1):
        a_s, s_s, a_t, s_t = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        if s_s <= 0.0:
            raise InvalidInputError(f"a multistep solver cannot step from t = {times[i]:.6g}, where sigma_t = 0 "
                                    "(the data end); end the grid there instead")
        ratio = s_t / s_s
        h = lams[i + 1] - lams[i]
        h_prev = lams[i] - lams[i - 1] if i >= 1 else math.nan
        if math.isfinite(h):
            em = math.expm1(-h)
            i0, i1, i2 = -a_t * em, a_t * (h + em), a_t * (0.5 * h * h - h - em)
        else:
            i0, i1, i2 = a_t - a_s * ratio, math.nan, math.nan
        out.append(StepCoefficients(ratio, i0, i1, i2, h, h_prev, _rho2(a_t, s_t), _rho2(a_s, s_s),
                                    _rho2(alphas[i - 1], sigmas[i - 1]) if i >= 1 else math.nan, a_t))
    return out


def _usable(*values: float) -> bool:
    return all(math.isfinite(v) and v != 0.0 for v in values)


class MultistepSolver:
    """A multistep exponential integrator for the data prediction of a Gaussian path (see the module)."""

    name = "multistep"
    order = 2
    corrector = False
    equation_type = ODE  # what it integrates, and its network evaluations a step, read like a `Solver`'s
    stages = 1

    def predict(self, x, d, d_prev, c: StepCoefficients) -> torch.Tensor:
        """x_t from x_s, D_s and D_prev (None at the first step)."""
        if c.far:  # towards the data end (or from alpha = 0): x_t = ratio x_s + I_0 D
            if d_prev is not None and math.isfinite(c.rho2_prev) and c.h > 0:  # D extrapolated linearly in rho^2
                d = d + (d - d_prev) * ((c.rho2_t - c.rho2_s) / (c.rho2_s - c.rho2_prev))
            return c.ratio * x + c.i0 * d
        if d_prev is None or not _usable(c.h_prev):
            return c.ratio * x + c.i0 * d
        return self.second_order(x, d, d_prev, c)

    def second_order(self, x, d, d_prev, c: StepCoefficients) -> torch.Tensor:  # pragma: no cover - interface
        """The step that uses the previous evaluation."""
        raise NotImplementedError

    def correct(self, x_s, d, d_prev, d_t, c: StepCoefficients) -> torch.Tensor | None:
        """The corrected x_t once D_t is known, or None (no corrector, or not possible here)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def sample(self, velocity: Callable, path: GaussianPath, x0: torch.Tensor, ts: torch.Tensor,
               save: str = "final", callback: Callable[[dict], None] | None = None) -> Trajectory:
        """Carry x0 along the increasing grid ts; one evaluation of `velocity` per step."""
        if save not in ("final", "all"):
            raise InvalidInputError(f"save must be 'final' or 'all', got {save!r}")
        steps = step_coefficients(path, ts)
        save_all = save == "all"
        times = ts.unbind(0)
        x, states = x0, [x0] if save_all else []
        d = path.convert(velocity(x, times[0]), x, times[0], "velocity", "x1")
        d_prev, nfe = None, 1
        for k, c in enumerate(steps, start=1):
            x_next = self.predict(x, d, d_prev, c)
            if k < len(steps):
                d_next = path.convert(velocity(x_next, times[k]), x_next, times[k], "velocity", "x1")
                nfe += 1
                corrected = self.correct(x, d, d_prev, d_next, c) if self.corrector else None
                x_next = x_next if corrected is None else corrected
                d_prev, d = d, d_next
            x = x_next
            if save_all:
                states.append(x)
            if callback is not None:
                callback({"step": k, "t": times[k], "x": x, "nfe": nfe})
        if not save_all:
            states.append(x)
        return Trajectory(times=ts if save_all else ts[-1:], states=torch.stack(states), nfe=nfe)


class DPMSolverPP2M(MultistepSolver):
    """DPM-Solver++(2M) for the data prediction: x_t = (s_t/s_s) x_s + I_0 [D_s + h/(2 h_prev) (D_s - D_prev)]."""

    name = "dpmpp_2m"
    order = 2

    def second_order(self, x, d, d_prev, c):
        return c.ratio * x + c.i0 * (d + (c.h / (2 * c.h_prev)) * (d - d_prev))


class UniPC(MultistepSolver):
    """UniPC-style predictor (exponential Adams–Bashforth 2) and corrector through the new evaluation: order 3."""

    name = "unipc"
    order = 3
    corrector = True

    def second_order(self, x, d, d_prev, c):
        return c.ratio * x + c.i0 * d + (c.i1 / c.h_prev) * (d - d_prev)

    def correct(self, x_s, d, d_prev, d_t, c):
        """D through (lambda_prev, D_prev), (lambda_s, D_s), (lambda_t, D_t) as D_s + c1 u + c2 u^2, integrated."""
        if c.far or not _usable(c.h, c.i1):
            return None
        slope_t = (d_t - d) / c.h
        if d_prev is None or not _usable(c.h_prev):  # linear through D_s and D_t (exponential trapezoid)
            return c.ratio * x_s + c.i0 * d + c.i1 * slope_t
        slope_prev = (d - d_prev) / c.h_prev
        c2 = (slope_t - slope_prev) / (c.h + c.h_prev)
        c1 = slope_t - c.h * c2
        return c.ratio * x_s + c.i0 * d + c.i1 * c1 + (2 * c.i2) * c2


MULTISTEP_SOLVERS: dict[str, Callable[[], MultistepSolver]] = {"dpmpp_2m": DPMSolverPP2M, "unipc": UniPC}
"""Multistep solvers by name: they need the path, so they live with the samplers, not in dynamics."""


def find_multistep(solver) -> MultistepSolver | None:
    """The multistep solver that `solver` (an object or a registered name) means, or None if it means another."""
    if isinstance(solver, MultistepSolver):
        return solver
    factory = MULTISTEP_SOLVERS.get(solver) if isinstance(solver, str) else None
    return factory() if factory is not None else None


def sampling_solver(solver: str | Solver | MultistepSolver) -> Solver | MultistepSolver:
    """What a sampler's `solver` names: a multistep solver, or a solver of `flowdiff.dynamics.solvers`."""
    return find_multistep(solver) or get_solver(solver)

