"""The parts of the Dormand–Prince integrator that its accuracy tests cannot see.

Accuracy against torchdiffeq and closed forms (test_solvers_adaptive.py) holds for many step-size sequences;
these tests pin the sequence itself: Hairer's starting step, the weighted RMS norms, the PI controller's inputs
and outputs, the step budget, the grid handling and what the drift and the callback receive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from flowdiff.dynamics.adaptive import Controller, _initial_step, _Norm, dormand_prince
from flowdiff.errors import InvalidInputError

F64 = torch.float64


def rms_scaled(v: torch.Tensor, x0: torch.Tensor, rtol: float, atol: float) -> float:
    """sqrt(mean((v / (atol + rtol |x0|))^2)) — the batch norm written out."""
    return math.sqrt(float(((v / (atol + rtol * x0.abs())) ** 2).mean()))


def hairer_start(drift, x0, t0, rtol, atol, direction, span):
    """Hairer, Norsett & Wanner (Solving ODEs I, II.4) starting step, written independently of the solver."""
    f0 = drift(x0, torch.tensor(t0, dtype=F64))
    d0, d1 = rms_scaled(x0, x0, rtol, atol), rms_scaled(f0, x0, rtol, atol)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = drift(x0 + direction * h0 * f0, torch.tensor(t0 + direction * h0, dtype=F64))
    d2 = rms_scaled(f1 - f0, x0, rtol, atol) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    return min(100 * h0, h1, span)


def affine(a: float, c: float):
    """dx/dt = a x + c t: a drift whose second derivative involves both the state and the time."""
    return lambda x, t: a * x + c * t


# (drift, x0, t0, direction, span, rtol, atol): each row makes another term of the formula the smallest
STARTS = {
    "curvature decides (h1)": (affine(-3.0, 2.0), torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64), 0.3, 1.0, 1.0,
                               1e-3, 1e-6),
    "backwards, time-dependent": (affine(-3.0, 5.0), torch.tensor([[1.0, -2.0]], dtype=F64), 0.9, -1.0, 0.9, 1e-4,
                                  1e-7),
    "100 h0 decides": (lambda x, t: torch.full_like(x, 1e6), torch.tensor([[1.0, 1.0]], dtype=F64), 0.0, 1.0, 1.0,
                       1e-3, 1e-6),
    "slow growth": (affine(1e-4, 0.0), torch.tensor([[1.0, 2.0]], dtype=F64), 0.0, 1.0, 1e9, 1e-3, 1e-6),
    "the span decides": (affine(-0.5, 0.0), torch.tensor([[1.0, 2.0]], dtype=F64), 0.0, 1.0, 1e-3, 1e-3, 1e-6),
    "small state (h0 = 1e-6)": (affine(-2.0, 1.0), torch.tensor([[1e-9, 2e-9]], dtype=F64), 0.0, 1.0, 1.0, 1e-3,
                                1e-3),
    "state below atol, not tiny": (affine(-2.0, 0.0), torch.tensor([[1e-4, -3e-4]], dtype=F64), 0.0, 1.0, 1.0, 1e-3,
                                   1e-3),
    "no drift at all": (affine(0.0, 0.0), torch.tensor([[1.0, 2.0]], dtype=F64), 0.0, 1.0, 1.0, 1e-3, 1e-6),
    "drift constant in x, slow": (lambda x, t: torch.full_like(x, 1e-3), torch.tensor([[1.0, 2.0]], dtype=F64), 0.0,
                                  1.0, 10.0, 1e-3, 1e-6),
}


@pytest.mark.parametrize("case", list(STARTS))
def test_the_starting_step_is_hairers(case):
    drift, x0, t0, direction, span, rtol, atol = STARTS[case]
    f0 = drift(x0, torch.tensor(t0, dtype=F64))
    h, calls = _initial_step(drift, x0, t0, f0, _Norm(rtol, atol, False, x0.shape[0]), direction, span)
    assert calls == 1
    assert h == pytest.approx(hairer_start(drift, x0, t0, rtol, atol, direction, span), rel=1e-12)


def test_the_starting_rows_reach_each_branch():
    """The table above is only a test if its rows really end in different terms of the minimum."""
    rows = {}
    for name, (drift, x0, t0, direction, span, rtol, atol) in STARTS.items():
        rows[name] = hairer_start(drift, x0, t0, rtol, atol, direction, span)
    assert rows["the span decides"] == 1e-3
    assert rows["small state (h0 = 1e-6)"] == pytest.approx(1e-4)  # 100 h0 with h0 = 1e-6
    assert rows["no drift at all"] == pytest.approx(1e-6)  # min(100 h0, max(1e-6, 1e-3 h0)) with h0 = 1e-6
    assert rows["100 h0 decides"] == pytest.approx(1e-6, rel=1e-3)  # 100 * 0.01 |x0| / |f0| = 1 / 1e6


def test_the_norms_are_weighted_rms_over_the_batch_or_the_worst_sample():
    error = torch.tensor([[1.0, 2.0, 0.0], [4.0, 0.0, 0.0]], dtype=F64)
    y0 = torch.tensor([[1.0, -1.0, 0.0], [2.0, 0.0, 0.0]], dtype=F64)
    y1 = torch.tensor([[3.0, 0.0, 0.0], [-1.0, 0.0, 5.0]], dtype=F64)
    rtol, atol = 0.5, 0.25
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    ratios = (error / scale) ** 2
    batch = float(_Norm(rtol, atol, False, 2)(error, y0, y1))
    worst = float(_Norm(rtol, atol, True, 2)(error, y0, y1))
    assert batch == pytest.approx(math.sqrt(float(ratios.mean())), rel=1e-14)
    assert worst == pytest.approx(math.sqrt(float(ratios.mean(1).max())), rel=1e-14)
    assert worst > batch


def test_a_rejected_step_never_grows_the_next_one():
    control = Controller()
    assert control.factor(0.5, 1.0, accepted=False) == 1.0  # a step refused for another reason keeps its size
    assert control.factor(0.5, 1.0, accepted=True) == pytest.approx(0.9 * 0.5**-0.2)
    assert control.factor(0.5, 0.01, accepted=True) == pytest.approx(0.9 * 0.5**-0.2 * 0.01**0.04)


@dataclass(frozen=True)
class RecordingController(Controller):
    """The default controller that also records every call it gets."""

    calls: list = field(default_factory=list, compare=False)

    def factor(self, error, previous, accepted):
        value = super().factor(error, previous, accepted)
        self.calls.append((error, previous, accepted, value))
        return value


def stiff(x, t):
    """Prothero–Robinson x' = -50 (x - cos t) - sin t: its fast transient makes the controller refuse steps."""
    return -50.0 * (x - torch.cos(t)) - torch.sin(t)


