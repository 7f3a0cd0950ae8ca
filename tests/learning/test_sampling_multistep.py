"""Multistep solvers for flows (DPM-Solver++(2M), UniPC): measured orders against the exact Gaussian flow,
NFE = steps, fd.sample integration and refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowdiff as fd
from flowdiff.errors import IncompatibleError, InvalidInputError
from flowdiff.learning.sampling.multistep import (
    MULTISTEP_SOLVERS,
    DPMSolverPP2M,
    UniPC,
    find_multistep,
    step_coefficients,
)
from flowdiff.paths.schedules import Schedule, ScheduleValues

MEAN = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
VARIANCE = torch.tensor([[0.3**2, 0.6**2]], dtype=torch.float64)
XI = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def gaussian(schedule):
    path = fd.GaussianPath(schedule)
    return path, fd.MarginalField(path, fd.GaussianMixture(MEAN, VARIANCE), "velocity")


def exact_flow(path, t0: float, t1: float):
    """For data N(m, diag(s^2)) the flow is affine: x_t = alpha_t m + sqrt(c_t) xi, c_t = alpha_t^2 s^2 + beta_t^2."""
    def at(t):
        s = path.schedule(torch.tensor(t, dtype=torch.float64))
        return s.alpha * MEAN + (s.alpha**2 * VARIANCE + s.beta**2).sqrt() * XI

    return at(t0), at(t1)


def errors(solver, schedule, t0, t1, steps):
    path, field = gaussian(schedule)
    start, end = exact_flow(path, t0, t1)
    out = []
    for n in steps:
        traj = solver.sample(field, path, start, torch.linspace(t0, t1, n + 1, dtype=torch.float64))
        assert traj.nfe == n
        out.append(float((traj.final - end).abs().max()))
    return out


def slope(steps, errs) -> float:
    return float(np.polyfit(np.log(1 / np.asarray(steps)), np.log(errs), 1)[0])


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("solver, theory", [(DPMSolverPP2M(), 2), (UniPC(), 3)])
def test_measured_order_where_log_snr_steps_are_small(schedule, solver, theory):
    # On [0.2, 0.8] lambda = log(alpha / sigma) is finite and smooth: the exponential-integrator theory holds.
    # Measured: dpmpp_2m 2.14 (linear), 2.05 (cosine); unipc 2.94, 2.89.
    steps = [16, 32, 64, 128, 256]
    order = slope(steps, errors(solver, schedule, 0.2, 0.8, steps))
    assert abs(order - theory) < 0.3, f"{solver.name} on {schedule}: order {order:.2f}, theory {theory}"


def test_on_the_whole_interval_they_beat_euler_at_the_same_nfe_and_converge():
    # From alpha = 0 to sigma = 0 the end steps are long in lambda (the order there is lower: measured
    # slopes 1.5-1.8 over 16-256 steps). Measured at NFE 16: dpmpp_2m 3.4e-2, unipc 3.8e-2, euler 0.14
    # (heun in 8 steps: 1.4e-2 -- on this smooth Gaussian flow Heun is better at NFE 16; see docs/sampling.md).
    path, field = gaussian("linear")
    start, end = exact_flow(path, 0.0, 1.0)
    ts = torch.linspace(0.0, 1.0, 17, dtype=torch.float64)
    ours = [float((s.sample(field, path, start, ts).final - end).abs().max()) for s in (DPMSolverPP2M(), UniPC())]
    euler = float((fd.simulate(fd.ODE(field), start, ts, solver="euler").final - end).abs().max())
    assert max(ours) < euler / 3
    assert errors(UniPC(), "linear", 0.0, 1.0, [64])[0] < ours[1] / 5  # measured: 8.6x smaller at 4x the steps


def test_fd_sample_takes_them_by_name_with_nfe_equal_to_steps():
    path, field = gaussian("cosine")
    x0 = XI.float()
    seen = []
    traj = fd.sample(field, path, x0=x0, steps=6, solver="unipc", return_trajectory=True, callback=seen.append)
    assert traj.nfe == 6 and [info["nfe"] for info in seen] == [2, 3, 4, 5, 6, 6]
    assert traj.states.shape == (7, 64, 2) and torch.equal(traj.states[0], x0)
    by_object = fd.sample(field, path, x0=x0, steps=6, solver=UniPC())
    torch.testing.assert_close(by_object, traj.final)
    assert isinstance(find_multistep("dpmpp_2m"), DPMSolverPP2M) and find_multistep("heun") is None
    assert set(MULTISTEP_SOLVERS) == {"dpmpp_2m", "unipc"}


def test_refusals():
    path, field = gaussian("linear")
    with pytest.raises(IncompatibleError, match="ODE"):
        fd.sample(field, path, n=4, steps=4, solver="dpmpp_2m", sigma=1.0)
    with pytest.raises(InvalidInputError, match="sigma_t = 0"):  # a grid that steps on from the data end
        DPMSolverPP2M().sample(field, path, XI, torch.tensor([0.0, 1.0, 1.0 + 1e-9], dtype=torch.float64))


# The multistep samplers written out independently: the step coefficients from the log-SNR of the linear
# path and the phi-integrals by quadrature, DPM-Solver++(2M) in the paper's form (Lu et al. 2022), the
# UniPC-style predictor-corrector as polynomials in lambda integrated by Gauss-Legendre quadrature, the
# far-step extrapolation in rho^2, and the sampler's trajectory, callback and refusals.

TOY_MEAN = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
TOY_VARIANCE = torch.tensor([[0.5**2, 0.2**2]], dtype=torch.float64)
X0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
NODES, WEIGHTS = np.polynomial.legendre.leggauss(30)


def linear_path():
    path = fd.GaussianPath("linear")
    return path, fd.MarginalField(path, fd.GaussianMixture(TOY_MEAN, TOY_VARIANCE), "velocity")


def data_prediction(x, t: float):
    """E[z | x_t = x] for z ~ N(m, diag(s^2)) and x_t = t z + (1 - t) eps: m + t s^2 (x - t m) / (t^2 s^2 + (1-t)^2)."""
    return TOY_MEAN + t * TOY_VARIANCE * (x - t * TOY_MEAN) / (t * t * TOY_VARIANCE + (1 - t) ** 2)


def lam(t: float) -> float:
    return math.log(t / (1 - t))


def integral(f, a: float, b: float) -> float:
    """int_a^b f by 30-point Gauss-Legendre (exact to rounding for e^u times a low-degree polynomial)."""
    u = (b - a) / 2 * NODES + (a + b) / 2
    return float((b - a) / 2 * np.sum(WEIGHTS * f(u)))


def lagrange(points, j):
    return lambda u: np.prod([(u - q) / (points[j] - q) for i, q in enumerate(points) if i != j], axis=0)


def exponential_step(x, s: float, t: float, points, values):
    """x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lam_s}^{lam_t} e^u P(u) du, P through (points, values)."""
    weights = [(1 - t) * integral(lambda u, j=j: np.exp(u) * lagrange(points, j)(u), lam(s), lam(t))
               for j in range(len(points))]
    return (1 - t) / (1 - s) * x + sum(w * d for w, d in zip(weights, values))


def reference_unipc(ts):
    x, d, d_prev = X0, data_prediction(X0, ts[0]), None
    for k in range(1, len(ts)):
        s, t = ts[k - 1], ts[k]
        if d_prev is None:
            x_next = exponential_step(x, s, t, [lam(s)], [d])
        else:
            x_next = exponential_step(x, s, t, [lam(ts[k - 2]), lam(s)], [d_prev, d])
        if k < len(ts) - 1:
            d_next = data_prediction(x_next, t)
            if d_prev is None:
                x_next = exponential_step(x, s, t, [lam(s), lam(t)], [d, d_next])
            else:
                x_next = exponential_step(x, s, t, [lam(ts[k - 2]), lam(s), lam(t)], [d_prev, d, d_next])
            d_prev, d = d, d_next
        x = x_next
    return x


def reference_dpmpp_2m(ts):
    """Lu et al. 2022, DPM-Solver++(2M): D = (1 + 1/(2r)) D_s - 1/(2r) D_prev, r = h_prev / h."""
    x, d, d_prev = X0, data_prediction(X0, ts[0]), None
    for k in range(1, len(ts)):
        s, t = ts[k - 1], ts[k]
        h = lam(t) - lam(s)
        if d_prev is None:
            blend = d
        else:
            r = (lam(s) - lam(ts[k - 2])) / h
            blend = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
        x_next = (1 - t) / (1 - s) * x - t * math.expm1(-h) * blend
        if k < len(ts) - 1:
            d_prev, d = d, data_prediction(x_next, t)
        x = x_next
    return x


GRIDS = [
    [0.2, 0.35, 0.5, 0.65, 0.8],
    [0.5, 1 / (1 + math.exp(-1)), 0.85, 0.93],  # lambda steps of exactly 1.0 (as floats), then 0.73, 0.85
]


@pytest.mark.parametrize("ts", GRIDS)
@pytest.mark.parametrize("solver, reference", [(DPMSolverPP2M(), reference_dpmpp_2m), (UniPC(), reference_unipc)])
def test_solvers_match_their_formulas_written_out_independently(ts, solver, reference):
    path, field = linear_path()
    traj = solver.sample(field, path, X0, torch.tensor(ts, dtype=torch.float64))
    torch.testing.assert_close(traj.final, reference(ts), rtol=0, atol=1e-12)
    assert traj.nfe == len(ts) - 1


def test_step_coefficients_are_the_log_snr_steps_and_phi_integrals_of_the_schedule():
    ts = [0.0, 0.2, 0.5, 0.8, 1.0]
    coefficients = step_coefficients(fd.GaussianPath("linear"), torch.tensor(ts, dtype=torch.float32))
    assert len(coefficients) == 4
    inf, lams = math.inf, [-math.inf, lam(0.2), lam(0.5), lam(0.8), math.inf]
    assert [c.h for c in coefficients][::3] == [inf, inf] and math.isnan(coefficients[0].h_prev)
    assert coefficients[1].h_prev == inf and coefficients[3].h_prev == pytest.approx(lams[3] - lams[2], rel=1e-6)
    rho2 = [inf] + [((1 - t) / t) ** 2 for t in ts[1:]]
    for i, c in enumerate(coefficients):
        s, t = ts[i], ts[i + 1]
        assert c.alpha_t == pytest.approx(t, rel=1e-6) and c.ratio == pytest.approx((1 - t) / (1 - s), rel=1e-6)
        assert (c.rho2_t, c.rho2_s) == (pytest.approx(rho2[i + 1], rel=1e-5), pytest.approx(rho2[i], rel=1e-5))
        assert math.isnan(c.rho2_prev) if i == 0 else c.rho2_prev == pytest.approx(rho2[i - 1], rel=1e-5)
        if math.isfinite(c.h):
            assert c.h == pytest.approx(lams[i + 1] - lams[i], rel=1e-6)
            phi = [integral(lambda u, k=k, h=c.h: np.exp(-(h - u)) * u**k / math.factorial(k), 0.0, c.h)
                   for k in range(3)]
            assert [c.i0, c.i1, c.i2] == pytest.approx([c.alpha_t * p for p in phi], rel=1e-12)
        else:  # an infinite step in lambda: I_0 = alpha_t (1 - e^-inf)
            assert c.i0 == pytest.approx(t, rel=1e-6) and c.far


def test_coefficients_come_from_the_schedule_in_float64_whatever_the_grid_dtype():
    path = fd.GaussianPath("cosine")
    single = step_coefficients(path, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float32))
    double = step_coefficients(path, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert single == double


def far_grid():
    """lambda = 0, 0.1, 0.6: the second step is longer than FAR = 4 times the first, though finite and < 1."""
    return [0.5, 1 / (1 + math.exp(-0.1)), 1 / (1 + math.exp(-0.6))]


@pytest.mark.parametrize("ts", [far_grid(), [0.3, 0.6, 1.0]])
def test_far_steps_extrapolate_the_data_prediction_linearly_in_rho_squared(ts):
    path = fd.GaussianPath("linear")
    c = step_coefficients(path, torch.tensor(ts, dtype=torch.float64))[1]
    assert c.far
    d_prev, d, x = (torch.tensor(v, dtype=torch.float64) for v in ([[1.0, -2.0]], [[1.5, 0.5]], [[0.3, 0.2]]))
    rho2 = [((1 - t) / t) ** 2 for t in ts]  # Lagrange through (rho2_prev, D_prev), (rho2_s, D_s) at rho2_t
    extrapolated = (d_prev * (rho2[2] - rho2[1]) / (rho2[0] - rho2[1])
                    + d * (rho2[2] - rho2[0]) / (rho2[1] - rho2[0]))
    expected = (1 - ts[2]) / (1 - ts[1]) * x + c.i0 * extrapolated
    for solver in (DPMSolverPP2M(), UniPC()):
        torch.testing.assert_close(solver.predict(x, d, d_prev, c), expected, rtol=1e-12, atol=1e-12)
        assert solver.correct(x, d, d_prev, d, c) is None  # no polynomial in lambda across a far step
    first = DPMSolverPP2M().predict(x, d, None, c)  # no history: D_s as it is
    torch.testing.assert_close(first, (1 - ts[2]) / (1 - ts[1]) * x + c.i0 * d, rtol=1e-12, atol=1e-12)


def test_the_trajectory_callback_and_saved_states():
    path, field = linear_path()
    ts = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=torch.float64)
    seen = []
    everything = UniPC().sample(field, path, X0, ts, save="all", callback=seen.append)
    final = UniPC().sample(field, path, X0, ts)
    assert torch.equal(everything.times, ts) and everything.states.shape == (4, 8, 2)
    assert torch.equal(everything.states[0], X0) and torch.equal(everything.final, final.final)
    assert torch.equal(final.times, ts[-1:]) and final.states.shape == (1, 8, 2)
    assert [sorted(info) for info in seen] == [["nfe", "step", "t", "x"]] * 3
    assert [(info["step"], float(info["t"]), info["nfe"]) for info in seen] == [(1, 0.4, 2), (2, 0.6, 3), (3, 0.8, 3)]
    assert all(torch.equal(info["x"], everything.states[k + 1]) for k, info in enumerate(seen))


def test_sample_refuses_an_unknown_save_and_names_solvers():
    path, field = linear_path()
    with pytest.raises(InvalidInputError, match=r"^save must be 'final' or 'all', got 'every'$"):
        DPMSolverPP2M().sample(field, path, X0, torch.tensor([0.2, 0.5]), save="every")
    with pytest.raises(InvalidInputError, match=r"sigma_t = 0 \(the data end\); end the grid there instead$"):
        UniPC().sample(field, path, X0, torch.tensor([0.5, 1.0, 1.5]))
    assert repr(UniPC()) == "UniPC()" and repr(DPMSolverPP2M()) == "DPMSolverPP2M()"
    assert find_multistep(["unipc"]) is None and find_multistep(None) is None


class Frozen(Schedule):
    """A schedule that returns one value for all times: alpha = 0.6, sigma = 0.8 (no motion)."""

    def __call__(self, t):
        zero = torch.tensor(0.0, dtype=torch.float64)
        return ScheduleValues(alpha=zero + 0.6, beta=zero + 0.8, d_alpha=zero, d_beta=zero)


def test_a_schedule_with_one_value_for_all_times_is_broadcast_to_steps_that_stand_still():
    coefficients = step_coefficients(fd.GaussianPath(Frozen()), torch.tensor([0.1, 0.4, 0.7, 0.9]))
    assert [(c.ratio, c.h, c.i0, c.alpha_t) for c in coefficients] == [(1.0, 0.0, 0.0, 0.6)] * 3
    assert [c.h_prev for c in coefficients][1:] == [0.0, 0.0] and coefficients[2].rho2_prev == pytest.approx(16 / 9)
