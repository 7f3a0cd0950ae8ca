"""Bad input to `simulate` and the equations raises a clear error (a ValueError/TypeError subclass
whose message says what was wrong and what is right), never a silent fallback."""

from __future__ import annotations

import contextlib

import pytest
import torch

import flowdiff as fd
from flowdiff.errors import FlowdiffError, IncompatibleError, InvalidInputError

X0 = torch.zeros(4, 2)
TS = fd.grids.uniform(0.0, 1.0, 5)
ODE = fd.ODE(lambda x, t: -x)
SDE = fd.SDE(lambda x, t: -x, 0.5)


@contextlib.contextmanager
def raises(error_type, *words):
    """The block raises `error_type` with a one-line message containing every one of `words`."""
    with pytest.raises(error_type) as info:
        yield info
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert "\n" not in message


def test_error_classes_are_value_and_type_errors():
    assert issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, FlowdiffError)
    assert issubclass(IncompatibleError, TypeError) and issubclass(IncompatibleError, FlowdiffError)


@pytest.mark.parametrize(
    "ts, words",
    [
        (torch.tensor([0.0, 0.5, 0.3, 1.0]), ("strictly increasing or strictly decreasing",)),
        (torch.tensor([0.0, 0.5, 0.5, 1.0]), ("strictly",)),
        (torch.zeros(2, 3), ("1-d",)),
        (torch.tensor([0.0]), (">= 2 times",)),
        (torch.tensor(1.0), ("1-d",)),
        (torch.tensor([0.0, float("nan"), 1.0]), ("NaN",)),
    ],
)
def test_bad_time_grids(ts, words):
    with raises(InvalidInputError, *words):
        fd.simulate(ODE, X0, ts)


@pytest.mark.parametrize(
    "x0, error, word",
    [
        (torch.tensor([[0.0, float("nan")]]), InvalidInputError, "NaN"),
        (torch.tensor([[float("inf"), 0.0]]), InvalidInputError, "inf"),
        (torch.zeros(3, 2, dtype=torch.long), InvalidInputError, "floating"),
        (torch.tensor(0.0), InvalidInputError, "(batch, *shape)"),
        ([[0.0, 1.0]], IncompatibleError, "torch.Tensor"),
    ],
)
def test_bad_initial_states(x0, error, word):
    with raises(error, word):
        fd.simulate(ODE, x0, TS)


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: fd.SDE(lambda x, t: -x, -0.5), ">= 0"),
        (lambda: fd.BrownianMotion(sigma=-1.0), "sigma"),
        (lambda: fd.OrnsteinUhlenbeck(theta=-1.0, sigma=1.0), "theta"),
        (lambda: fd.OrnsteinUhlenbeck(theta=1.0, sigma=-2.0), "sigma"),
        (lambda: fd.Langevin(fd.Gaussian([0.0, 0.0]), sigma=-1.0), "sigma"),
    ],
)
def test_negative_sigma_or_theta(make, word):
    with raises(InvalidInputError, word, ">= 0"):
        make()


def test_unknown_solver_name_lists_the_registered_names():
    with raises(InvalidInputError, "unknown solver 'rk5'", "euler", "heun", "rk4", "euler_maruyama"):
        fd.simulate(ODE, X0, TS, solver="rk5")
    with raises(InvalidInputError, "unknown solver"):
        fd.simulate(ODE, X0, TS, solver=4)


def test_ode_and_sde_solver_mismatch_is_an_error_not_a_fallback():
    ode_names = "euler, midpoint, heun, rk4, dopri5"
    with raises(IncompatibleError, "'euler_maruyama' integrates an SDE", ode_names):
        fd.simulate(ODE, X0, TS, solver="euler_maruyama")
    with raises(IncompatibleError, "'heun' integrates an ODE", "euler_maruyama, stochastic_heun"):
        fd.simulate(SDE, X0, TS, solver="heun")
    with raises(IncompatibleError, "'dopri5'"):
        fd.simulate(SDE, X0, TS, solver="dopri5")


def test_mismatch_message_for_a_process_lists_the_sde_solvers():
    with raises(IncompatibleError, "euler_maruyama, stochastic_heun"):
        fd.simulate(fd.OrnsteinUhlenbeck(1.0, 1.0), X0, TS, solver="rk4")


def test_bad_noise_shape():
    with raises(InvalidInputError, "noise must have shape (5, 4, 2)", "(4, 4, 2)"):
        fd.simulate(SDE, X0, TS, solver="euler_maruyama", noise=torch.zeros(4, 4, 2))


def test_other_bad_arguments():
    with raises(InvalidInputError, "forwards"):
        fd.simulate(SDE, X0, TS.flip(0), solver="euler_maruyama")
    with raises(InvalidInputError, "'final' or 'all'"):
        fd.simulate(ODE, X0, TS, save="every")
    with raises(IncompatibleError, "ODE or SDE"):
        fd.simulate(lambda x, t: -x, X0, TS)
    with raises(IncompatibleError, "callable"):
        fd.ODE(drift=3.0)
    with raises(IncompatibleError, "callable"):
        fd.SDE(drift=None, diffusion=1.0)


def test_drift_that_changes_the_state_shape():
    with raises(InvalidInputError, "shape"):
        fd.simulate(fd.ODE(lambda x, t: torch.zeros(3, *x.shape)), X0, TS)


def test_drift_of_a_wrong_shape():
    with raises(InvalidInputError, "shape"):
        fd.simulate(fd.ODE(lambda x, t: torch.zeros(x.shape[0], 3)), X0, TS)


def test_diffusion_of_a_wrong_shape():
    with raises(InvalidInputError, "shape"):
        fd.simulate(fd.SDE(lambda x, t: -x, lambda x, t: torch.ones(3)), X0, TS, solver="euler_maruyama")


def test_broadcastable_drift_is_allowed():
    # A drift may return anything broadcastable to x (documented in equations.Field), e.g. a per-row rate.
    traj = fd.simulate(fd.ODE(lambda x, t: -x[:, :1]), torch.ones(4, 2), TS)
    assert traj.final.shape == (4, 2)