def test_the_controller_sees_each_error_and_the_last_accepted_one():
    x0 = torch.tensor([[2.0], [0.0], [-1.0]], dtype=F64)
    ts = torch.tensor([0.0, 2.0], dtype=F64)
    control, times = RecordingController(), []
    result = dormand_prince(stiff, x0, ts, False, 1e-6, 1e-6, controller=control,
                            callback=lambda info: times.append(float(info["t"])))
    assert result.rejected >= 1 and len(control.calls) == result.accepted + result.rejected
    previous = 1.0  # an I controller until the first accepted step
    for error, seen, accepted, _ in control.calls:
        assert seen == previous and accepted == (error <= 1.0)
        if accepted:
            previous = max(error, 1e-4)
    # each accepted step's size is the previous trial's size times the factor the controller returned (the
    # last step is cut to land on the end of the grid)
    accepted_calls = [i for i, call in enumerate(control.calls) if call[2]]
    sizes = [b - a for a, b in zip([0.0, *times], times)]
    for k, i in enumerate(accepted_calls[:-2]):
        nxt = accepted_calls[k + 1]
        trial = sizes[k]
        for j in range(i, nxt):
            trial *= control.calls[j][3]
        assert sizes[k + 1] == pytest.approx(trial, rel=1e-9)


def test_without_save_all_only_the_last_time_is_a_stop():
    x0 = torch.tensor([[1.0, -1.0]], dtype=F64)
    grid = torch.linspace(0.0, 1.0, 6, dtype=F64)
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    sparse = dormand_prince(stiff, x0, grid, False, 1e-5, 1e-7)
    direct = dormand_prince(stiff, x0, ends, False, 1e-5, 1e-7)
    assert len(sparse.states) == 1 and torch.equal(sparse.states[0], direct.states[0])
    assert (sparse.nfe, sparse.accepted) == (direct.nfe, direct.accepted)
    dense = dormand_prince(stiff, x0, grid, True, 1e-5, 1e-7)
    assert len(dense.states) == 6 and torch.equal(dense.states[0], x0)


def test_grid_times_are_hit_exactly_and_every_call_gets_the_states_dtype():
    x0 = torch.tensor([[1.0, -1.0]], dtype=F64)
    grid = torch.tensor([0.0, 0.1, 0.3, 0.7, 0.9, 1.0], dtype=F64)
    dtypes, seen = set(), []

    def drift(x, t):
        dtypes.add((x.dtype, t.dtype))
        return stiff(x, t)

    result = dormand_prince(drift, x0, grid, True, 1e-6, 1e-8, callback=seen.append)
    assert dtypes == {(F64, F64)}
    assert set(seen[0]) == {"step", "t", "x", "nfe", "accepted", "rejected"}
    assert [info["step"] for info in seen] == list(range(1, result.accepted + 1))
    assert all(info["t"].dtype == F64 for info in seen)
    hit = {float(info["t"]) for info in seen}
    assert {float(t) for t in grid[1:]} <= hit  # each grid time is reached exactly, not within rounding
    assert torch.equal(seen[-1]["x"], result.states[-1])


def test_the_step_budget_counts_accepted_and_rejected_steps():
    x0 = torch.tensor([[2.0], [0.0], [-1.0]], dtype=F64)
    ts = torch.tensor([0.0, 0.9, 1.8], dtype=F64)  # saved at the end only: 0.9 is not a stop (nor named below)
    full = dormand_prince(stiff, x0, ts, False, 1e-6, 1e-6)
    assert full.rejected >= 1
    exact = full.accepted + full.rejected
    assert torch.equal(dormand_prince(stiff, x0, ts, False, 1e-6, 1e-6, max_steps=exact).states[0], full.states[0])
    with pytest.raises(InvalidInputError, match=rf"took {exact - 1} steps and reached only t = .* of 1\.8: the"):
        dormand_prince(stiff, x0, ts, False, 1e-6, 1e-6, max_steps=exact - 1)


def test_an_unknown_norm_is_refused():
    with pytest.raises(InvalidInputError, match="unknown error norm 'mean'; choose one of: batch, sample"):
        dormand_prince(stiff, torch.ones(2, 1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), False, 1e-3, 1e-3,
                       norm="mean")


def test_a_drift_of_the_wrong_shape_is_named():
    with pytest.raises(InvalidInputError, match="an adaptive solver needs the drift to return the state's shape"):
        dormand_prince(lambda x, t: x[:, :1], torch.ones(2, 3, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                       False, 1e-3, 1e-3)
