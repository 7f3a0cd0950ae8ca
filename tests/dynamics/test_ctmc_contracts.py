"""Contracts of the CTMC sampler that its law tests leave open: the Gumbel-max formula of `categorical` on
its documented random stream, per-row step lengths, the trajectory's times and states, the callback,
the dtypes handed to the rate function and returned, and the one-line refusals (check_tokens included)."""

import re

import pytest
import torch

from flowdiff.dynamics.ctmc import categorical, check_tokens, ctmc_euler, euler_jump
from flowdiff.errors import IncompatibleError, InvalidInputError


def cyclic_rates(x, t, speed=1.0):
    """Three states; a token leaves for either other state at rate speed * (1 + t) (own entry ignored)."""
    return torch.full((*x.shape, 3), float(speed), dtype=torch.float64) * (1 + t)


@pytest.mark.parametrize("dtype, torch_dtype", [("float64", torch.float64), ("float32", torch.float32)])
def test_categorical_is_the_gumbel_max_of_its_uniform_draws(dtype, torch_dtype):
    # argmax_a log p_a - log(-log U_a), with U drawn from the generator in `dtype` (the documented formula)
    probs = torch.tensor([[0.2, 0.5, 0.3], [1.0, 0.0, 3.0]], dtype=torch.float64).repeat(200, 1)
    u = torch.rand(probs.shape, generator=torch.Generator().manual_seed(7), dtype=torch_dtype).double()
    expected = (probs.log() - torch.log(-torch.log(u))).argmax(-1)
    drawn = categorical(probs, torch.Generator().manual_seed(7), dtype)
    assert torch.equal(drawn, expected)


def test_categorical_defaults_to_float64_and_draws_without_a_generator():
    probs = torch.tensor([[0.2, 0.5, 0.3]]).repeat(100, 1)
    u = torch.rand(probs.shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    expected = (probs.double().log() - torch.log(-torch.log(u))).argmax(-1)
    assert torch.equal(categorical(probs, torch.Generator().manual_seed(8)), expected)
    draws = categorical(probs)  # the global generator
    assert draws.shape == (100,) and set(draws.unique().tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("probs", [torch.tensor([-0.5, 1.0]), torch.tensor([float("nan"), 1.0]),
                                   torch.tensor([float("inf"), 1.0])])
def test_categorical_refuses_negative_or_non_finite_probabilities(probs):
    with pytest.raises(InvalidInputError, match=r"^categorical probabilities must be finite and >= 0$"):
        categorical(probs)


def test_categorical_refuses_a_torch_dtype_it_does_not_offer():
    assert categorical(torch.tensor([[0.0, 1.0]]), dtype=torch.float32).item() == 1
    with pytest.raises(InvalidInputError, match=r"must be one of float64, float32, got torch.float16"):
        categorical(torch.tensor([[0.5, 0.5]]), dtype=torch.float16)


def test_per_row_step_lengths_apply_to_their_own_row():
    # h = 0 never jumps; h = 100 at total rate 2 jumps with probability 1 - e^-200 (always, in float64)
    x = torch.zeros(3, 2, dtype=torch.long)
    moved = euler_jump(x, torch.ones(3, 2, 3), torch.tensor([0.0, 100.0, 0.0]), torch.Generator().manual_seed(0))
    assert torch.equal(moved[0], x[0]) and torch.equal(moved[2], x[2]) and bool((moved[1] != 0).all())


def test_euler_jump_keeps_the_integer_dtype_and_jumps_without_a_generator():
    x = torch.zeros(4, 3, dtype=torch.int32)
    moved = euler_jump(x, torch.ones(4, 3, 3), 100.0, None)
    assert moved.dtype == torch.int32 and bool((moved != 0).all())


def test_euler_jump_names_the_rate_shape_and_the_bad_rates():
    x = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(InvalidInputError, match=re.escape("rates must have shape (batch, L, S) = (4, 2, 'S'), "
                                                          "got (4, 3, 3)")):
        euler_jump(x, torch.ones(4, 3, 3), 0.1, None)
    with pytest.raises(InvalidInputError, match=r"^CTMC rates u_t\(a \| x\) for a != x must be finite and >= 0$"):
        euler_jump(x, -torch.ones(4, 2, 3), 0.1, None)


@pytest.mark.parametrize("categorical_dtype", ["float64", "float32"])
def test_ctmc_euler_is_euler_jump_at_each_left_time_with_the_conditioning(categorical_dtype):
    # "Each step from t_k to t_{k+1} calls rates once at (x_{t_k}, t_k) and applies euler_jump."
    ts = torch.tensor([0.0, 0.1, 0.35, 0.5, 0.9], dtype=torch.float64)
    x0 = torch.randint(0, 3, (64, 5), generator=torch.Generator().manual_seed(1))
    traj = ctmc_euler(cyclic_rates, x0, ts, torch.Generator().manual_seed(2), save="all",
                      categorical_dtype=categorical_dtype, speed=2.5)
    generator, x, states = torch.Generator().manual_seed(2), x0, [x0]
    for k in range(len(ts) - 1):
        x = euler_jump(x, cyclic_rates(x, ts[k], speed=2.5), ts[k + 1] - ts[k], generator, categorical_dtype)
        states.append(x)
    assert torch.equal(traj.states, torch.stack(states)) and traj.nfe == 4
    assert torch.equal(traj.times, ts)


def test_save_final_keeps_only_the_last_state_and_time():
    ts = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    x0 = torch.zeros(16, 3, dtype=torch.long)
    everything = ctmc_euler(cyclic_rates, x0, ts, torch.Generator().manual_seed(3), save="all")
    final = ctmc_euler(cyclic_rates, x0, ts, torch.Generator().manual_seed(3))
    assert final.states.shape == (1, 16, 3) and torch.equal(final.final, everything.final)
    assert torch.equal(final.times, ts[-1:]) and everything.states.shape == (4, 16, 3)
    assert torch.equal(everything.states[0], x0)


def test_callback_reports_step_time_state_and_nfe():
    ts = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    seen = []
    traj = ctmc_euler(cyclic_rates, torch.zeros(8, 2, dtype=torch.long), ts, torch.Generator().manual_seed(4),
                      save="all", callback=seen.append)
    assert [sorted(info) for info in seen] == [["nfe", "step", "t", "x"]] * 3
    assert [(info["step"], info["t"], info["nfe"]) for info in seen] == [(1, 0.25, 1), (2, 0.5, 2), (3, 1.0, 3)]
    assert all(torch.equal(info["x"], traj.states[k + 1]) for k, info in enumerate(seen))


def test_the_rate_function_gets_times_in_the_default_dtype_and_states_keep_their_dtype():
    seen = []

    def rates(x, t):
        seen.append(t.dtype)
        return torch.ones(*x.shape, 3)

    traj = ctmc_euler(rates, torch.zeros(4, 2, dtype=torch.int32), torch.linspace(0, 1, 3, dtype=torch.float64))
    assert seen == [torch.get_default_dtype()] * 2 and traj.final.dtype == torch.int32


@pytest.mark.parametrize("x0", [torch.zeros(4, dtype=torch.long), [[0, 1]], torch.zeros(2, 2)])
def test_ctmc_euler_refuses_what_is_not_a_batch_of_token_sequences(x0):
    message = "^" + re.escape("x0 must be an integer tensor of tokens of shape (batch, L)") + "$"
    with pytest.raises(InvalidInputError, match=message):
        ctmc_euler(cyclic_rates, x0, torch.linspace(0, 1, 3))


def test_ctmc_euler_refusal_messages():
    x0 = torch.zeros(2, 2, dtype=torch.long)
    with pytest.raises(InvalidInputError, match=r"^save must be 'final' or 'all', got 'every'$"):
        ctmc_euler(cyclic_rates, x0, torch.linspace(0, 1, 3), save="every")
    with pytest.raises(InvalidInputError, match=r"^a CTMC is simulated forwards in time: ts must increase$"):
        ctmc_euler(cyclic_rates, x0, torch.linspace(1, 0, 3))


def test_check_tokens_accepts_tokens_and_refuses_the_rest_in_one_line():
    check_tokens(torch.tensor([[0, 2], [1, 1]]), 3)
    check_tokens(torch.zeros(0, 4, dtype=torch.long), 3)
    with pytest.raises(IncompatibleError, match=r"^seq must be a torch.Tensor of tokens, got list$"):
        check_tokens([[0, 1]], 3, name="seq")
    for bad in (torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), torch.zeros(4, dtype=torch.long)):
        with pytest.raises(InvalidInputError, match=r"^x must be an integer tensor of shape \(batch, L\), got "):
            check_tokens(bad, 3)
    with pytest.raises(InvalidInputError, match=re.escape("x has values from 0 to 3; tokens must lie in 0..2")):
        check_tokens(torch.tensor([[0, 3]]), 3)
    with pytest.raises(InvalidInputError, match=re.escape("x has values from -1 to 1; tokens must lie in 0..2")):
        check_tokens(torch.tensor([[-1, 1]]), 3)
    with pytest.raises(InvalidInputError, match="got torch.float32 of shape \\(2, 2\\)"):
        check_tokens(torch.zeros(2, 2), 3)
